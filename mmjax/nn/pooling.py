"""Masked reductions over the time axis of padded sequences."""

import jax.numpy as jnp


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean over valid frames: sum_t m_t x_t / max(sum_t m_t, 1).

  Args:
    x: [batch, frames, dim] features.
    mask: [batch, frames], 1 for real frames and 0 for padding.

  Returns:
    [batch, dim]; a video with no valid frame pools to zeros.
  """
  mask = mask.astype(x.dtype)[..., None]
  total = jnp.sum(x * mask, axis=1)
  count = jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  return total / count
