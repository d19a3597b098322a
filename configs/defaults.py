"""Trainer defaults shared by every config in this folder (values only; the mechanics of loading
configs and combining variants are in mmjax.config_files).

A config file starts from `trainer_config(task=...)`, sets its own data and model keys,
declares its variants (functions that edit the config in place, e.g. with `set_keys`), and ends
with `apply_variants`:

  from mmjax.config_files import apply_variants, load_sibling, set_keys
  defaults = load_sibling(__file__, "defaults")
  VARIANTS = {"tiny": _tiny, "paper": _paper}      # name -> function(config) editing it in place
  def get_config(variants=""):
    config = defaults.trainer_config(task="youtube8m", total_steps=1000)
    ...
    return apply_variants(config, variants, VARIANTS, __file__)

Variants combine with commas and apply left to right: `--config=configs/ytb8m.py:paper,netvlad`.
An unknown name fails with the list of valid ones.

Keys of every config (mmjax.train reads them; see docs/architecture.md):
  task                     registered task name (mmjax.tasks)
  seed                     parameter init, dropout and data order
  total_steps, batch_size, eval_batch_size (global, over all processes and devices)
  log_every_steps, eval_every_steps (0: only at the end), checkpoint_every_steps,
  keep_checkpoints         the latest N checkpoints kept
  best_metric, best_mode   '<split>/<metric>' (e.g. 'eval/gap') and 'max' or 'min': one more
                           checkpoint, the best so far by that metric, is kept next to the
                           latest N ('' : none); every evaluation step is then saved
  mesh                     ((axis, size), ...); -1 takes the remaining devices
  sharding_rules           ((regex on '/'-joined parameter path, PartitionSpec axes), ...)
  evals                    named eval splits: evals.<name>.data holds `config.data` keys
                           replaced for that split (empty: config.data as is); metrics are
                           logged as '<name>/<metric>'
  init_from                weights from other runs (mmjax.train.init_from): a tuple of
                           `init_from_entry(...)`
  optimizer                `optimizer_config(...)` below
  max_nonfinite_steps      consecutive train steps with a NaN/inf loss, gradient or updated
                           parameter that are skipped (state unchanged) before the run stops
                           with an error (0: stop at the first)
  checkpoint_background    'auto' | 'on' | 'off': checkpoints written from a host snapshot of
                           the state by idle-priority threads, so the steps after a save keep
                           their speed on CPU (mmjax.train.background_save); 'auto': on for a
                           state on CPU devices of at least 64 MiB per process
"""

from typing import Dict

import ml_collections

from mmjax.config_files import update_keys


def optimizer_config(**values) -> ml_collections.ConfigDict:
  """`config.optimizer` with every key mmjax.train.optimizer.build_optimizer reads; `values`
  override the defaults (unknown keys raise KeyError):

    name 'adam' ('adam' | 'adamw' | 'sgd'), learning_rate 1e-3, grad_clip_norm 0 (off),
    trainable '' (regex on parameter paths; '' = all parameters train),
    reduce_on_plateau False, plateau_metric 'eval/loss' ('<split>/<metric>', lower is better),
    plateau_patience 2, plateau_factor 0.1, plateau_threshold 1e-4 (relative improvement),
    gradient_transforms () and weight_transforms (): (name, kwargs) pairs of optax transforms
    placed before the optimizer and after it (see mmjax.tasks.protocol for the order),
    schedule 'constant' ('constant' | 'cosine' | 'linear'), warmup_steps 0 (linear warmup from
    0), decay_steps 0 (updates of the decay after the warmup; > 0 for 'cosine' / 'linear', 0
    for 'constant'), end_learning_rate_factor 0.0 (final rate = factor * learning_rate, in
    [0, 1]). The schedule counts the run's own updates from 0, so a run starting from trained
    weights (init_from) replays it from its start: learning-rate rewinding
    (mmjax.train.optimizer).
  """
  config = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, grad_clip_norm=0.0, trainable="",
      reduce_on_plateau=False, plateau_metric="eval/loss", plateau_patience=2,
      plateau_factor=0.1, plateau_threshold=1e-4, gradient_transforms=(),
      weight_transforms=(), schedule="constant", warmup_steps=0, decay_steps=0,
      end_learning_rate_factor=0.0))
  update_keys(config, values, "optimizer_config")
  return config


def loss_config(**values) -> ml_collections.ConfigDict:
  """`config.loss` of a multi-head classifier (mmjax.tasks.blended_heads): name
  'cross_entropy' (or 'focal'), focal_gamma 2.0, focal_alpha () (per class; () = none),
  head_weights {} (gblend.mode 'off'), gblend {mode 'off' | 'offline' | 'online', weights_file,
  train_split 'gblend_train', holdout_split 'gblend_holdout'}; `values` override them."""
  config = ml_collections.ConfigDict(dict(
      name="cross_entropy", focal_gamma=2.0, focal_alpha=(), head_weights={},
      gblend=dict(mode="off", weights_file="", train_split="gblend_train",
                  holdout_split="gblend_holdout")))
  update_keys(config, values, "loss_config")
  return config


def eval_splits(**splits: Dict) -> ml_collections.ConfigDict:
  """`config.evals`: split name -> {'data': {config.data key: value}}. No arguments: one split
  'eval' reading config.data as it is."""
  splits = splits or {"eval": {}}
  return ml_collections.ConfigDict(
      {name: {"data": dict(overrides or {})} for name, overrides in splits.items()})


