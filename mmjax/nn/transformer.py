"""Pre-LN transformer layers (Vaswani et al. 2017; Radford et al. 2019/2021): the one encoder
block that both CLIP towers and the YouTube-8M frame encoder use.

Block (parameter names mirror transformers' CLIP, so CLIP checkpoints convert by name):
  x = x + Dropout(out_proj(attn(layer_norm1(x))))
  x = x + Dropout(fc2(act(fc1(layer_norm2(x)))))
  attn = softmax(q k^T / sqrt(d_head) + mask) v over `num_heads` heads.
Initialization as transformers' CLIP: q/k/v and fc2 kernels normal with std
width^-0.5 (2 L)^-0.5, out_proj width^-0.5, fc1 (2 width)^-0.5 (L = num_layers of the stack).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.dense import Dense
from mmjax.nn.pooling import masked_mean


def activation(name: str):
  """quick_gelu(x) = x * sigmoid(1.702 x) (OpenAI CLIP), 'gelu' (exact erf), 'gelu_new' /
  'gelu_pytorch_tanh' (tanh approximation, flax's nn.gelu default), or 'relu'."""
  if name == "quick_gelu":
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu
  raise ValueError(f"unknown activation {name!r}; expected quick_gelu, gelu, gelu_new, "
                   "gelu_pytorch_tanh or relu")


def _normal(std: float):
  return nn.initializers.normal(stddev=std)


def project_heads(x: jnp.ndarray, num_heads: int, std: float, name: str) -> jnp.ndarray:
  """Dense `name` (width -> width, kernel ~ N(0, std^2)) split into heads: [B, L, width] ->
  [B, L, num_heads, width / num_heads]. Call inside a compact method (the Dense belongs to the
  calling module)."""
  width = x.shape[-1]
  y = Dense(width, kernel_init=_normal(std), name=name)(x)
  return y.reshape(y.shape[:-1] + (num_heads, width // num_heads))


def attention_logits(q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """q k^T / sqrt(d_head) per head: q, k [B, L, H, d_head] -> [B, H, Lq, Lk]."""
  return jnp.einsum("bqhd,bkhd->bhqk", q * q.shape[-1] ** -0.5, k)


def masked_softmax(logits: jnp.ndarray, mask: Optional[jnp.ndarray], axis: int) -> jnp.ndarray:
  """softmax of `logits` along `axis` over the entries where `mask` (bool, broadcastable; True =
  keep) allows; masked entries get weight 0 unless all are masked (then uniform: finite)."""
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  return jax.nn.softmax(logits, axis=axis)


def attend(logits: jnp.ndarray, mask: Optional[jnp.ndarray], v: jnp.ndarray) -> jnp.ndarray:
  """masked_softmax over keys of `logits` [B, H, Lq, Lk] (`mask` True = attend), applied to
  v [B, Lk, H, d_head] -> [B, Lq, H * d_head]. A query row whose keys are all masked attends
  uniformly (finite, no NaN)."""
  weights = masked_softmax(logits, mask, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return out.reshape(out.shape[:2] + (-1,))


class SelfAttention(nn.Module):
  """Multi-head self-attention with q_proj/k_proj/v_proj/out_proj Dense layers.

  x [B, L, width], mask bool [B, 1, L, L] (True = attend) or None -> [B, L, width]. A query row
  whose keys are all masked attends uniformly (finite, no NaN).
  """
  num_heads: int
  num_layers: int = 1  # of the stack, for the init scale

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: Optional[jnp.ndarray]) -> jnp.ndarray:
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"SelfAttention: width {width} is not divisible by {self.num_heads} heads")
    in_std = width ** -0.5 * (2 * self.num_layers) ** -0.5
    q, k, v = (project_heads(x, self.num_heads, in_std, name)
               for name in ("q_proj", "k_proj", "v_proj"))
    out = attend(attention_logits(q, k), mask, v)
    return Dense(width, kernel_init=_normal(width ** -0.5), name="out_proj")(out)


class Mlp(nn.Module):
  """fc2(act(fc1(x))): [..., width] -> [..., intermediate_size] -> [..., width]."""
  intermediate_size: int
  hidden_act: str
  num_layers: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    width = x.shape[-1]
    h = Dense(self.intermediate_size, kernel_init=_normal((2 * width) ** -0.5), name="fc1")(x)
    h = activation(self.hidden_act)(h)
    std = width ** -0.5 * (2 * self.num_layers) ** -0.5
    return Dense(width, kernel_init=_normal(std), name="fc2")(h)


class EncoderBlock(nn.Module):
  """One pre-LN block (module docstring).  x [B, L, width], mask bool [B, 1, L, L] or None ->
  [B, L, width]. Dropout (rate `dropout_rate`, only when train=True) after the attention and
  after the MLP; CLIP uses none."""
  num_heads: int
  mlp_dim: int
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  dropout_rate: float = 0.0
  num_layers: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: Optional[jnp.ndarray], *,
               train: bool = False) -> jnp.ndarray:
    h = nn.LayerNorm(self.layer_norm_eps, name="layer_norm1")(x)
    h = SelfAttention(self.num_heads, self.num_layers, name="self_attn")(h, mask)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h = nn.LayerNorm(self.layer_norm_eps, name="layer_norm2")(x)
    h = Mlp(self.mlp_dim, self.hidden_act, self.num_layers, name="mlp")(h)
    return x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)


class TransformerEncoder(nn.Module):
  """Frame encoder: input projection + learned position embeddings (table of `max_frames`
  rows) + `num_layers` EncoderBlocks ('block_0', ...) + final LayerNorm.

  x [batch, frames, dim_in], mask [batch, frames] (1 = real frame) -> [batch, frames, d_model],
  or with `pool=True` the masked mean over real frames, [batch, d_model]. Padded frames are
  masked out of every attention softmax. Activation: tanh-approximated GELU; LayerNorm eps 1e-6
  (the layout and numerics of the 0.1.0 release, whose checkpoints still load).
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
    x = Dense(self.d_model, name="input_projection")(x)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_frames, self.d_model))
    x = x + positions[None, :x.shape[1]]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    attention_mask = nn.make_attention_mask(mask > 0, mask > 0, dtype=jnp.bool_)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, hidden_act="gelu_new", layer_norm_eps=1e-6,
                       dropout_rate=self.dropout_rate, num_layers=self.num_layers,
                       name=f"block_{i}")(x, attention_mask, train=train)
    x = nn.LayerNorm(name="final_ln")(x)
    return masked_mean(x, mask) if self.pool else x
