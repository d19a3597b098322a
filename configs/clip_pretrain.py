"""CLIP contrastive pretraining on image-text pairs (seed 000, eq. 2-3; DESIGN.md 4.4).

The default trains the 'tiny' CLIP (real 49,408-token vocabulary, 32 px images) on an embedded
synthetic set of captioned scenes (~2 minutes on a 2-core CPU).

Variants (combine with commas):
  tiny    seconds on a laptop CPU (tests)
  paper   ViT-B/32 at CLIP's 224 px, batch 256

Usage:
  python launch/train.py --config=configs/clip_pretrain.py --workdir=/tmp/clip
  python launch/train.py --config=configs/clip_pretrain.py:paper \
      --config.data.train_file=/data/pairs/train.csv --config.data.eval_file=/data/pairs/val.jsonl
  python launch/export_clip.py --config=configs/clip_pretrain.py --workdir=/tmp/clip \
      --output=/tmp/clip_hf    # a Hugging Face directory: mmjax.models.clip.from_pretrained
Pair lists: CSV/TSV with a header or JSONL, one image path (relative to the list file) and one
caption per row (keys data.image_key / data.caption_key).
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys
from mmjax.models.clip.sharding import PARTITION_RULES

defaults = load_sibling(__file__, "defaults")


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config ('tiny', 'paper')."""
  config = defaults.trainer_config(
      task="clip_pretrain", total_steps=600,
      batch_size=64,  # global; the similarity matrix covers all of it
      eval_batch_size=64, log_every_steps=50, eval_every_steps=300, checkpoint_every_steps=200,
      keep_checkpoints=3, sharding_rules=PARTITION_RULES, best_metric="eval/i2t_r@1",
      best_mode="max",
      # Keys and defaults: configs/defaults.py optimizer_config (trainable '': all parameters).
      optimizer=defaults.optimizer_config(name="adamw", learning_rate=5e-4, grad_clip_norm=1.0))

  config.model = ml_collections.ConfigDict()
  config.model.preset = "tiny"  # mmjax.models.clip.PRESETS
  config.model.checkpoint = ""  # HF CLIP directory: architecture, initial weights, tokenizer
  config.model.num_prompts = 0
  config.model.prompt_depth = 0

  config.data = ml_collections.ConfigDict()
  config.data.train_file = ""  # empty: the embedded synthetic pairs
  config.data.eval_file = ""
  config.data.image_key = "image"
  config.data.caption_key = "caption"
  config.data.image_size = 32  # must equal the vision tower's image_size
  config.data.num_threads = 2
  config.data.prefetch_batches = 2
  config.data.eval_max_examples = 0
  # Embedded synthetic pairs (directory '': $MMJAX_CACHE or ~/.cache/mmjax).
  config.data.synthetic = ml_collections.ConfigDict(dict(directory="", num_train=2000,
                                                         num_eval=256, seed=0))

  return apply_variants(config, variants, VARIANTS, __file__)


def _tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds on a laptop CPU (tests)."""
  set_keys(config, total_steps=6, batch_size=16, eval_batch_size=16, log_every_steps=3,
                    eval_every_steps=0, checkpoint_every_steps=3)
  set_keys(config.data.synthetic, num_train=64, num_eval=32)


def _paper(config: ml_collections.ConfigDict) -> None:
  """ViT-B/32 at CLIP's 224 px, batch 256."""
  config.model.preset = "ViT-B/32"
  config.data.image_size = 224
  set_keys(config, batch_size=256, total_steps=100_000, eval_every_steps=5000,
                    checkpoint_every_steps=2000)


VARIANTS = {"tiny": _tiny, "paper": _paper}
