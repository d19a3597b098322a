"""Loss functions. The `*_loss` / `*_entropy` reductions return a scalar averaged over (weighted)
examples; `softmax_focal_loss` and `weighted_binary_cross_entropy` return per-example /
per-element values for the caller to reduce (`weighted_mean`); `blended_loss` (gradient
blending) returns the total and each head's loss."""

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

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


def softmax_focal_loss(logits: jnp.ndarray, labels: jnp.ndarray,
                       alpha: Optional[jnp.ndarray] = None, gamma: float = 2.0) -> jnp.ndarray:
  """Multi-class focal loss per example (Lin et al. 2017; seed 000):

    FL_n = -alpha_{y_n} (1 - p_{n, y_n})^gamma log p_{n, y_n},   p_n = softmax(logits_n).

  gamma = 0 with alpha None is softmax cross-entropy. (optax has only the sigmoid form;
  torchvision's `sigmoid_focal_loss` defaults to alpha 0.25, so give alpha explicitly when
  comparing.)
  1 - p is computed as -expm1(log p) and floored at 1e-30 before the power, so the gradient stays
  finite for 0 < gamma < 1 when p rounds to 1.

  Args:
    logits: [..., C]. labels: [...] integer class ids in [0, C). alpha: optional [C] class weights.
    gamma: focusing parameter >= 0.

  Returns:
    [...] per-example losses.
  """
  if gamma < 0:
    raise ValueError(f"softmax_focal_loss: gamma must be >= 0, got {gamma}")
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_p_y = jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  loss = -log_p_y
  if gamma:
    loss = loss * jnp.power(jnp.maximum(-jnp.expm1(log_p_y), 1e-30), gamma)
  if alpha is not None:
    loss = loss * jnp.asarray(alpha, logits.dtype)[labels]
  return loss


def blended_loss(head_logits: Mapping[str, jnp.ndarray], labels: jnp.ndarray,
                 head_weights: Mapping[str, Union[float, jnp.ndarray]],
                 per_example: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] = None,
                 example_weights: Optional[jnp.ndarray] = None
                 ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """The gradient-blending loss (Wang et al. 2020; seed 000): over a dict of per-head logits,

    L = sum_k w_k mean_n l(z_{k,n}, y_n),

  where l is `per_example` (default softmax cross-entropy; e.g. a partial of
  `softmax_focal_loss`) and the mean is weighted by `example_weights`. The heads share the
  labels; the task's predictions come from its fused head only (not from here). Heads with no
  weight in `head_weights` are an error (a typo would silently drop a head's training signal).

  Args:
    head_logits: {head: [N, C]}. labels: [N] class ids. head_weights: {head: w_k} (floats or
      traced scalars, e.g. G-Blend weights from the task state). example_weights: optional [N].

  Returns:
    (L [], {head: that head's mean loss []}).
  """
  missing = sorted(set(head_logits) - set(head_weights))
  extra = sorted(set(head_weights) - set(head_logits))
  if missing or extra:
    raise ValueError(f"blended_loss: heads {sorted(head_logits)} but weights for "
                     f"{sorted(head_weights)} (missing {missing}, unknown {extra})")
  if per_example is None:
    per_example = lambda z, y: softmax_focal_loss(z, y, gamma=0.0)
  per_head = {k: weighted_mean(per_example(z, labels), example_weights)
              for k, z in head_logits.items()}
  total = sum(jnp.asarray(head_weights[k], v.dtype) * v for k, v in per_head.items())
  return total, per_head


def weighted_binary_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, *,
                                  positive_weight: Union[float, jnp.ndarray] = 1.0,
                                  negative_weight: Union[float, jnp.ndarray] = 1.0
                                  ) -> jnp.ndarray:
  """Binary cross-entropy per element with class weights:

    l = -[w_pos y log s(z) + w_neg (1 - y) log(1 - s(z))],   s = sigmoid.

  w_pos is PyTorch's `pos_weight` (a scalar or per class [C]); w_neg weighs the negatives (seed
  001's correlation tower: lambda = 2). Computed from logits (log s(z) = -softplus(-z)).

  Args:
    logits: [..., C] (or [...]). labels: same shape, in [0, 1]. positive_weight,
    negative_weight: scalars or broadcastable to logits (e.g. [C]).

  Returns:
    Per-element losses, the shape of logits.
  """
  labels = labels.astype(logits.dtype)
  log_p = -jax.nn.softplus(-logits)
  log_not_p = -jax.nn.softplus(logits)
  return -(jnp.asarray(positive_weight, logits.dtype) * labels * log_p
           + jnp.asarray(negative_weight, logits.dtype) * (1.0 - labels) * log_not_p)


def uncertainty_weighted_loss(losses: Sequence[jnp.ndarray], raw_sigmas: jnp.ndarray,
                              scales: Optional[Sequence[float]] = None) -> jnp.ndarray:
  """Several task losses weighted by learned uncertainties (seed 004 eq. 9, generalised):

    L = sum_i s_i L_i / d_i^2 + log(1 + d_i),   d_i = softplus(raw_i) + 1e-6 > 0,

  seed 004's L_e / d1^2 + L_v / (2 d2^2) + log(1 + d1) + log(1 + d2) with scales (1, 1/2) for its
  (classification, regression) pair. d is kept positive by construction (the equation is
  unbounded below as d -> -1), and at least 1e-6 so that L stays finite in float32 however
  negative raw gets (the gradient then pushes d back up).

  Args:
    losses: M scalar losses. raw_sigmas: [M] unconstrained parameters (train them with the model).
    scales: M factors s_i (default all 1).

  Returns:
    The scalar L.
  """
  losses = jnp.stack([jnp.asarray(loss) for loss in losses])
  if raw_sigmas.shape != losses.shape:
    raise ValueError(f"uncertainty_weighted_loss: {losses.shape[0]} losses but raw_sigmas of "
                     f"shape {raw_sigmas.shape}")
  scales = jnp.ones_like(losses) if scales is None else jnp.asarray(scales, losses.dtype)
  sigmas = jax.nn.softplus(raw_sigmas) + 1e-6
  return jnp.sum(scales * losses / jnp.square(sigmas) + jnp.log1p(sigmas))


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
