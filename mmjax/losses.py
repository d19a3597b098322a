"""Loss functions. Each returns a scalar averaged over (weighted) examples."""

from typing import Optional

import jax.numpy as jnp
import optax


def weighted_mean(per_example: jnp.ndarray, weights: Optional[jnp.ndarray]) -> jnp.ndarray:
  """sum_n w_n l_n / max(sum_n w_n, 1e-8); plain mean when weights is None.  [N] -> []."""
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(per_example.dtype)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def multilabel_sigmoid_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                                     weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Multi-label loss of the YouTube-8M starter code (CrossEntropyLoss): per example the sum over
  classes of -[y log s(z) + (1 - y) log(1 - s(z))], then the (weighted) mean over examples.

  Args:
    logits: [N, C]. labels: [N, C] multi-hot. weights: optional [N] example weights.
  """
  per_class = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
  return weighted_mean(jnp.sum(per_class, axis=-1), weights)
