"""mmjax.nn.dense.Dense: flax's nn.Dense parameters and forward pass, gradients against numpy's
x^T g, g W^T and sum_n g, and the bias gradient written as a product (not a column sum)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.dense import Dense, sum_leading_axes


def _loss(module, variables, x, target):
  """sum(y * target): its gradient with respect to y is `target` (g below)."""
  return jnp.sum(module.apply(variables, x) * target)


@pytest.mark.parametrize("shape,features", [((3, 5, 7), 4), ((6, 9), 16), ((2, 3, 4, 8), 8)])
def test_dense_matches_flax_and_numpy(shape, features):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  target = rng.normal(size=shape[:-1] + (features,)).astype(np.float32)
  ours, flax_dense = Dense(features), nn.Dense(features)
  variables = ours.init(jax.random.PRNGKey(1), x)
  # Same parameter tree and initial values as nn.Dense from the same key.
  jax.tree.map(np.testing.assert_array_equal, variables, flax_dense.init(jax.random.PRNGKey(1), x))
  variables = {"params": {"kernel": variables["params"]["kernel"],
                          "bias": jnp.asarray(rng.normal(size=features), jnp.float32)}}
  np.testing.assert_array_equal(ours.apply(variables, x), flax_dense.apply(variables, x))

  grads, x_grad = jax.grad(lambda v, x: _loss(ours, v, x, target), argnums=(0, 1))(variables, x)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  g = target.reshape(-1, features).astype(np.float64)
  rows = x.reshape(-1, shape[-1]).astype(np.float64)
  np.testing.assert_allclose(grads["params"]["kernel"], rows.T @ g, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads["params"]["bias"], g.sum(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(x_grad, (g @ kernel.T).reshape(shape), rtol=1e-5, atol=1e-5)


def test_dense_without_bias_and_in_a_computation_dtype():
  x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  layer = Dense(3, use_bias=False)
  variables = layer.init(jax.random.PRNGKey(0), x)
  assert set(variables["params"]) == {"kernel"}
  np.testing.assert_array_equal(layer.apply(variables, x),
                                nn.Dense(3, use_bias=False).apply(variables, x))
  half = Dense(3, dtype=jnp.bfloat16)
  variables = half.init(jax.random.PRNGKey(0), x)
  assert variables["params"]["kernel"].dtype == jnp.float32
  y = half.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  grads = jax.grad(lambda v: jnp.sum(half.apply(v, x).astype(jnp.float32)))(variables)
  assert grads["params"]["bias"].dtype == jnp.float32
  np.testing.assert_allclose(grads["params"]["bias"], np.full(3, 4.0))


def test_bias_gradient_is_a_product_not_a_column_sum():
  """The backward pass is three dot_generals (dx, dW and db = ones^T g, which XLA's CPU backend
  runs ~7x faster than its reduce-window lowering of a column sum) and no reduce_sum."""
  x = jnp.ones((8, 30, 16))
  layer = Dense(32)
  variables = layer.init(jax.random.PRNGKey(0), x)
  _, backward = jax.vjp(lambda v, x: layer.apply(v, x), variables, x)
  jaxpr = str(jax.make_jaxpr(backward)(jnp.ones((8, 30, 32))))
  assert "reduce_sum" not in jaxpr
  assert jaxpr.count("dot_general") == 3
  np.testing.assert_allclose(sum_leading_axes(jnp.arange(24.0).reshape(2, 3, 4)),
                             np.arange(24.0).reshape(6, 4).sum(0))
