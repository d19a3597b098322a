"""The train state: one pytree holding everything a resumed run needs from the device side."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step: [] int32; params / model_state (e.g. {'batch_stats': ...}, {} if none) / opt_state:
  pytrees; rng: [2] uint32 base key (per-step keys are fold_in(rng, step)); task_state: the
  task's own pytree (Task.init_task_state: blending weights, masks, an EMA; {} if none)."""
  step: jnp.ndarray
  params: Any
  model_state: Any
  opt_state: Any
  rng: jnp.ndarray
  task_state: Any = flax.struct.field(default_factory=dict)


def step_rng(state: TrainState) -> jax.Array:
  """Dropout key of the current step: the same on every resume and any device count."""
  return jax.random.fold_in(state.rng, state.step)
