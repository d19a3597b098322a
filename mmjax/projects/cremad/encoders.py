"""The seven shared encoders of seed 002 as config -> module, with their partition rules and
pretrained-weight import (the modules themselves live in the core, mmjax.models).

config.model:
  encoder        resnet18 | googlenet | vgg16 | vit | simple3d | i3d | videomae
  checkpoint     pretrained weights you have ('' = random init): a torchvision state dict
                 (resnet18, googlenet, vgg16: e.g. resnet18-f37072fd.pth), pytorch-i3d's
                 rgb_imagenet.pt (i3d) or a Hugging Face VideoMAE directory (videomae); the
                 head is re-initialised for the 6 emotions, BatchNorm statistics come along
  dropout_rate   before the head (Table 4's dr; the CNNs' own dropouts: GoogLeNet 0.2, VGG16 0.5)
  size           'paper' (the architectures as published; ViT: width 768, 6 blocks, 4 heads,
                 MLP 1024, patch 16; VideoMAE: ViT-B, tubelets 2 x 16 x 16) or 'tiny' (tests)
  + the size's fields (SIZES).
The model maps a batch to {'emotion': logits [B, 6]}.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax.models import cnn_weights, googlenet, i3d, resnet, simple3d, vgg, videomae, vit
from mmjax.models.clip.weights import read_state_dict
from mmjax.projects.cremad import cells

__all__ = ["HEAD", "SIZES", "CremadClassifier", "build_model", "load_pretrained",
           "model_config", "partition_rules"]

HEAD = "emotion"
log = logging.getLogger("mmjax")

SIZES = {
    "resnet18": {"paper": {}, "tiny": {}},
    "googlenet": {"paper": {}, "tiny": {}},
    "vgg16": {"paper": {"classifier_width": 4096}, "tiny": {"classifier_width": 64}},
    "vit": {"paper": dict(patch_size=16, hidden_size=768, num_layers=6, num_heads=4,
                          mlp_dim=1024),
            "tiny": dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)},
    "simple3d": {"paper": {}, "tiny": {}},
    "i3d": {"paper": {"width_multiplier": 1.0}, "tiny": {"width_multiplier": 0.125}},
    "videomae": {"paper": dict(patch_size=16, tubelet_size=2, hidden_size=768, num_layers=12,
                               num_heads=12, mlp_dim=3072),
                 "tiny": dict(patch_size=8, tubelet_size=2, hidden_size=32, num_layers=2,
                              num_heads=2, mlp_dim=64)},
}
_DROPOUT = {"googlenet": 0.2, "vgg16": 0.5, "i3d": 0.5, "videomae": 0.5}
_RULES = {"resnet18": resnet.PARTITION_RULES, "googlenet": googlenet.PARTITION_RULES,
          "vgg16": vgg.PARTITION_RULES, "vit": vit.PARTITION_RULES,
          "simple3d": simple3d.PARTITION_RULES, "i3d": i3d.PARTITION_RULES,
          "videomae": videomae.PARTITION_RULES}


def model_config(encoder: str, size: str = "paper") -> ml_collections.ConfigDict:
  """config.model for `encoder` at `size` (module docstring)."""
  if encoder not in cells.ENCODERS:
    raise ValueError(f"config.model.encoder={encoder!r}; expected one of {sorted(cells.ENCODERS)}")
  if size not in ("paper", "tiny"):
    raise ValueError(f"config.model.size={size!r}; expected 'paper' or 'tiny'")
  return ml_collections.ConfigDict(dict(encoder=encoder, checkpoint="", size=size,
                                        dropout_rate=_DROPOUT.get(encoder, 0.0),
                                        **SIZES[encoder][size]))


def partition_rules(encoder: str) -> tuple:
  """The encoder's parameter partition rules (FSDP over 'data'; they match at any depth)."""
  return tuple(_RULES[encoder])


def _encoder(model_config: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  name = model_config.encoder
  sizes = {key: model_config[key] for key in SIZES[name][model_config.size]}
  dropout = float(model_config.dropout_rate)
  if name == "resnet18":
    return resnet.ResNet18(num_classes=num_classes)
  if name == "googlenet":
    return googlenet.GoogLeNet(num_classes=num_classes, dropout_rate=dropout)
  if name == "vgg16":
    return vgg.VGG16(num_classes=num_classes, dropout_rate=dropout, **sizes)
  if name == "vit":
    return vit.ViT(num_classes=num_classes, dropout_rate=dropout,
                   image_size=tuple(input_shape[:2]), num_channels=input_shape[-1], **sizes)
  if name == "simple3d":
    return simple3d.Simple3D(num_classes=num_classes, dropout_rate=dropout)
  if name == "i3d":
    return i3d.I3D(num_classes=num_classes, dropout_rate=dropout, **sizes)
  frames, height, width, _ = input_shape
  if height != width:
    raise ValueError(f"VideoMAE needs square frames, got {height} x {width} (config.data)")
  return videomae.VideoMAE(num_classes=num_classes, dropout_rate=dropout, num_frames=frames,
                           image_size=height, **sizes)


class CremadClassifier(nn.Module):
  """batch {'inputs': [B, ...] (mmjax.projects.cremad.data)} -> {'emotion': logits [B, C]}."""
  encoder: nn.Module

  def __call__(self, batch: Dict[str, jnp.ndarray], train: bool = False):
    return {HEAD: self.encoder(batch["inputs"], train=train)}


def build_model(model_config: Any, input_shape: tuple[int, ...],
                num_classes: int) -> CremadClassifier:
  """The classifier of config.model over examples of `input_shape` (data.input_shape)."""
  return CremadClassifier(_encoder(model_config, input_shape, num_classes))


def load_pretrained(model: CremadClassifier, model_config: Any,
                    input_shape: tuple[int, ...]) -> Dict[str, Any] | None:
  """{'params': ..., 'batch_stats': ...} of the encoder from config.model.checkpoint (None when
  it is ''); the head is freshly initialised when its size differs from the checkpoint's."""
  path = model_config.checkpoint
  if not path:
    return None
  encoder, name = model.encoder, model_config.encoder
  if name in ("resnet18", "googlenet", "vgg16"):
    variables, skipped = cnn_weights.load_torchvision(encoder, path,
                                                      input_shape=(1,) + tuple(input_shape))
    if skipped:
      log.info("%s: not loaded (fresh values kept): %s", path, skipped)
    return variables
  if name == "i3d":
    template = jax.jit(encoder.init)(jax.random.key(0), jnp.zeros((1,) + tuple(input_shape)))
    return i3d.load_i3d(template, path)
  if name == "videomae":
    config = videomae.read_videomae_config(path)
    mine = {key: getattr(encoder, key) for key in SIZES["videomae"]["paper"]}
    theirs = dict(patch_size=config.patch_size, tubelet_size=config.tubelet_size,
                  hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
                  num_heads=config.num_attention_heads, mlp_dim=config.intermediate_size)
    if mine != theirs:
      raise ValueError(f"{path}: VideoMAE checkpoint sizes {theirs} differ from config.model "
                       f"{mine}")
    _, variables = videomae.params_from_state_dict(
        read_state_dict(path), config, num_classes=encoder.num_classes, source=path)
    return variables
  raise ValueError(f"config.model.checkpoint={path!r}: {name} has no pretrained-weights format "
                   "(it trains from scratch in the paper); leave the key empty")


def as_host(variables: Dict[str, Any]) -> Dict[str, Any]:
  """The variables as host numpy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(variables))
