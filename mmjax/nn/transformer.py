"""Pre-LN transformer encoder over padded frame sequences (Vaswani et al. 2017).

Block: x += Dropout(MHA(LN1 x, mask)); x += Dropout(MLP(LN2 x)); MLP = Dense(mlp_dim) -> GELU ->
Dense(d_model). Padded keys are masked out of every attention softmax.
"""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.pooling import masked_mean


class EncoderBlock(nn.Module):
  """One pre-LN encoder block.  x [batch, frames, d_model], mask [batch, frames] -> same shape as x."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    attn_mask = nn.make_attention_mask(mask > 0, mask > 0)  # [B, 1, T, T]
    h = nn.LayerNorm(name="ln1")(x)
    h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attention")(
        h, h, mask=attn_mask, deterministic=True)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h = nn.LayerNorm(name="ln2")(x)
    h = nn.Dense(self.mlp_dim, name="mlp_in")(h)
    h = nn.gelu(h)
    h = nn.Dense(x.shape[-1], name="mlp_out")(h)
    return x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)


class TransformerEncoder(nn.Module):
  """Input projection + learned position embeddings (table of `max_frames` rows) + `num_layers`
  blocks + final LayerNorm.

  x [batch, frames, dim_in], mask [batch, frames] -> [batch, frames, d_model], or with
  `pool=True` the masked mean over valid frames, [batch, d_model].
  """
  d_model: int
  num_heads: int
  num_layers: int
  mlp_dim: int
  max_frames: int
  dropout_rate: float = 0.0
  pool: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if x.shape[1] > self.max_frames:
      raise ValueError(f"TransformerEncoder: {x.shape[1]} frames > max_frames={self.max_frames}")
    x = nn.Dense(self.d_model, name="input_projection")(x)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_frames, self.d_model))
    x = x + positions[None, :x.shape[1]]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, name=f"block_{i}")(
          x, mask, train=train)
    x = nn.LayerNorm(name="final_ln")(x)
    return masked_mean(x, mask) if self.pool else x
