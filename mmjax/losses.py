"""Loss functions. Each returns a scalar averaged over (weighted) examples."""

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from mmjax.nn.normalize import l2_normalize


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


def clip_contrastive_loss(image_embeds: jnp.ndarray, text_embeds: jnp.ndarray,
                          logit_scale: jnp.ndarray, weight: Optional[jnp.ndarray] = None,
                          data_axis: str = "data", max_logit_scale: float = 100.0
                          ) -> jnp.ndarray:
  """Symmetric CLIP contrastive loss over the global batch (seed 000 eq. 2-3).

    x_i = img_i / ||img_i||,  y_j = txt_j / ||txt_j||,  s = min(exp(k), max_logit_scale),
    L_ij = s * x_i . y_j   (logits_per_image = L, logits_per_text = L^T),
    loss = 0.5 * mean_i CE(L_i:, i) + 0.5 * mean_j CE(L_:j, j),
    CE(z, c) = logsumexp(z) - z_c,

  where the means run over valid rows (weight 1) and the softmax of each row runs over valid
  columns only (padding columns are masked out), so a padded batch has exactly the loss of its
  unpadded part. All weights 0 -> 0. CLIP clips exp(k) at 100; `max_logit_scale` does the same.

  Global batch (call it on global arrays, e.g. inside a jit under `jax.set_mesh`): when the
  ambient mesh has an axis `data_axis` of size > 1, the loss runs in `jax.shard_map` over that
  axis (batch split over it, other axes left automatic): each shard all-gathers the (normalized)
  embeddings and weights, computes only its own rows of both logit matrices (its images against
  all texts, its texts against all images; its diagonal starts at axis_index * local_batch) and
  the per-shard loss sums are psum'ed. Gradients flow through the gather. Without such a mesh the
  same formula runs directly; both give the same value and gradients. Called inside a shard_map
  that is already manual over `data_axis`, the arguments are the local shards and the same
  gather-and-psum runs in place (the result is the global-batch loss on every shard).

  Args:
    image_embeds: [B, E] image features (normalized here; need not be unit length).
    text_embeds: [B, E] text features of the same B pairs (row i matches image i).
    logit_scale: [] the log temperature k (CLIP's `logit_scale` parameter, init ln(1/0.07)).
    weight: optional [B] in {0, 1}; 0 marks a padding row. None: all rows valid.
    data_axis: mesh axis the batch is split over.
    max_logit_scale: upper clip of exp(k).

  Returns:
    [] the loss (float32 or wider).
  """
  if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
    raise ValueError(f"clip_contrastive_loss needs image_embeds and text_embeds of the same "
                     f"shape [B, E]; got {image_embeds.shape} and {text_embeds.shape}")
  batch = image_embeds.shape[0]
  dtype = jnp.promote_types(jnp.result_type(image_embeds, text_embeds), jnp.float32)
  if weight is None:
    weight = jnp.ones((batch,), dtype)
  weight = jnp.asarray(weight).astype(dtype)
  image_embeds, text_embeds = image_embeds.astype(dtype), text_embeds.astype(dtype)
  scale = jnp.minimum(jnp.exp(jnp.asarray(logit_scale, dtype)), max_logit_scale)

  mesh = jax.sharding.get_abstract_mesh()
  shards = 1 if mesh.empty or data_axis not in mesh.axis_names else mesh.shape[data_axis]
  if shards == 1:
    return _finish(_contrastive_sums(image_embeds, text_embeds, scale, weight, None))
  if data_axis in mesh.manual_axes:  # already inside a shard_map over the data axis
    return _finish(_contrastive_sums(image_embeds, text_embeds, scale, weight, data_axis))
  if batch % shards:
    raise ValueError(f"clip_contrastive_loss: batch {batch} is not divisible by the "
                     f"{shards} devices of mesh axis {data_axis!r}")
  sharded = jax.shard_map(
      lambda img, txt, s, w: _contrastive_sums(img, txt, s, w, data_axis),
      mesh=mesh, in_specs=(P(data_axis), P(data_axis), P(), P(data_axis)), out_specs=P(),
      axis_names={data_axis})
  return _finish(sharded(image_embeds, text_embeds, scale, weight))


def _contrastive_sums(image_embeds, text_embeds, scale, weight, axis_name):
  """(sum_i w_i CE_image_i, sum_j w_j CE_text_j, sum_i w_i) over the local rows [b] against the
  columns of the global batch [B] (gathered over `axis_name`; local = global when None)."""
  images, texts = l2_normalize(image_embeds), l2_normalize(text_embeds)
  local = images.shape[0]
  if axis_name is None:
    all_images, all_texts, all_weight, offset = images, texts, weight, 0
  else:
    all_images, all_texts, all_weight = jax.lax.all_gather(
        (images, texts, weight), axis_name, axis=0, tiled=True)
    offset = jax.lax.axis_index(axis_name) * local
  # Finite stand-in for -inf: padding columns get zero probability, and padding rows (weight 0,
  # whose own diagonal column is masked) stay finite, so no NaN leaks into sums or gradients.
  mask_value = jnp.finfo(images.dtype).min
  valid_columns = all_weight[None, :] > 0
  rows = jnp.arange(local)
  labels = offset + rows

  def row_sum(logits):  # logits [b, B]: sum_r w_r (logsumexp(z_r) - z_r,label_r)
    masked = jnp.where(valid_columns, logits, mask_value)
    ce = jax.nn.logsumexp(masked, axis=-1) - logits[rows, labels]
    return jnp.sum(weight * ce)

  image_sum = row_sum(scale * images @ all_texts.T)  # rows of logits_per_image
  text_sum = row_sum(scale * texts @ all_images.T)  # rows of logits_per_text
  sums = (image_sum, text_sum, jnp.sum(weight))
  return sums if axis_name is None else jax.lax.psum(sums, axis_name)


def _finish(sums) -> jnp.ndarray:
  image_sum, text_sum, count = sums
  return 0.5 * (image_sum + text_sum) / jnp.maximum(count, 1e-8)
