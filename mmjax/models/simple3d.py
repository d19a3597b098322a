"""Simple3D, the 3D-CNN baseline of the CREMA-D shared-encoders paper (section 5.5: "6
convolutional layers followed by a final classification layer", 3,262 parameters in 5.7.1).

The paper gives nothing else, so this design is OUR RECONSTRUCTION, sized to its count:

  6 x [Conv3d 3x3x3, stride 2 in time, height and width, "SAME" padding, no bias
       -> BatchNorm (torch defaults: eps 1e-5, momentum 0.1) -> ReLU],  channels 4, 4, 4, 4, 4, 10
  -> global average pool over (time, height, width) -> Dropout -> Dense(num_classes)

Parameters at 6 classes: convs 27 * (3*4 + 4*4 + 4*4 + 4*4 + 4*4 + 4*10) = 3,132, BatchNorm
scale and bias 2 * 30 = 60, head 10 * 6 + 6 = 66: 3,258 (the paper: 3,262). Each stride-2 layer
halves every dimension (rounding up), so a 135-frame 224 x 224 clip leaves 3 x 4 x 4 positions
before the pool and a 224 x 448 multimodal clip 3 x 4 x 7. The layers are `Unit3D`s of the I3D
module (conv3d + bn), named 'conv_0' .. 'conv_5'; the head is 'head'.
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models import i3d
from mmjax.models.i3d import Unit3D

__all__ = ["PARTITION_RULES", "Simple3D"]

# FSDP over 'data' on the conv kernels' output channels (the I3D rules); the head is replicated.
PARTITION_RULES = i3d.PARTITION_RULES


class Simple3D(nn.Module):
  """x float32 [B, T, H, W, 3] -> logits [B, num_classes], or features [B, channels[-1]] when
  num_classes = 0 (module docstring)."""
  num_classes: int = 6
  dropout_rate: float = 0.0
  channels: Tuple[int, ...] = (4, 4, 4, 4, 4, 10)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if x.ndim != 5:
      raise ValueError(f"Simple3D expects [batch, frames, height, width, channels], got {x.shape}")
    for i, features in enumerate(self.channels):
      x = Unit3D(features, (3, 3, 3), (2, 2, 2), bn_epsilon=1e-5, bn_momentum=0.9,
                 name=f"conv_{i}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2, 3))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return nn.Dense(self.num_classes, name="head")(x)
