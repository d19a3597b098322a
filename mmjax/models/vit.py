"""The "simple ViT" of the CREMA-D shared-encoders paper (section 5.1.2), after Dosovitskiy et al.
(2021), with the pre-LN block that CLIP and the YouTube-8M encoder share
(mmjax.nn.transformer.EncoderBlock):

  patches:  x [B, H, W, C] -> N = (H / P)(W / P) non-overlapping P x P patches in row-major order,
            each flattened (p_row, p_col, channel) and projected to D (`patch_embedding`: a Conv
            with kernel = stride = P, i.e. one Dense on the flattened patch)
  tokens:   z_0 = [class_token; patches] + position_embedding    (learned, [1, 1 + N, D])
            -> Dropout
  blocks:   z = z + Dropout(out_proj(attn(LN(z))));  z = z + Dropout(fc2(gelu(fc1(LN(z)))))
            (exact GELU, LayerNorm eps 1e-5 as PyTorch's)
  output:   y = final_ln(z_L)[:, 0]  ->  head(y) [B, num_classes]  (num_classes = 0: y [B, D])

Paper settings: 1 input channel (spectrogram / grey face), P = 16, D = 768, 6 (or 8) blocks,
4 (or 8) heads, MLP width 1024, dropout 0.4 (audio, multimodal) or 0.2 (vision). Inputs need not be
square: the multimodal input is 224 x 448 (face | spectrogram), and the position table has one row
per patch of `image_size` plus the class token.

Parameter count (paper: "~16.4 M learnable parameters with 6 blocks and 4 heads"). Per block,
LayerNorms 2 * 2D and the MLP 2 * D * 1024 + 1024 + D = 1,574,656 for D = 768; the attention depends
on its inner width d_i (heads x head width): 3 D d_i (+ biases) for q, k, v and d_i D + D out.
  - standard ViT (this module: d_i = D = 768 with biases, what the shared block computes):
    2,362,368 attention + 1,574,656 MLP + 3,072 LN = 3,940,096 per block, x 6 = 23,640,576; with
    the patch embedding (256 + 1) 768 = 197,376, class token 768, positions 197 x 768 = 151,296,
    final LN 1,536 and a 6-class head 4,614: 23,996,166 at 224 x 224 x 1 (24,146,694 at 224 x 448).
  - the code the paper cites (theaisummer.com "vision-transformer" with self-attention-cv, and
    vit-pytorch, both with 64-wide heads: d_i = 4 x 64 = 256, no q/k/v bias): 3 x 768 x 256 +
    256 x 768 (+ 768) + MLP + LN = 2.36 M per block, 14.5 M in total at 224 x 224 x 1.
Neither reading gives 16.4 M. This module keeps the standard one (24.0 M, 1.46x the paper's
figure) because it is what the shared block computes; the 64-wide-head reading needs an inner
attention width option on EncoderBlock. Other deviations from that code: pre-LN blocks (the
self-attention-cv block is post-LN), no dropout on the attention probabilities or between fc1 and
fc2 (dropout is on the embeddings and on each residual branch), a final LayerNorm before the head.
Initialisation: position embeddings N(0, 0.02^2), class token and head zeros (big_vision), blocks
as EncoderBlock.
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.clip import sharding as clip_sharding
from mmjax.nn import EncoderBlock

__all__ = ["PARTITION_RULES", "ViT"]


class ViT(nn.Module):
  """Simple ViT classifier (module docstring). x float32 [batch, height, width, channels] with
  (height, width) = image_size and channels = num_channels -> logits [batch, num_classes], or the
  class-token features [batch, hidden_size] when num_classes = 0."""
  num_classes: int = 0
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 6
  num_heads: int = 4
  mlp_dim: int = 1024
  dropout_rate: float = 0.0
  image_size: Tuple[int, int] = (224, 224)
  num_channels: int = 1
  layer_norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    height, width = self.image_size
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"ViT: image_size {self.image_size} is not a multiple of patch_size {p}")
    if x.shape[1:] != (height, width, self.num_channels):
      raise ValueError(f"ViT: input of shape {x.shape}, expected [batch, {height}, {width}, "
                       f"{self.num_channels}] (image_size, num_channels)")
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                name="patch_embedding")(x)
    x = x.reshape(x.shape[0], -1, self.hidden_size)
    class_token = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(class_token, (x.shape[0], 1, self.hidden_size)), x], 1)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (1, x.shape[1], self.hidden_size))
    x = nn.Dropout(self.dropout_rate)(x + positions, deterministic=not train)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, hidden_act="gelu",
                       layer_norm_eps=self.layer_norm_eps, dropout_rate=self.dropout_rate,
                       num_layers=self.num_layers, name=f"block_{i}")(x, None, train=train)
    x = nn.LayerNorm(self.layer_norm_eps, name="final_ln")(x)[:, 0]
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)
    return x


# Partition rules (config.sharding_rules): the blocks' q/k/v/out_proj and fc1/fc2 by CLIP's rules
# (FSDP over 'data' on one kernel dimension, tensor parallelism over 'model' on the other), the
# patch kernel [P, P, C, D] and the position table over D, the head kernel over its input width.
PARTITION_RULES = (
    (r".*patch_embedding/kernel", (None, None, None, ("data", "model"))),
    (r".*position_embedding", (None, None, ("data", "model"))),
    (r".*head/kernel", ("data", None)),
) + clip_sharding.PARTITION_RULES
