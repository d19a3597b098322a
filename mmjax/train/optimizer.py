"""Optimizer from `config.optimizer`, as one optax chain, and the plateau rule.

  clip_by_global_norm (optional) -> adam/adamw/sgd(learning_rate) -> scale_by_plateau (optional)
  -> extra transforms (pruning masks, freezing, ...: passed in by the caller, unknown here).

Reduce-on-plateau as in seed 001 (PyTorch's ReduceLROnPlateau on the validation loss, patience 2):
`scale_by_plateau` multiplies every update by a scale kept in the optimizer state (so it is
checkpointed with it); after each evaluation the trainer calls `observe_plateau(opt_state,
eval_loss, ...)`, which applies the rule: if loss < best * (1 - threshold) the loss becomes the
best and the count of bad evaluations resets, otherwise the count grows; once it exceeds
`patience` the scale is multiplied by `factor` (not below `min_scale`) and the count resets.
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

_OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
}


class PlateauState(NamedTuple):
  """scale: [] float32 multiplier of the updates; best: [] best monitored value so far;
  num_bad: [] int32 evaluations since the last improvement."""
  scale: jnp.ndarray
  best: jnp.ndarray
  num_bad: jnp.ndarray


def scale_by_plateau() -> optax.GradientTransformation:
  """Scales updates by PlateauState.scale (changed only by observe_plateau)."""
  def init(params):
    del params
    return PlateauState(jnp.ones((), jnp.float32), jnp.full((), jnp.inf, jnp.float32),
                        jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: (state.scale * u).astype(u.dtype), updates), state

  return optax.GradientTransformation(init, update)


def observe_plateau(opt_state, value, *, patience: int, factor: float, threshold: float = 1e-4,
                    min_scale: float = 0.0):
  """Applies the plateau rule (module docstring) to every PlateauState inside `opt_state`."""
  def step(state: PlateauState) -> PlateauState:
    improved = value < state.best * (1.0 - threshold)
    num_bad = jnp.where(improved, 0, state.num_bad + 1)
    reduce = num_bad > patience
    scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), state.scale)
    return PlateauState(scale.astype(jnp.float32),
                        jnp.where(improved, value, state.best).astype(jnp.float32),
                        jnp.where(reduce, 0, num_bad).astype(jnp.int32))

  is_plateau = lambda x: isinstance(x, PlateauState)
  return jax.tree.map(lambda x: step(x) if is_plateau(x) else x, opt_state, is_leaf=is_plateau)


def build_optimizer(opt_config, extra: Sequence[optax.GradientTransformation] = ()
                    ) -> optax.GradientTransformation:
  """Returns the optax chain for `config.optimizer` (ValueError naming a bad key)."""
  if opt_config.name not in _OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={opt_config.name!r}; expected one of "
                     f"{sorted(_OPTIMIZERS)}")
  if opt_config.learning_rate <= 0:
    raise ValueError(f"config.optimizer.learning_rate must be > 0, got {opt_config.learning_rate}")
  parts = []
  if opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(_OPTIMIZERS[opt_config.name](opt_config.learning_rate))
  if opt_config.reduce_on_plateau:
    parts.append(scale_by_plateau())
  parts.extend(extra)
  return optax.chain(*parts)
