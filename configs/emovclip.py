"""EmoVCLIP (MER2024 seed 003, section 3.2): CLIP with deep vision-language prompt learning on a
frozen backbone for video emotion recognition; frames mean-pooled over time; classes from
"a photo of a {label}." prompts.

The default prompt-tunes the 'tiny' CLIP (random backbone: no weights are downloaded) on an
embedded synthetic labelled-video set; point config.model.checkpoint at a Hugging Face CLIP
directory (e.g. a local copy of openai/clip-vit-base-patch32) for the real method, and
config.data.{train,eval}_labels / frames_dir at MER-style labels and face frames.

Variants (combine with commas, e.g. ':paper,zero_shot'):
  tiny       seconds on a laptop CPU (tests)
  paper      ViT-B/32 shapes, N = 4 prompts in all D = 12 layers, Adam 3e-4, batch 64, 8 frames
  zero_shot  no prompts, no training: CLIP zero-shot classification of the eval clips

Usage:
  python launch/train.py --config=configs/emovclip.py --workdir=/tmp/emovclip
  python launch/train.py --config=configs/emovclip.py:paper \
      --config.model.checkpoint=/models/clip-vit-base-patch32 \
      --config.data.train_labels=/data/mer2024/train.csv \
      --config.data.eval_labels=/data/mer2024/val.csv --config.data.frames_dir=/data/mer2024/frames
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys
from mmjax.models.clip.sharding import PARTITION_RULES

defaults = load_sibling(__file__, "defaults")

MER_CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  config = defaults.trainer_config(
      task="emovclip", total_steps=1500, batch_size=16, eval_batch_size=32, log_every_steps=50,
      eval_every_steps=500, checkpoint_every_steps=500, keep_checkpoints=3,
      sharding_rules=PARTITION_RULES, best_metric="eval/weighted_f1", best_mode="max",
      # Only the prompts train (frozen backbone): `trainable` is a regex on parameter paths.
      optimizer=defaults.optimizer_config(name="adam", learning_rate=1e-2, grad_clip_norm=1.0,
                                          trainable=r".*/prompts"))

  config.model = ml_collections.ConfigDict()
  config.model.preset = "tiny"
  config.model.checkpoint = ""  # HF CLIP directory (architecture + frozen backbone weights)
  config.model.num_prompts = 4  # N learnable tokens per layer and tower (EmoVCLIP: 4)
  config.model.prompt_depth = 2  # D first layers with prompts (EmoVCLIP: 12 = all of ViT-B)
  config.model.template = "a photo of a {}."

  config.data = ml_collections.ConfigDict()
  config.data.train_labels = ""  # empty: the embedded synthetic clips
  config.data.eval_labels = ""
  config.data.frames_dir = "frames"  # relative to the label file's directory unless absolute
  config.data.class_names = MER_CLASSES
  config.data.num_frames = 4
  config.data.image_size = 32  # must equal the vision tower's image_size
  config.data.num_threads = 2
  config.data.prefetch_batches = 2
  config.data.eval_max_examples = 0
  # Embedded synthetic clips (directory '': $MMJAX_CACHE or ~/.cache/mmjax).
  config.data.synthetic = ml_collections.ConfigDict(dict(
      directory="", num_train=480, num_eval=120, min_frames=4, max_frames=12, seed=0))

  return apply_variants(config, variants, VARIANTS, __file__)


def _tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds on a laptop CPU (tests)."""
  set_keys(config, total_steps=6, batch_size=8, eval_batch_size=8, log_every_steps=3,
                    eval_every_steps=0, checkpoint_every_steps=3)
  set_keys(config.data.synthetic, num_train=24, num_eval=12, max_frames=6)


def _paper(config: ml_collections.ConfigDict) -> None:
  """ViT-B/32 shapes, N = 4 prompts in all D = 12 layers, Adam 3e-4, batch 64, 8 frames."""
  set_keys(config.model, preset="ViT-B/32", prompt_depth=12)
  set_keys(config.data, image_size=224, num_frames=8)
  config.optimizer.learning_rate = 3e-4
  set_keys(config, batch_size=64, total_steps=3000, eval_every_steps=500,
                    checkpoint_every_steps=500)


def _zero_shot(config: ml_collections.ConfigDict) -> None:
  """No prompts, no training: CLIP zero-shot classification of the eval clips."""
  config.model.num_prompts = 0
  config.optimizer.trainable = ""
  config.total_steps = 0


VARIANTS = {"tiny": _tiny, "paper": _paper, "zero_shot": _zero_shot}
