"""NetVLAD pooling and context gating (Arandjelovic et al. 2016; Miech et al. 2017, WILLOW).

DESIGN.md 4.3: soft assignment a = softmax(BN(x W)); vlad_k = sum_t a_tk x_t - (sum_t a_tk) c_k
with learned centers c_k; intra-normalisation (L2 over features per cluster), flatten, global L2.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.normalize import l2_normalize


def soft_assignment(x: jnp.ndarray, mask: jnp.ndarray, num_clusters: int, *, train: bool,
                    prefix: str = "") -> jnp.ndarray:
  """NetVLAD's masked soft assignment a = softmax(BN(x W)) over K = `num_clusters` clusters.

  Call inside a compact method: it creates the Dense '<prefix>assignment' (W, [dim, K]) and the
  BatchNorm '<prefix>assignment_bn' in the calling module. x [batch, frames, dim], mask [batch,
  frames] (1 = real frame) -> a [batch, frames, K], zero at padded frames, which are also left
  out of the batch-norm statistics.
  """
  logits = nn.Dense(num_clusters, use_bias=False, name=f"{prefix}assignment")(x)
  bn_mask = jnp.broadcast_to(mask[..., None] > 0, logits.shape)
  logits = nn.BatchNorm(use_running_average=not train, momentum=0.99,
                        name=f"{prefix}assignment_bn")(logits, mask=bn_mask)
  return jax.nn.softmax(logits, axis=-1) * mask[..., None].astype(x.dtype)


def vlad_centers(module: nn.Module, num_clusters: int, dim: int, prefix: str = "") -> jnp.ndarray:
  """The learned centers c [K, dim] (parameter '<prefix>centers' of `module`)."""
  return module.param(f"{prefix}centers", nn.initializers.normal(dim ** -0.5),
                      (num_clusters, dim))


def vlad_descriptor(assign: jnp.ndarray, x: jnp.ndarray, centers: jnp.ndarray) -> jnp.ndarray:
  """vlad_k = sum_t a_tk (x_t - c_k) = sum_t a_tk x_t - (sum_t a_tk) c_k, L2-normalised per
  cluster over features (intra-normalisation), flattened, L2-normalised globally.

  assign [B, T, K] (zero at padded frames), x [B, T, D], centers [K, D] -> [B, K * D].
  """
  weighted_sum = jnp.einsum("btk,btd->bkd", assign, x)  # sum_t a_tk x_t
  assign_mass = jnp.sum(assign, axis=1)[..., None]  # sum_t a_tk, [B, K, 1]
  vlad = weighted_sum - assign_mass * centers[None]  # [B, K, D]
  vlad = l2_normalize(vlad, axis=-1, eps=1e-6)  # intra-normalisation
  vlad = vlad.reshape(vlad.shape[0], -1)
  return l2_normalize(vlad, axis=-1, eps=1e-6)


class NetVLAD(nn.Module):
  """Masked NetVLAD over a padded frame sequence: soft_assignment, then vlad_descriptor.

  Attributes:
    num_clusters: K, number of learned centers.

  Call args:
    x: [batch, frames, dim] frame features.
    mask: [batch, frames], 1 for real frames. Padded frames get zero assignment and are excluded
      from the batch-norm statistics, so padding never reaches the output.
    train: batch statistics (True) or running averages (False) in the assignment batch norm.

  Returns:
    [batch, K * dim] globally L2-normalised VLAD descriptor.
  """
  num_clusters: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    assign = soft_assignment(x, mask, self.num_clusters, train=train)  # [B, T, K]
    return vlad_descriptor(assign, x, vlad_centers(self, self.num_clusters, x.shape[-1]))


class ContextGating(nn.Module):
  """Context gating (Miech et al. 2017): y = h * sigmoid(BN(h W)).  [batch, dim] -> [batch, dim]."""

  @nn.compact
  def __call__(self, h: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    gates = nn.Dense(h.shape[-1], use_bias=False, name="gate")(h)
    gates = nn.BatchNorm(use_running_average=not train, momentum=0.99, name="gate_bn")(gates)
    return h * jax.nn.sigmoid(gates)
