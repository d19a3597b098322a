"""GoogLeNet / Inception-v1 (Szegedy et al. 2015) in Flax, laid out as torchvision's `googlenet`
without the auxiliary classifiers (6,624,904 parameters at 1000 classes).

  BasicConv2d = conv (no bias) -> BN (eps 0.001) -> ReLU
  conv1 7x7/2 (64) -> maxpool1 3x3/2 -> conv2 1x1 (64) -> conv3 3x3 (192) -> maxpool2 3x3/2
  -> inception3a, 3b -> maxpool3 3x3/2 -> inception4a..4e -> maxpool4 2x2/2 -> inception5a, 5b
  -> global average pool -> dropout -> fc
  Inception: concat over channels of branch1 (1x1), branch2 (1x1 -> 3x3), branch3 (1x1 -> 3x3:
    torchvision's known deviation from the paper's 5x5, which its weights were trained with) and
    branch4 (max-pool 3x3/1 pad 1 -> 1x1).
All max-pools use torch's ceil_mode=True output size. `transform_input` maps inputs normalised
with the ImageNet mean/std to the (x - 0.5) / 0.5 normalisation that torchvision's pretrained
GoogLeNet weights expect (torchvision sets it when loading them); it needs 3 channels.
"""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.conv import BatchNorm, conv, max_pool

__all__ = ["PARTITION_RULES", "BasicConv2d", "GoogLeNet", "Inception"]

# torchvision inits conv and Linear weights with trunc_normal_(std=0.01, a=-2, b=2): the bounds are
# 200 standard deviations, so a plain normal.
_INIT = nn.initializers.normal(0.01)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Inception widths: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection).
_INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

# FSDP over 'data': conv kernels [kh, kw, I, O] along O, the fc kernel [in, out] along in.
PARTITION_RULES = (
    (r"(.*/)?conv/kernel", (None, None, None, "data")),
    (r"(.*/)?fc/kernel", ("data", None)),
)


class BasicConv2d(nn.Module):
  """conv -> BatchNorm(eps 0.001) -> ReLU: [batch, height, width, in] -> [batch, height', width',
  features]."""
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    x = conv(self.features, self.kernel, self.stride, self.padding, kernel_init=_INIT,
             name="conv")(x)
    return nn.relu(BatchNorm(epsilon=1e-3, name="bn")(x, train=train))


class Inception(nn.Module):
  """The four-branch block: [batch, height, width, in] -> [batch, height, width,
  widths[0] + widths[2] + widths[4] + widths[5]]."""
  widths: tuple

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    ch1, ch3_reduce, ch3, ch5_reduce, ch5, pool_proj = self.widths
    branch1 = BasicConv2d(ch1, 1, name="branch1")(x, train=train)
    branch2 = BasicConv2d(ch3_reduce, 1, name="branch2_0")(x, train=train)
    branch2 = BasicConv2d(ch3, 3, padding=1, name="branch2_1")(branch2, train=train)
    branch3 = BasicConv2d(ch5_reduce, 1, name="branch3_0")(x, train=train)
    branch3 = BasicConv2d(ch5, 3, padding=1, name="branch3_1")(branch3, train=train)
    branch4 = max_pool(x, 3, 1, 1, ceil_mode=True)
    branch4 = BasicConv2d(pool_proj, 1, name="branch4_1")(branch4, train=train)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class GoogLeNet(nn.Module):
  """GoogLeNet: images [batch, height, width, channels] (height, width >= 32) -> logits
  [batch, num_classes], or with num_classes == 0 the pooled features [batch, 1024] (after the
  dropout, i.e. the input of fc)."""
  num_classes: int = 1000
  dropout_rate: float = 0.2
  transform_input: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    if self.transform_input:
      if x.shape[-1] != 3:
        raise ValueError(f"transform_input needs RGB images, got {x.shape[-1]} channel(s)")
      mean, std = jnp.asarray(_IMAGENET_MEAN), jnp.asarray(_IMAGENET_STD)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    x = BasicConv2d(64, 7, 2, 3, name="conv1")(x, train=train)
    x = max_pool(x, 3, 2, ceil_mode=True)
    x = BasicConv2d(64, 1, name="conv2")(x, train=train)
    x = BasicConv2d(192, 3, padding=1, name="conv3")(x, train=train)
    x = max_pool(x, 3, 2, ceil_mode=True)
    for block, widths in _INCEPTIONS.items():
      if block in ("4a", "5a"):
        x = max_pool(x, 3 if block == "4a" else 2, 2, ceil_mode=True)  # maxpool3 / maxpool4
      x = Inception(widths, name=f"inception{block}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    if not self.num_classes:
      return x
    return nn.Dense(self.num_classes, kernel_init=_INIT, name="fc")(x)
