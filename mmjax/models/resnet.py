"""ResNet18 (He et al. 2016) in Flax, laid out as torchvision's `resnet18`.

  conv1 7x7/2 (64) -> bn1 -> ReLU -> maxpool 3x3/2 pad 1
  layer1..layer4: 2 BasicBlocks each, widths 64, 128, 256, 512, stride 2 in the first block of
    layers 2-4:  y = ReLU(x' + bn2(conv2(ReLU(bn1(conv1(x))))))  with x' = x, or
    x' = downsample_1(downsample_0(x)) (1x1/2 conv + BN) where the shape changes
  global average pool -> fc

Module names mirror torchvision's (`layer2_0/downsample_0` <-> `layer2.0.downsample.0`), so
cnn_weights.load_torchvision reads its checkpoints. Its layers (mmjax.nn.conv) have torch's
semantics, BatchNorm's running-variance update included, so running statistics agree with
PyTorch after training steps, not only the forward pass.
"""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.conv import TORCH_LINEAR, BatchNorm, conv, max_pool

__all__ = ["PARTITION_RULES", "BasicBlock", "ResNet18"]

# FSDP over 'data': conv kernels [kh, kw, I, O] along O, the fc kernel [in, out] along in.
PARTITION_RULES = (
    (r"(.*/)?(conv\d|downsample_0)/kernel", (None, None, None, "data")),
    (r"(.*/)?fc/kernel", ("data", None)),
)


class BasicBlock(nn.Module):
  """torchvision BasicBlock: x [batch, height, width, in] -> [batch, height/stride,
  width/stride, features]."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    y = conv(self.features, 3, self.stride, 1, name="conv1")(x)
    y = nn.relu(BatchNorm(name="bn1")(y, train=train))
    y = conv(self.features, 3, 1, 1, name="conv2")(y)
    y = BatchNorm(name="bn2")(y, train=train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = conv(self.features, 1, self.stride, name="downsample_0")(x)
      x = BatchNorm(name="downsample_1")(x, train=train)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet18: images [batch, height, width, channels] (any channel count, any size >= 32)
  -> logits [batch, num_classes], or the pooled features [batch, 512] when num_classes == 0."""
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    x = conv(64, 7, 2, 3, name="conv1")(x)
    x = nn.relu(BatchNorm(name="bn1")(x, train=train))
    x = max_pool(x, 3, 2, 1)
    for layer, width in enumerate((64, 128, 256, 512)):
      for block in range(2):
        stride = 2 if layer > 0 and block == 0 else 1
        x = BasicBlock(width, stride, name=f"layer{layer + 1}_{block}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if not self.num_classes:
      return x
    return nn.Dense(self.num_classes, kernel_init=TORCH_LINEAR, name="fc")(x)
