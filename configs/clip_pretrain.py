"""CLIP contrastive pretraining on image-text pairs (seed 000, eq. 2-3; DESIGN.md 4.4).

The default trains the 'tiny' CLIP (real 49,408-token vocabulary, 32 px images) on an embedded
synthetic set of captioned scenes (~2 minutes on a 2-core CPU); ':tiny' runs in seconds (tests);
':paper' is ViT-B/32 at CLIP's 224 px.

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

from mmjax.models.clip.sharding import PARTITION_RULES
from mmjax.train.optimizer import optimizer_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variant` is the text after ':' in --config ('', 'tiny', 'paper')."""
  if variant not in ("", "tiny", "paper"):
    raise ValueError(f"unknown variant {variant!r} of configs/clip_pretrain.py; expected '', "
                     "'tiny' or 'paper'")
  config = ml_collections.ConfigDict()
  config.task = "clip_pretrain"
  config.seed = 0
  config.total_steps = 600
  config.batch_size = 64  # global; the similarity matrix covers all of it
  config.eval_batch_size = 64
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 3
  config.mesh = (("data", -1), ("model", 1))
  config.sharding_rules = PARTITION_RULES

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
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.directory = ""  # empty: $MMJAX_CACHE or ~/.cache/mmjax
  config.data.synthetic.num_train = 2000
  config.data.synthetic.num_eval = 256
  config.data.synthetic.seed = 0

  # Keys and defaults: mmjax.train.optimizer.optimizer_config (trainable '': all parameters).
  config.optimizer = optimizer_config(name="adamw", learning_rate=5e-4, grad_clip_norm=1.0)

  if variant == "tiny":
    config.total_steps = 6
    config.batch_size = 16
    config.eval_batch_size = 16
    config.log_every_steps = 3
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 3
    config.data.synthetic.num_train = 64
    config.data.synthetic.num_eval = 32
  elif variant == "paper":
    config.model.preset = "ViT-B/32"
    config.data.image_size = 224
    config.batch_size = 256
    config.total_steps = 100_000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
  config.lock()
  return config
