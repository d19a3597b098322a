"""L2 normalization (the one used by NetVLAD, CLIP and the contrastive loss)."""

import jax
import jax.numpy as jnp


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||_2, eps) along `axis`, computed as x * rsqrt(max(sum x^2, eps^2)).

  eps = 1e-12 is torch's F.normalize (CLIP, the contrastive loss: a zero vector stays zero, no
  NaN); NetVLAD passes eps = 1e-6, which is tf.nn.l2_normalize's max(sum x^2, 1e-12).
  Any shape; the result has x's shape.
  """
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))
