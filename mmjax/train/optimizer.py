"""Optimizer from `config.optimizer`, as one optax chain.

  clip_by_global_norm (optional) -> adam/adamw/sgd(learning_rate) -> reduce_on_plateau (optional)
  -> extra transforms (pruning masks, freezing, ...: passed in by the caller, unknown here).

Reduce-on-plateau is optax.contrib.reduce_on_plateau: the loss passed to `update(..., value=loss)`
is averaged over `plateau_window_steps` steps; when that average has not improved for
`plateau_patience` windows the update scale is multiplied by `plateau_factor` (seed 001 uses
patience 2 on its validation set; here the monitored value is the windowed training loss, so the
transform stays a pure part of the optimizer state and checkpoints with it).
"""

from typing import Sequence

import optax

_OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
}


def build_optimizer(opt_config, extra: Sequence[optax.GradientTransformation] = ()
                    ) -> optax.GradientTransformationExtraArgs:
  """Returns the chain; its `update` takes `value=loss` when reduce_on_plateau is on."""
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
    parts.append(optax.contrib.reduce_on_plateau(
        factor=opt_config.plateau_factor, patience=opt_config.plateau_patience,
        accumulation_size=opt_config.plateau_window_steps))
  parts.extend(extra)
  return optax.chain(*parts)
