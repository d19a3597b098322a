"""A Dense layer with a backward pass that XLA's CPU backend runs well.

y = x W + b over the last axis of x, for activations with many leading rows (batch x frames:
N = 38,400 at the YouTube-8M paper sizes). Forward pass, parameters and gradient values are
flax's `nn.Dense` ('kernel' [in, features], lecun normal; 'bias' [features], zeros), so
checkpoints and parameter trees are unchanged. The backward pass (`dense`, a custom VJP)
differs in how two of its gradients are written:

- db = sum_n g_n as ones^T g, a matrix-vector product. Autodiff's column reduction lowered to a
  reduce-window loop: 81 against 9-11 ms for a [38400, 1024] gradient.
- dW = x^T g contracts the N rows of both operands; XLA's CPU dot copies one of them into
  [width, N] order first. `_weight_gradient` orders the operands so that the copy is of the
  narrower one. With autodiff's gradients, the copy was of g, and once nothing else forced g
  into memory XLA fused g's whole computation (the GELU derivative) into that transposing copy,
  which then took 1.3 s instead of 0.05 s.

Measured on the 2-core AMD EPYC, float32 (`mmjax/projects/youtube8m/README.md`, "Speed"): the
paper-size MLP sublayer (38,400 x 256 -> 1024 -> 256, forward and backward) 803 -> 707 ms,
one encoder block 2.20 -> 1.97 s, the TM-L train step 17.5 -> 14.6 s (median of 4,
interleaved in one process).
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., Any]


def sum_leading_axes(x: jnp.ndarray) -> jnp.ndarray:
  """sum over every axis but the last, as a matrix-vector product: [..., C] -> [C],
  ones[N]^T x[N, C] with N the product of the leading axes, accumulated in float32 and
  returned in x's dtype."""
  rows = x.reshape(-1, x.shape[-1])
  ones = jnp.ones((rows.shape[0],), rows.dtype)
  return jnp.dot(ones, rows, preferred_element_type=jnp.float32).astype(x.dtype)


def _matmul(x, kernel):
  """x [..., in] @ kernel [in, out] -> [..., out], contracting x's last axis."""
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _weight_gradient(x2: jnp.ndarray, g2: jnp.ndarray) -> jnp.ndarray:
  """dW = x^T g: x2 [N, in], g2 [N, out] -> [in, out], contracting the N rows. XLA's CPU dot
  takes its left operand contracted over its major axis as it is and copies the right one into
  [columns, N] first: the smaller of the two goes right (written as (g^T x)^T when `in` is
  the smaller width), so the copy is of in x N rather than out x N floats or the reverse."""
  if x2.shape[1] <= g2.shape[1]:
    return jax.lax.dot_general(g2, x2, (((0,), (0,)), ((), ()))).T
  return jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))


@jax.custom_vjp
def dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """x W + b: x [..., in], kernel [in, out], bias [out] -> [..., out]. Gradients:
  dx = g W^T, dW = x^T g (`_weight_gradient`), db = sum_leading_axes(g)."""
  return _dense_forward(x, kernel, bias)


def _dense_forward(x, kernel, bias):
  return _matmul(x, kernel) + bias


def _dense_fwd(x, kernel, bias):
  return _dense_forward(x, kernel, bias), (x, kernel)


def _dense_bwd(residuals, g):
  x, kernel = residuals
  dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
  kernel_grad = _weight_gradient(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]))
  return dx, kernel_grad, sum_leading_axes(g)


dense.defvjp(_dense_fwd, _dense_bwd)


class Dense(nn.Module):
  """x [..., in] -> x W + b [..., features]: flax's `nn.Dense` parameters, initialisation and
  forward pass, with the backward pass of `dense` (module docstring); without a bias, a plain
  dot_general. `dtype`: the computation dtype (None: the inputs' and parameters' promoted
  dtype); parameters are stored in float32."""
  features: int
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = (self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return _matmul(x, kernel) if bias is None else dense(x, kernel, bias)
