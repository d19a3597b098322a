"""Memotion 3 meme classification (seed 000, mmjax/projects/memotion3/README.md): one CLIP
classifier (CLIP-text, CLIP-image or CLIP-multi) for one target (Task A, or one Task C label).

The default trains CLIP-multi (the tiny CLIP, random weights) on Task A over the embedded
synthetic memes, written once in the Memotion 3 release's format; its loss follows Table 3
(gradient blending over the text, image and multi-modal heads, weights re-estimated at every
evaluation from a held-out 20 % of the training memes).

Variants (combine with commas, e.g. ':text,humour,tiny'):
  text          CLIP-text (Fig. 1a)
  image         CLIP-image (Fig. 1b)
  multi         CLIP-multi (Fig. 2; the default)
  oscar         OSCAR over OCR text, object tags and region features (the fourth family)
  task_a        Task A: overall sentiment as negative / neutral / positive (the default)
  humour        Task C, humour intensity (4 classes)
  sarcasm       Task C, sarcasm intensity (4 classes)
  offensive     Task C, offensiveness intensity (4 classes)
  motivational  Task C, motivational or not (2 classes)
  no_gb         CLIP-multi trained on its fused head only (Table 4's 'without GB')
  hateful       stage (b): hateful / not hateful on a binary list (data.format='binary',
                written by launch/memotion3.py from Hateful Memes and MAMI), cross-entropy
  tiny          seconds on a laptop CPU (tests)
  paper         ViT-B/32 at 224 px, d_e = 512, BiLSTM cells 512, batch 64
Losses (Table 3): Task A cross-entropy, Task C focal loss (gamma 2) for CLIP-text and
CLIP-image (and OSCAR, which Table 3 leaves out); gradient blending for CLIP-multi. Each
model/target variant re-applies the table, so the order of variants does not matter;
--config.loss.* overrides it.

Real data: --config.data.train_file=/data/memotion3/memotion3/train.csv
  --config.data.eval_file=/data/memotion3/memotion3/val.csv (images under
  /data/memotion3/image/<split>/<id>.jpg; --config.data.images=DIR for another root).
Weights: --config.init_from with defaults.init_from_entry(...) entries, e.g. a Hugging Face
CLIP directory's 'text_model' into 'text_model' (CLIP-text), or the unimodal runs' workdirs
into 'text' and 'image' (CLIP-multi).

Usage:
  python launch/train.py --config=configs/memotion3.py --workdir=/tmp/memotion3/multi_a
  python launch/train.py --config=configs/memotion3.py:text,humour --workdir=/tmp/m3/text_h
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys
from mmjax.projects.memotion3 import memotion_table, task
from mmjax.projects.memotion3.models import PARTITION_RULES

defaults = load_sibling(__file__, "defaults")

TASK_C = memotion_table.TASK_C_LABELS


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  config = defaults.trainer_config(
      task="memotion3", total_steps=600, batch_size=32, eval_batch_size=64,
      log_every_steps=50, eval_every_steps=200, checkpoint_every_steps=200, keep_checkpoints=2,
      best_metric="eval/weighted_f1", best_mode="max", sharding_rules=PARTITION_RULES,
      optimizer=defaults.optimizer_config(name="adamw", learning_rate=3e-4, grad_clip_norm=1.0))

  config.model = ml_collections.ConfigDict()
  config.model.name = "multi"  # 'text' | 'image' | 'multi'
  config.model.preset = "tiny"  # mmjax.models.clip.PRESETS
  config.model.checkpoint = ""  # a Hugging Face CLIP directory: the architecture and tokenizer
  config.model.bert_checkpoint = ""  # OSCAR: a Hugging Face BERT directory ('' = small random)
  config.model.dropout_rate = 0.1
  config.model.lstm_size = 64
  config.model.lstm_layers = 2
  config.model.embed_dim = 64
  config.model.num_blocks = 6
  config.model.num_heads = 8
  config.model.residual = False
  config.model.attention_dropout = 0.0

  config.loss = defaults.loss_config(head_weights={"multi": 1.0})
  config.loss.gradient_blending = True  # CLIP-multi: Table 3's GB (no_gb turns it off)

  config.data = ml_collections.ConfigDict()
  config.data.train_file = ""  # both '': the embedded synthetic memes
  config.data.eval_file = ""
  config.data.test_file = ""  # unlabelled memes to predict (launch/memotion3.py)
  config.data.images = ""  # '' = image/ beside the label files' directory
  config.data.image_pattern = "{split}/{id}.jpg"
  config.data.format = "memotion"  # or 'binary' (stage b's hateful / not hateful lists)
  config.data.target = "task_a"
  config.data.image_size = 32  # must equal the vision tower's image_size
  config.data.bad_rows = "raise"  # or 'skip' (counted and logged)
  config.data.check_images = True
  # The reader's columns (alternatives '|', '#N' = N-th column), label strings and Task A's
  # grouping of the sentiment (mmjax/projects/memotion3/memotion_table.py); e.g.
  # --config.data.columns.translation=COLUMN reads a translation of the OCR text.
  config.data.columns = dict(memotion_table.DEFAULT_COLUMNS)
  config.data.vocabularies = dict(memotion_table.LABEL_VOCABULARIES)
  config.data.task_a_groups = memotion_table.TASK_A_GROUPS
  # OSCAR's inputs: detector regions stored beside the images (memotion3/regions.py) and the
  # BERT tokens of text + tags. The synthetic memes' stand-in features have 64 dimensions.
  config.data.regions = ml_collections.ConfigDict(dict(max_regions=10, feature_dim=64,
                                                       max_tokens=64))
  config.data.holdout_fraction = 0.0
  config.data.holdout_seed = 0
  config.data.train_subset = "all"
  config.data.eval_subset = "all"
  config.data.eval_split = "eval"
  config.data.num_threads = 2
  config.data.prefetch_batches = 2
  config.data.eval_max_examples = 0
  # Embedded synthetic memes (directory '': $MMJAX_CACHE or ~/.cache/mmjax).
  config.data.synthetic = ml_collections.ConfigDict(dict(
      directory="", num_train=1200, num_val=300, num_test=300, image_size=64, label_noise=0.05,
      seed=0))
  _table3(config)
  return apply_variants(config, variants, VARIANTS, __file__)


def _table3(config) -> None:
  """Table 3's loss for the model and target (mmjax.projects.memotion3.task.apply_table3)."""
  task.apply_table3(config)


