"""mmjax.nn layers against numpy transcriptions of their equations, and padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn import ContextGating, NetVLAD, TransformerEncoder, l2_normalize, masked_mean


def _numpy_netvlad(x, mask, w, centers, bn_scale, bn_bias, eps=1e-5):
  """a = softmax(BN(x W)) over valid frames, V_k = sum_t a_tk (x_t - c_k), intra+global L2."""
  valid = mask > 0
  logits = x @ w  # [B, T, K]
  flat = logits[valid]
  mean, var = flat.mean(0), flat.var(0)
  logits = (logits - mean) / np.sqrt(var + eps) * bn_scale + bn_bias
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a = a / a.sum(-1, keepdims=True) * mask[..., None]
  vlad = np.einsum("btk,btkd->bkd", a, x[:, :, None, :] - centers[None, None])
  vlad = vlad / np.maximum(np.linalg.norm(vlad, axis=-1, keepdims=True), 1e-6)
  vlad = vlad.reshape(len(x), -1)
  return vlad / np.linalg.norm(vlad, axis=-1, keepdims=True)


def _random_batch(rng, batch=3, frames=7, dim=5):
  x = rng.normal(size=(batch, frames, dim)).astype(np.float32)
  lengths = np.array([frames, 4, 1])[:batch]
  mask = (np.arange(frames)[None] < lengths[:, None]).astype(np.float32)
  return x, mask


def test_netvlad_matches_numpy_equation():
  rng = np.random.default_rng(0)
  x, mask = _random_batch(rng)
  layer = NetVLAD(num_clusters=4)
  variables = layer.init(jax.random.PRNGKey(0), x, mask, train=False)
  out, _ = layer.apply(variables, x, mask, train=True, mutable=["batch_stats"])
  p = variables["params"]
  expected = _numpy_netvlad(x, mask, np.asarray(p["assignment"]["kernel"]),
                            np.asarray(p["centers"]), np.asarray(p["assignment_bn"]["scale"]),
                            np.asarray(p["assignment_bn"]["bias"]))
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)
  assert out.shape == (3, 4 * 5)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_netvlad_ignores_padding(train):
  rng = np.random.default_rng(1)
  x, mask = _random_batch(rng)
  layer = NetVLAD(num_clusters=3)
  variables = layer.init(jax.random.PRNGKey(0), x, mask, train=False)
  garbage = np.where(mask[..., None] > 0, x, 100.0 * rng.normal(size=x.shape)).astype(np.float32)
  longer = np.concatenate([x, rng.normal(size=(3, 5, 5)).astype(np.float32)], axis=1)
  longer_mask = np.concatenate([mask, np.zeros((3, 5), np.float32)], axis=1)
  run = lambda a, m: layer.apply(variables, a, m, train=train, mutable=["batch_stats"])[0]
  base = run(x, mask)
  np.testing.assert_allclose(run(garbage, mask), base, atol=1e-5)
  np.testing.assert_allclose(run(longer, longer_mask), base, atol=1e-5)


def test_context_gating_equation():
  rng = np.random.default_rng(2)
  h = rng.normal(size=(6, 4)).astype(np.float32)
  layer = ContextGating()
  variables = layer.init(jax.random.PRNGKey(0), h, train=False)
  out = layer.apply(variables, h, train=False)  # running stats: mean 0, var 1
  w = np.asarray(variables["params"]["gate"]["kernel"])
  gate = 1 / (1 + np.exp(-(h @ w / np.sqrt(1 + 1e-5))))
  np.testing.assert_allclose(np.asarray(out), h * gate, atol=1e-5)


def test_masked_mean_and_l2_normalize():
  x = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], np.float32)
  mask = np.array([[1, 1, 0]], np.float32)
  np.testing.assert_allclose(masked_mean(x, mask), [[2.0, 3.0]])
  np.testing.assert_allclose(masked_mean(x, np.zeros_like(mask)), [[0.0, 0.0]])
  np.testing.assert_allclose(l2_normalize(jnp.array([3.0, 4.0])), [0.6, 0.8], rtol=1e-6)


def test_transformer_padding_never_leaks():
  rng = np.random.default_rng(3)
  x, mask = _random_batch(rng, frames=6, dim=8)
  encoder = TransformerEncoder(d_model=16, num_heads=2, num_layers=2, mlp_dim=32, max_frames=10)
  variables = encoder.init(jax.random.PRNGKey(0), x, mask, train=False)
  pooled = lambda a, m: masked_mean(encoder.apply(variables, a, m, train=False), m)
  garbage = np.where(mask[..., None] > 0, x, 50.0).astype(np.float32)
  longer = np.concatenate([x, np.ones((3, 4, 8), np.float32)], axis=1)
  longer_mask = np.concatenate([mask, np.zeros((3, 4), np.float32)], axis=1)
  np.testing.assert_allclose(pooled(garbage, mask), pooled(x, mask), atol=1e-5)
  np.testing.assert_allclose(pooled(longer, longer_mask), pooled(x, mask), atol=1e-5)
  with pytest.raises(ValueError, match="max_frames"):
    encoder.apply(variables, np.zeros((1, 11, 8), np.float32), np.ones((1, 11)), train=False)
