"""CREMA-D shared encoders (seed 002, mmjax/projects/cremad/README.md): one encoder over face
frames and mel spectrograms joined side by side into one input, or over one of them alone.

The default trains ResNet18 on the multimodal 2D input (middle-frame face | spectrogram) of
the embedded synthetic clips (written once in CREMA-D's layout, VideoFlash/*.flv and
AudioWAV/*.wav), at 64 px so that it runs on a laptop CPU.

Variants (combine with commas, e.g. ':i3d_multimodal,tiny'):
  The cells of Tables 1-3, '<encoder>_<modality>' (2D encoders read the middle-frame face and
  the whole spectrogram; 3D encoders the 24 fps frames and time-aligned spectrogram chunks):
  resnet18_audio  resnet18_vision  resnet18_multimodal       2D CNN
  googlenet_audio  googlenet_vision  googlenet_multimodal    2D CNN
  vgg16_audio  vgg16_vision  vgg16_multimodal                2D CNN
  vit_audio  vit_vision  vit_multimodal                      2D transformer (1 channel)
  simple3d_audio  simple3d_vision  simple3d_multimodal       3D CNN
  i3d_audio  i3d_vision  i3d_multimodal                      3D CNN
  videomae_audio  videomae_vision  videomae_multimodal       video transformer
  actor_split   actor-disjoint train/test split instead of the paper's random one
  tiny          seconds on a laptop CPU (tests): 32 px, 8 frames, small widths
  table4        Table 4's learning rate and dropout for the cell (batch, steps and input size
                unchanged: the embedded tables of the README)
  paper         the paper's sizes (224 px, 135 padded frames or 32 for VideoMAE) and Table 4's
                batch size, learning rate, epochs and dropout for the cell
Evaluation splits: 'eval' = the test split, 'train_split' = the training split (Tables 1-3 report
both). Modality ablation (Tables 1-2's 'Ablated I3D'): --config.data.ablate=vision (or audio)
blanks that half of a multimodal input at evaluation.

Real data: --config.data.root=/data/CREMA-D (with VideoFlash/ and AudioWAV/); preprocessing
runs once into --config.data.cache_dir (default: a directory per root and preprocessing
settings under --config.data.cache_root, itself $MMJAX_CACHE or ~/.cache/mmjax by default).
Pretrained weights (files you have; nothing is downloaded): --config.model.checkpoint=FILE,
a torchvision state dict (resnet18, googlenet, vgg16), pytorch-i3d's rgb_imagenet.pt (i3d) or a
Hugging Face VideoMAE directory (videomae).

Usage:
  python launch/train.py --config=configs/cremad.py --workdir=/tmp/cremad/resnet18_mm
  python launch/train.py --config=configs/cremad.py:i3d_multimodal,paper --workdir=/tmp/i3d
  python launch/cremad.py --workdir=/tmp/cremad --cells=resnet18_audio,resnet18_vision
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys
from mmjax.projects.cremad import cells
from mmjax.projects.cremad.encoders import model_config, partition_rules

defaults = load_sibling(__file__, "defaults")


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  config = defaults.trainer_config(
      task="cremad", total_steps=400, batch_size=16, eval_batch_size=32,
      log_every_steps=50, eval_every_steps=200, checkpoint_every_steps=200, keep_checkpoints=2,
      best_metric="eval/accuracy", best_mode="max",
      optimizer=defaults.optimizer_config(name="adam", learning_rate=1e-3))
  config.evals = defaults.eval_splits(eval={}, train_split={"split_name": "train"})

  config.model = model_config("resnet18")
  config.loss = defaults.loss_config(head_weights={"emotion": 1.0})  # Table 4: cross-entropy
  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # CREMA-D's root (VideoFlash/, AudioWAV/); '' = the synthetic clips
  config.data.modality = "multimodal"  # 'audio' | 'vision' | 'multimodal'
  config.data.family = "2d"  # set from the encoder: '2d' or '3d' preprocessing
  config.data.layout = "cnn"  # 3D inputs: 'cnn' (padded to max_frames) or 'videomae'
  config.data.split = "random"  # or 'actor' (actor-disjoint)
  config.data.test_fraction = 0.3  # the paper: 70/30 (2D), 80/20 (3D)
  config.data.split_seed = 0
  config.data.split_file = ""  # '' = written into the cache directory
  config.data.bad_names = "raise"  # or 'skip' (listed with the reason)
  config.data.image_size = 64  # faces, spectrograms, frames and chunks: image_size^2
  config.data.grayscale = False  # 1-channel inputs (the paper's ViT, some of its 2D CNNs)
  config.data.fps = 24  # 3D frames per second
  config.data.max_frames = 135  # 3D CNNs: clips padded (blank frames) to this many
  config.data.num_frames = 32  # VideoMAE: frames sampled evenly
  config.data.mel = ml_collections.ConfigDict(dict(sample_rate=22050, n_fft=2048,
                                                   hop_length=512, n_mels=512))
  config.data.face_detector = "auto"  # 'mtcnn' (facenet-pytorch), 'opencv' or 'auto'
  config.data.cache_dir = ""  # the preprocessed clips; '' = one per root and settings under:
  config.data.cache_root = ""  # '' = $MMJAX_CACHE or ~/.cache/mmjax
  config.data.workers = 2  # preprocessing processes
  config.data.ablate = ""  # '' | 'audio' | 'vision': blank that half (multimodal, evaluation)
  config.data.split_name = "test"  # the split a dataset reads ('train' | 'test')
  config.data.num_threads = 2
  config.data.prefetch_batches = 2
  config.data.eval_max_examples = 0
  # Embedded synthetic clips (directory '': $MMJAX_CACHE or ~/.cache/mmjax).
  config.data.synthetic = ml_collections.ConfigDict(dict(
      directory="", actors=12, sentences=4, seed=0))
  config.sharding_rules = partition_rules("resnet18")
  return apply_variants(config, variants, VARIANTS, __file__)


def _cell(cell: str):
  encoder, modality = cells.split_cell(cell)

  def apply(config) -> None:
    with config.unlocked():
      config.model = model_config(encoder, config.model.size)
    config.sharding_rules = partition_rules(encoder)
    config.data.modality = modality
    config.data.family = cells.ENCODERS[encoder]
    config.data.layout = "videomae" if encoder == "videomae" else "cnn"
    config.data.grayscale = encoder == "vit"
    config.data.test_fraction = 0.3 if config.data.family == "2d" else 0.2
  apply.__doc__ = f"Table {1 + cells.MODALITIES.index(modality)}'s {encoder} row."
  return apply


def _actor_split(config) -> None:
  """Actors in the test split never appear in training."""
  config.data.split = "actor"


def _tiny(config) -> None:
  """Seconds on a laptop CPU (tests)."""
  set_keys(config, total_steps=4, batch_size=4, eval_batch_size=8, log_every_steps=2,
           eval_every_steps=2, checkpoint_every_steps=2)
  set_keys(config.data, image_size=32, max_frames=8, num_frames=4, workers=1)
  config.data.mel.n_mels = 64
  config.data.synthetic.update(actors=4, sentences=1)
  with config.unlocked():
    config.model = model_config(config.model.encoder, "tiny")


def _table4(config) -> None:
  """Table 4's learning rate and dropout for the configured cell."""
  setup = cells.PAPER_SETUP[f"{config.model.encoder}_{config.data.modality}"]
  config.optimizer.learning_rate = setup["learning_rate"]
  config.model.dropout_rate = setup["dropout"]


def _paper(config) -> None:
  """Table 4 for the configured cell, at the paper's input sizes."""
  cell = f"{config.model.encoder}_{config.data.modality}"
  setup = cells.PAPER_SETUP[cell]
  set_keys(config, batch_size=setup["batch_size"], total_steps=cells.paper_steps(cell),
           eval_every_steps=1000, checkpoint_every_steps=1000)
  _table4(config)
  set_keys(config.data, image_size=224, max_frames=135, num_frames=32)


VARIANTS = {**{cell: _cell(cell) for cell in cells.CELLS}, "actor_split": _actor_split,
            "tiny": _tiny, "table4": _table4, "paper": _paper}
