"""Losses against numpy transcriptions of their formulas."""

import jax
import numpy as np
import pytest

from mmjax.losses import clip_contrastive_loss, multilabel_sigmoid_cross_entropy, weighted_mean


def test_multilabel_sigmoid_cross_entropy_is_starter_code_loss():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 6)).astype(np.float32) * 3
  labels = (rng.random((4, 6)) < 0.3).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  per_example = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(multilabel_sigmoid_cross_entropy(logits, labels),
                             per_example.mean(), rtol=1e-5)
  weights = np.array([1, 0, 1, 0], np.float32)
  np.testing.assert_allclose(multilabel_sigmoid_cross_entropy(logits, labels, weights),
                             per_example[[0, 2]].mean(), rtol=1e-5)


def test_weighted_mean_all_zero_weights_is_zero():
  assert float(weighted_mean(np.ones(3, np.float32), np.zeros(3, np.float32))) == 0.0


# --- CLIP contrastive loss (seed 000 eq. 2-3) -------------------------------------------------

def _clip_inputs(batch=6, dim=5, seed=1):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(batch, dim)).astype(np.float32) * 2
  text = rng.normal(size=(batch, dim)).astype(np.float32)
  return image, text, np.float32(np.log(1 / 0.07))


def _numpy_clip_loss(image, text, k, max_scale=100.0):
  """Eq. 2-3 in float64: logits = normalize(img) normalize(txt)^T e^k; 0.5 CE rows + 0.5 CE cols."""
  image = image.astype(np.float64) / np.linalg.norm(image.astype(np.float64), axis=1,
                                                    keepdims=True)
  text = text.astype(np.float64) / np.linalg.norm(text.astype(np.float64), axis=1, keepdims=True)
  logits = image @ text.T * min(np.exp(np.float64(k)), max_scale)

  def ce_rows(z):
    z_max = z.max(axis=1, keepdims=True)
    log_softmax = z - z_max - np.log(np.exp(z - z_max).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_softmax))
  return 0.5 * ce_rows(logits) + 0.5 * ce_rows(logits.T)


def test_clip_contrastive_loss_matches_numpy_equation():
  image, text, k = _clip_inputs()
  np.testing.assert_allclose(clip_contrastive_loss(image, text, k),
                             _numpy_clip_loss(image, text, k), rtol=1e-5)
  # exp(k) is clipped at max_logit_scale (CLIP's 100).
  np.testing.assert_allclose(clip_contrastive_loss(image, text, np.float32(6.0)),
                             _numpy_clip_loss(image, text, 6.0), rtol=1e-5)
  np.testing.assert_allclose(clip_contrastive_loss(image, text, np.float32(6.0),
                                                   max_logit_scale=1e9),
                             _numpy_clip_loss(image, text, 6.0, max_scale=1e9), rtol=1e-5)


def test_clip_contrastive_loss_matches_torch_value_and_gradients():
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  image, text, k = _clip_inputs()
  t_image, t_text = torch.tensor(image, requires_grad=True), torch.tensor(text, requires_grad=True)
  t_k = torch.tensor(k, requires_grad=True)
  # open_clip's ClipLoss with CLIP's clamp of the scale.
  scale = torch.clamp(t_k.exp(), max=100)
  logits = scale * functional.normalize(t_image, dim=-1) @ functional.normalize(t_text, dim=-1).T
  labels = torch.arange(len(image))
  loss = 0.5 * (functional.cross_entropy(logits, labels) + functional.cross_entropy(logits.T,
                                                                                   labels))
  loss.backward()
  value, grads = jax.value_and_grad(clip_contrastive_loss, argnums=(0, 1, 2))(image, text, k)
  np.testing.assert_allclose(value, loss.item(), rtol=1e-5)
  for ours, theirs in zip(grads, (t_image.grad, t_text.grad, t_k.grad)):
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_clip_contrastive_loss_ignores_padding_rows_and_columns():
  image, text, k = _clip_inputs(batch=5)
  rng = np.random.default_rng(2)
  # Pad with junk rows (and one all-zero row) in between the real ones.
  pad_image = np.concatenate([image[:2], rng.normal(size=(2, 5)), image[2:], np.zeros((1, 5))])
  pad_text = np.concatenate([text[:2], rng.normal(size=(2, 5)), text[2:], np.zeros((1, 5))])
  weight = np.array([1, 1, 0, 0, 1, 1, 1, 0], np.float32)
  loss_fn = jax.jit(jax.value_and_grad(clip_contrastive_loss, argnums=(0, 1, 2)))
  value, grads = loss_fn(image, text, k)
  pad_value, pad_grads = loss_fn(pad_image.astype(np.float32), pad_text.astype(np.float32), k,
                                 weight)
  np.testing.assert_allclose(pad_value, value, rtol=1e-6)
  real = weight > 0
  np.testing.assert_allclose(pad_grads[0][real], grads[0], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(pad_grads[1][real], grads[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(pad_grads[0][~real], 0.0)
  np.testing.assert_allclose(pad_grads[2], grads[2], rtol=1e-5)
  assert float(clip_contrastive_loss(image, text, k, np.zeros(5, np.float32))) == 0.0


def test_clip_contrastive_loss_logit_scale_gradient_matches_finite_differences():
  image, text, _ = _clip_inputs()
  for k in (0.5, 2.6592, 4.0):
    grad = float(jax.grad(clip_contrastive_loss, argnums=2)(image, text, np.float32(k)))
    eps = 1e-4
    numeric = (_numpy_clip_loss(image, text, k + eps) - _numpy_clip_loss(image, text, k - eps)) / (
        2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)
  # Above ln(100) the scale is clipped: no gradient reaches k.
  assert float(jax.grad(clip_contrastive_loss, argnums=2)(image, text, np.float32(5.0))) == 0.0


def test_clip_contrastive_loss_rejects_mismatched_shapes():
  image, text, k = _clip_inputs()
  with pytest.raises(ValueError, match="same shape"):
    clip_contrastive_loss(image, text[:3], k)
