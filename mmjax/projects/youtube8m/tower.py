"""The correlation tower's network (seed 001 section 3, Fig. 5): shared by its own task
(correlation.py, which trains it) and the CM-G / CM-C classifiers (model.py, which load it
frozen)."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.dense import Dense
from mmjax.nn.pooling import masked_mean


class CorrelationTower(nn.Module):
  """logit of "the rgb and the audio belong together".

  Per stream m: e_m = LayerNorm(masked_mean(ReLU(x_m W_m + b_m))) over its real frames, then
  u_m = e_m P_m + q_m in a joint space; the logit is an MLP of the matching features
  [u_rgb; u_audio; u_rgb * u_audio; |u_rgb - u_audio|]:
    logit = w^T ReLU(W [...] + b) + c.
  The product and difference terms let the tower compare the streams directly (whether they
  belong together is an interaction of the two, not a property of either).

  rgb [B, T, D_v], audio [B, T, D_a], rgb_mask / audio_mask [B, T] -> logits [B].
  """
  hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, rgb, audio, rgb_mask, audio_mask, *, train: bool = False):
    joint = []
    for m, x, mask in (("rgb", rgb, rgb_mask), ("audio", audio, audio_mask)):
      e = masked_mean(nn.relu(Dense(self.hidden, name=f"{m}_embedding")(x)), mask)
      e = nn.LayerNorm(name=f"{m}_norm")(e)
      joint.append(nn.Dense(self.hidden, name=f"{m}_joint")(e))
    u_rgb, u_audio = joint
    features = jnp.concatenate([u_rgb, u_audio, u_rgb * u_audio, jnp.abs(u_rgb - u_audio)],
                               axis=-1)
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(features))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return nn.Dense(1, name="output")(h)[:, 0]