def init_from_entry(source: str, *, step="latest", source_subtree: str = "",
                    target_subtree: str = "", frozen: bool = False) -> ml_collections.ConfigDict:
  """One `config.init_from` entry (mmjax.train.init_from):

  source          an mmjax workdir (its checkpoints/), a Hugging Face CLIP directory
                  (config.json + model.safetensors) or a variables .npz
                  (mmjax.train.init_from.write_variables)
  step            for a workdir: 'latest', 'best' or a step number
  source_subtree  '/'-joined path in the source's params ('' = all), e.g. 'rgb_tower'
  target_subtree  where it goes in this model's params ('' = the root)
  frozen          True: those parameters get no updates (bit-identical after training)
  """
  return ml_collections.ConfigDict(dict(source=source, step=str(step),
                                        source_subtree=source_subtree,
                                        target_subtree=target_subtree, frozen=bool(frozen)))


def trainer_config(**values) -> ml_collections.ConfigDict:
  """The keys every config has (module docstring), with `values` overriding the defaults."""
  config = ml_collections.ConfigDict(dict(
      task="", seed=0, total_steps=1000, batch_size=32, eval_batch_size=64,
      log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=250, keep_checkpoints=3,
      best_metric="", best_mode="max", mesh=(("data", -1), ("model", 1)), sharding_rules=(),
      init_from=(), max_nonfinite_steps=0, checkpoint_background="auto"))
  config.evals = eval_splits()
  config.optimizer = optimizer_config()
  update_keys(config, values, "trainer_config")
  return config


MER_CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")


def mer_fusion_config(config: ml_collections.ConfigDict, features: Dict[str, str],
                      structures) -> None:
  """Adds the data, model and loss keys of the MER fusion task (mmjax.tasks.mer_fusion) to
  `config`:

  data.mertools.features  {field: MERTools feature directory}, e.g. {'audio':
                          'hubert-large-L18-UTT'} (mmjax.data.mertools); train_labels,
                          test_labels, unlabelled_labels (label CSVs), features_root,
                          pooling 'meanvar' | 'mean', synthetic.{num_train, num_test,
                          num_unlabelled, seed} (the default data when train_labels is empty)
  model.structures        tuples of fields, one per fusion structure; embed, hidden, widths,
                          decision 'entropy' | 'attention', valence, dropout,
                          modality_dropout, keep_one, attention 'softmax' | 'none'
  loss.weighting          'awl' (seed 004 eq. 9) | 'sum' (L_e + valence_weight L_v);
                          main_head 'emotion' (the predictions k-fold and self-training read)
  """
  fields = tuple(sorted(features))
  config.data = ml_collections.ConfigDict(dict(
      directory="", train_split="train", eval_split="test", class_names=MER_CLASSES,
      num_classes=len(MER_CLASSES), modalities=fields, fields=fields + ("valence", "labelled"),
      missing_modalities=(), train_subset="all", eval_subset="all", holdout_fraction=0.0,
      holdout_seed=0, num_threads=1, prefetch_batches=2, eval_max_examples=0))
  config.data.mertools = ml_collections.ConfigDict(dict(
      features=dict(features), features_root="", train_labels="", test_labels="",
      unlabelled_labels="", pooling="meanvar", max_frames=0, cache_dir="", source="synthetic",
      labelled="all",
      synthetic=dict(num_train=480, num_test=240, num_unlabelled=480, seed=0, directory="")))
  config.model = ml_collections.ConfigDict(dict(
      structures=tuple(tuple(s) for s in structures), embed=64, hidden=128, widths={},
      decision="entropy", valence=True, dropout=0.2, modality_dropout=0.0, keep_one=True,
      attention="softmax"))
  config.loss = ml_collections.ConfigDict(dict(weighting="awl", valence_weight=1.0,
                                               main_head="emotion"))


DIGIT_FEATURES = {"mfcc": "mfcc-FRA", "delta": "mfcc-delta-FRA", "delta2": "mfcc-delta2-FRA",
                  "pixels": "pixels-UTT"}


def mer_tiny(config: ml_collections.ConfigDict) -> None:
  """The MER fusion configs' `tiny` variant: a few steps of 8-wide layers on 48 synthetic
  training samples (seconds on a laptop CPU)."""
  config.total_steps, config.batch_size, config.eval_batch_size = 6, 16, 64
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.model.embed, config.model.hidden = 8, 8
  synthetic = config.data.mertools.synthetic
  synthetic.num_train, synthetic.num_test, synthetic.num_unlabelled = 48, 24, 24


def mer_digits(config: ml_collections.ConfigDict, structures) -> None:
  """Switches a MER fusion config to AV-digits as MERTools features
  (mmjax.data.avdigits_mertools): the DIGIT_FEATURES fields `structures` read, classes
  '0'..'9'."""
  fields = tuple(sorted({f for s in structures for f in s}))
  config.data.mertools.features = {f: DIGIT_FEATURES[f] for f in fields}
  config.data.mertools.source = "avdigits"
  config.data.class_names = tuple(str(d) for d in range(10))
  config.data.num_classes = 10
  config.data.modalities = fields
  config.data.fields = fields + ("valence", "labelled")
  with config.data.unlocked():
    config.data.avdigits = ml_collections.ConfigDict(dict(seed=0, imbalance=0.0, cache_dir=""))
  config.model.structures = tuple(tuple(s) for s in structures)
