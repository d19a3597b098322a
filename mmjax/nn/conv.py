"""Convolution-network layers with PyTorch's semantics, so that torchvision-style backbones
(mmjax.models.resnet, vgg, googlenet, i3d) match their PyTorch references and checkpoints:
`conv` (torch.nn.Conv2d's padding and init), `max_pool` (torch.nn.MaxPool2d, ceil_mode
included) and `BatchNorm` (torch.nn.BatchNorm{2,3}d, running variance updated with the
unbiased batch variance).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["KAIMING_FAN_OUT", "TORCH_LINEAR", "BatchNorm", "conv", "max_pool"]

# torchvision's conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_LINEAR = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, *, name: str,
         use_bias: bool = False, kernel_init=KAIMING_FAN_OUT) -> nn.Conv:
  """torch.nn.Conv2d(., features, kernel, stride, padding) on NHWC inputs (no bias by default)."""
  return nn.Conv(features, (kernel, kernel), (stride, stride), [(padding, padding)] * 2,
                 use_bias=use_bias, kernel_init=kernel_init, name=name)


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
  """torch.nn.MaxPool2d(window, stride, padding, ceil_mode) on x [batch, height, width, channels].

  Padding is -inf. ceil_mode rounds the output size up, out = ceil((n + 2p - k) / s) + 1, minus
  one when the last window would start in the right padding (torch's rule); the extra windows
  see -inf on the right.
  """
  pads = []
  for size in x.shape[1:3]:
    extra = 0
    if ceil_mode:
      out = -(-(size + 2 * padding - window) // stride) + 1
      if (out - 1) * stride >= size + padding:
        out -= 1
      extra = max((out - 1) * stride + window - size - 2 * padding, 0)
    pads.append((padding, padding + extra))
  return nn.max_pool(x, (window, window), (stride, stride), pads)


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d over the last axis of x [..., channels].

  train: normalise with the batch mean and biased variance; update
    mean <- momentum * mean + (1 - momentum) * batch_mean and
    var <- momentum * var + (1 - momentum) * batch_var * n / (n - 1)  (n values per channel),
  i.e. torch momentum 0.1 is `momentum=0.9` (Flax convention). Eval: the running statistics.
  The statistics are not updated while the module is being initialised (as flax.linen.BatchNorm).
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,))
    if train:
      axes = tuple(range(x.ndim - 1))
      mean, var = jnp.mean(x, axes), jnp.var(x, axes)
      if not self.is_initializing():
        n = x.size // channels
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * var * (n / max(n - 1, 1)))
    else:
      mean, var = ra_mean.value, ra_var.value
    return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
