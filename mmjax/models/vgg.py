"""VGG16 (Simonyan & Zisserman 2015, configuration D, no BatchNorm) in Flax, laid out as
torchvision's `vgg16` (138,357,544 parameters at 1000 classes).

  features: 13 x [conv 3x3 pad 1 + ReLU] in stages of 2, 2, 3, 3, 3 convs (64, 128, 256, 512, 512
    channels), each stage closed by max-pool 2x2/2 (torch indices: convs at features.0, 2, 5, 7,
    10, 12, 14, 17, 19, 21, 24, 26, 28)
  avgpool: AdaptiveAvgPool2d((7, 7)), exactly as torch for any input size
  classifier: Linear 25088->4096, ReLU, Dropout, Linear 4096->4096, ReLU, Dropout, Linear
    (classifier.0, .3, .6)

The classifier reads the pooled map flattened in torch's channel-major (C, H, W) order, so its
kernels are torchvision's transposed and nothing else. The CREMA-D multimodal input (face |
spectrogram, 224 x 448) gives a 7 x 14 map, which the adaptive pool averages in 1 x 2 bins.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmjax.nn.conv import conv

__all__ = ["PARTITION_RULES", "VGG16", "adaptive_avg_pool"]

_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# FSDP over 'data' (+ tensor parallelism over 'model' for the two 4096-wide layers, ~120M of the
# 138M parameters): conv kernels [kh, kw, I, O] along O, dense kernels [in, out] along in.
PARTITION_RULES = (
    (r"(.*/)?features_\d+/kernel", (None, None, None, "data")),
    (r"(.*/)?classifier_(0|3)/kernel", ("data", "model")),
    (r"(.*/)?classifier_(0|3)/bias", ("model",)),
    (r"(.*/)?classifier_6/kernel", ("data", None)),
)


def _bin_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] averaging weights of torch's adaptive pool: bin i covers
  [floor(i * size / out), ceil((i + 1) * size / out))."""
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -(-((i + 1) * size) // out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x: jnp.ndarray, output_size=(7, 7)) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d(output_size): x [batch, height, width, channels] ->
  [batch, out_h, out_w, channels]. A bin's mean is separable, so it is one averaging matrix per
  axis (bins overlap or repeat when the input is smaller than the output)."""
  rows = _bin_matrix(x.shape[1], output_size[0])
  cols = _bin_matrix(x.shape[2], output_size[1])
  return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)


class VGG16(nn.Module):
  """VGG16: images [batch, height, width, channels] (height, width >= 32) -> logits
  [batch, num_classes], or with num_classes == 0 the input of the last Linear, [batch, 4096]
  (after the second ReLU and Dropout). classifier_width: the two hidden Linear layers' width
  (4096 in VGG16; smaller only for tests)."""
  num_classes: int = 1000
  dropout_rate: float = 0.5
  classifier_width: int = 4096

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    index = 0
    for stage in _STAGES:
      for width in stage:
        x = nn.relu(conv(width, 3, 1, 1, use_bias=True, name=f"features_{index}")(x))
        index += 2
      x = nn.max_pool(x, (2, 2), (2, 2))
      index += 1
    x = adaptive_avg_pool(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.normal(0.01), name=name)
    for name in ("classifier_0", "classifier_3"):
      x = nn.relu(dense(self.classifier_width, name)(x))
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    if not self.num_classes:
      return x
    return dense(self.num_classes, "classifier_6")(x)
