"""Losses against numpy transcriptions of their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.losses import (
  clip_contrastive_loss,
  multilabel_sigmoid_cross_entropy,
  softmax_focal_loss,
  uncertainty_weighted_loss,
  weighted_binary_cross_entropy,
  weighted_mean,
)


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


# ------------------------------------------------------------------------------------------
# Focal loss, weighted binary cross-entropy, uncertainty weighting: values and gradients
# against PyTorch autograd (issue 11, point 1).


def _torch_focal(logits, labels, alpha, gamma):
  import torch  # pylint: disable=import-outside-toplevel
  log_p = torch.log_softmax(logits, dim=-1).gather(-1, labels[:, None])[:, 0]
  loss = -((1 - log_p.exp()) ** gamma) * log_p
  return loss * alpha[labels] if alpha is not None else loss


@pytest.mark.parametrize("gamma,with_alpha", [(0.0, False), (2.0, False), (2.0, True),
                                              (0.5, True)])
def test_softmax_focal_loss_matches_torch_values_and_gradients(gamma, with_alpha):
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5)).astype(np.float64) * 2
  labels = rng.integers(0, 5, size=7)
  alpha = rng.uniform(0.2, 1.0, size=5) if with_alpha else None
  with jax.enable_x64(True):
    ours = lambda z: softmax_focal_loss(z, jnp.asarray(labels), alpha=alpha, gamma=gamma)
    value = np.asarray(ours(jnp.asarray(logits)))
    grad = np.asarray(jax.grad(lambda z: ours(z).sum())(jnp.asarray(logits)))
  z = torch.tensor(logits, requires_grad=True)
  reference = _torch_focal(z, torch.tensor(labels), None if alpha is None else torch.tensor(alpha),
                           gamma)
  reference.sum().backward()
  np.testing.assert_allclose(value, reference.detach().numpy(), rtol=1e-10)
  np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-9, atol=1e-12)
  if gamma == 0 and alpha is None:  # plain softmax cross-entropy
    cross_entropy = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                                      reduction="none")
    np.testing.assert_allclose(value, cross_entropy.numpy(), rtol=1e-10)


def test_softmax_focal_loss_gradient_stays_finite_at_certainty():
  logits = jnp.array([[60.0, 0.0, 0.0]])  # p_y rounds to 1 in float32
  for gamma in (0.5, 2.0):
    grad = jax.grad(lambda z, g=gamma: softmax_focal_loss(z, jnp.array([0]), gamma=g).sum())(
        logits)
    assert np.isfinite(np.asarray(grad)).all()
  with pytest.raises(ValueError, match="gamma must be >= 0"):
    softmax_focal_loss(logits, jnp.array([0]), gamma=-1.0)


def test_weighted_binary_cross_entropy_matches_torch_pos_weight_and_negative_weight():
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 4)) * 3
  labels = (rng.random((6, 4)) < 0.4).astype(np.float64)
  pos_weight = rng.uniform(0.5, 3.0, size=4)
  with jax.enable_x64(True):
    ours = lambda z: weighted_binary_cross_entropy(z, jnp.asarray(labels),
                                                   positive_weight=pos_weight)
    value = np.asarray(ours(jnp.asarray(logits)))
    grad = np.asarray(jax.grad(lambda z: ours(z).sum())(jnp.asarray(logits)))
    negative = np.asarray(weighted_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                                        negative_weight=2.0))
  z = torch.tensor(logits, requires_grad=True)
  reference = torch.nn.functional.binary_cross_entropy_with_logits(
      z, torch.tensor(labels), pos_weight=torch.tensor(pos_weight), reduction="none")
  reference.sum().backward()
  np.testing.assert_allclose(value, reference.detach().numpy(), rtol=1e-10)
  np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-9, atol=1e-12)
  # A negative-class weight lambda: torch's element `weight` = y + lambda (1 - y).
  expected = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.tensor(logits), torch.tensor(labels), weight=torch.tensor(labels + 2.0 * (1 - labels)),
      reduction="none")
  np.testing.assert_allclose(negative, expected.numpy(), rtol=1e-10)


def test_uncertainty_weighting_is_seed_004_equation_9_with_positive_sigmas():
  import torch  # pylint: disable=import-outside-toplevel
  raw = np.array([0.3, -1.2])
  loss_e, loss_v = 1.7, 0.4
  with jax.enable_x64(True):
    fn = lambda r, le, lv: uncertainty_weighted_loss([le, lv], r, scales=(1.0, 0.5))
    value = float(fn(jnp.asarray(raw), loss_e, loss_v))
    grads = jax.grad(fn, argnums=(0, 1, 2))(jnp.asarray(raw), loss_e, loss_v)
  r = torch.tensor(raw, requires_grad=True)
  le, lv = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (loss_e, loss_v))
  d1, d2 = torch.nn.functional.softplus(r) + 1e-6
  reference = le / d1**2 + lv / (2 * d2**2) + torch.log(1 + d1) + torch.log(1 + d2)
  reference.backward()
  assert value == pytest.approx(reference.item(), rel=1e-12)
  np.testing.assert_allclose(np.asarray(grads[0]), r.grad.numpy(), rtol=1e-10)
  assert float(grads[1]) == pytest.approx(le.grad.item()) and float(grads[2]) == pytest.approx(
      lv.grad.item())
  # Any raw value gives a finite loss and gradient (d >= 1e-6): the equation's d -> -1 pole and
  # d -> 0 are out of reach.
  far = jnp.array([-50.0])
  assert np.isfinite(float(uncertainty_weighted_loss([1.0], far)))
  assert float(jax.grad(lambda r: uncertainty_weighted_loss([1.0], r))(far)[0]) < 0
  with pytest.raises(ValueError, match="2 losses but raw_sigmas of shape"):
    uncertainty_weighted_loss([1.0, 2.0], jnp.zeros(3))