def _setting(section: str, key: str, value: str):
  def apply(config) -> None:
    config[section][key] = value
    _table3(config)
  apply.__doc__ = f"config.{section}.{key}={value!r}, Table 3's loss."
  return apply


def _hateful(config) -> None:
  """Stage (b): the binary hateful task on a list of labelled memes (set data.train_file and
  data.eval_file to pretrain_corpora.write_binary_list files)."""
  config.data.format = "binary"
  config.data.target = "hateful"
  _table3(config)


def _no_gb(config) -> None:
  """CLIP-multi trained on its fused head only (Table 4's 'CLIP-multi0 without GB')."""
  config.loss.gradient_blending = False
  _table3(config)


def _tiny(config) -> None:
  """Seconds on a laptop CPU (tests)."""
  set_keys(config, total_steps=6, batch_size=8, eval_batch_size=16, log_every_steps=3,
           eval_every_steps=3, checkpoint_every_steps=3)
  set_keys(config.model, lstm_size=8, embed_dim=16, num_blocks=2, num_heads=2)
  set_keys(config.data.synthetic, num_train=40, num_val=16, num_test=8, image_size=32)


def _paper(config) -> None:
  """ViT-B/32 at CLIP's 224 px; d_e 512, BiLSTM cells 512 (section 3)."""
  config.model.preset = "ViT-B/32"
  config.data.image_size = 224
  set_keys(config.model, lstm_size=512, embed_dim=512, num_heads=8)
  set_keys(config.data.regions, max_regions=50, feature_dim=2048, max_tokens=128)
  set_keys(config, batch_size=64, total_steps=20_000, eval_every_steps=1000,
           checkpoint_every_steps=1000)
  config.data.synthetic.image_size = 224


VARIANTS = {**{m: _setting("model", "name", m) for m in ("text", "image", "multi", "oscar")},
            **{t: _setting("data", "target", t) for t in ("task_a",) + TASK_C}, "no_gb": _no_gb,
            "hateful": _hateful,
            "tiny": _tiny, "paper": _paper}
