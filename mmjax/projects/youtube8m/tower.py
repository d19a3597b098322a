"""The correlation tower's network (seed 001 section 3, Fig. 5): shared by its own task
(correlation.py, which trains it) and the CM-G / CM-C classifiers (model.py, which load it
frozen)."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.pooling import masked_mean


class CorrelationTower(nn.Module):
  """logit of "the rgb and the audio belong together":
  per stream m, e_m = masked_mean(ReLU(x_m W_m + b_m)) over its real frames; then
  logit = w^T ReLU(W [e_rgb; e_audio] + b) + c.

  rgb [B, T, D_v], audio [B, T, D_a], rgb_mask / audio_mask [B, T] -> logits [B].
  """
  hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, rgb, audio, rgb_mask, audio_mask, *, train: bool = False):
    embeddings = [masked_mean(nn.relu(nn.Dense(self.hidden, name=f"{m}_embedding")(x)), mask)
                  for m, x, mask in (("rgb", rgb, rgb_mask), ("audio", audio, audio_mask))]
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(jnp.concatenate(embeddings, axis=-1)))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return nn.Dense(1, name="output")(h)[:, 0]
