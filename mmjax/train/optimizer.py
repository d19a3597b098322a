"""Optimizer from `config.optimizer`, as one optax chain, and the plateau rule.

  config.optimizer.gradient_transforms -> the task's gradient transforms
  -> clip_by_global_norm (optional) -> adam/adamw/sgd(learning_rate) -> scale_by_plateau (optional)
  -> config.optimizer.weight_transforms -> the task's weight transforms (pruning masks, ...),
  all inside `freeze` when some parameters are frozen.

The keys of `config.optimizer` and their defaults: `optimizer_config` in configs/defaults.py.

Reduce-on-plateau as in seed 001 (PyTorch's ReduceLROnPlateau on the validation loss, patience 2):
`scale_by_plateau` multiplies every update by a scale kept in the optimizer state (so it is
checkpointed with it); after each evaluation the trainer calls `observe_plateau(opt_state,
value, ...)` with the metric named by config.optimizer.plateau_metric ('<split>/<metric>',
default 'eval/loss'), which applies the rule: if loss < best * (1 - threshold) the loss becomes the
best and the count of bad evaluations resets, otherwise the count grows; once it exceeds
`patience` the scale is multiplied by `factor` (not below `min_scale`) and the count resets.

Freezing (`config.optimizer.trainable`, e.g. r".*prompts.*" for prompt learning with a frozen
backbone): when the regex is non-empty, the whole chain above is wrapped in
`freeze(chain, trainable)`. Parameters whose '/'-joined path (mmjax.parallel.path_to_str, e.g.
'text_model/prompts') fully matches the regex get the chain's updates; all others get zero
updates and have no optimizer state (no Adam moments, no weight decay, and gradient clipping sees
only the trainable gradients). The zero update is -0.0, the exact identity of IEEE addition
(p + -0.0 == p bit for bit, even for p = -0.0, which p + 0.0 would turn into +0.0), so frozen
parameters stay bit-identical under optax.apply_updates. A regex matching no parameter raises
ValueError at `tx.init`, when the parameters are known.
"""

import importlib
import re
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from mmjax.parallel import path_to_str
from mmjax.tasks.protocol import OptimizerTransforms

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


def _set_to_negative_zero() -> optax.GradientTransformation:
  """Stateless: every update becomes -0.0 (p + -0.0 == p bitwise for every float p)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: jnp.full_like(u, -0.0), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def freeze(inner: optax.GradientTransformation, trainable: str = "",
           frozen_subtrees: Sequence[str] = ()) -> optax.GradientTransformation:
  """Applies `inner` only to the trainable parameters: those whose path fully matches the
  regex `trainable` (every parameter when it is empty) and lies under none of
  `frozen_subtrees` ('/'-joined path prefixes, e.g. 'audio_tower' from a frozen
  config.init_from entry).

  Built on optax.multi_transform: label 'trainable' -> `inner` (its state covers only those
  leaves; frozen positions hold optax.MaskedNode), label 'frozen' -> a stateless transform whose
  updates are -0.0, so frozen parameters stay bit-identical after optax.apply_updates (see the
  module docstring). Paths are '/'-joined keys of the params tree, e.g. 'text_model/prompts'.

  Raises:
    ValueError (at init/update) naming `config.optimizer.trainable` if no parameter matches,
    or naming the frozen subtrees if they leave nothing to train.
  """
  pattern = re.compile(trainable) if trainable else None
  prefixes = tuple(p.strip("/") for p in frozen_subtrees)

  def is_trainable(name: str) -> bool:
    if pattern is not None and not pattern.fullmatch(name):
      return False
    return not any(name == p or name.startswith(p + "/") for p in prefixes)

  def labels(params):
    names = [path_to_str(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if not any(is_trainable(name) for name in names):
      shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
      raise ValueError(f"config.optimizer.trainable={trainable!r} with frozen init_from "
                       f"subtrees {list(prefixes)} leaves no parameter to train (paths look "
                       f"like: {shown})")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "trainable" if is_trainable(path_to_str(path)) else "frozen", params)

  return optax.multi_transform({"trainable": inner, "frozen": _set_to_negative_zero()}, labels)


def transform_from_spec(spec, key: str) -> optax.GradientTransformation:
  """One optax transform from a config entry (name, kwargs): a bare name is a function of optax
  (e.g. ('add_noise', {'eta': 0.01, 'gamma': 0.55, 'seed': 0})), a dotted one a function in any
  importable module (e.g. ('my_project.transforms.mask', {})). Errors name `key`."""
  try:
    name, kwargs = spec
  except (TypeError, ValueError) as e:
    raise ValueError(f"{key}: expected (name, kwargs) pairs, got {spec!r}") from e
  if "." in name:
    module_name, _, attr = name.rpartition(".")
    try:
      factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"{key}: cannot import {name!r}: {e}") from e
  else:
    factory = getattr(optax, name, None)
    if factory is None:
      raise ValueError(f"{key}: optax has no {name!r}; use an optax function name or a dotted "
                       "path to a function returning a GradientTransformation")
  transform = factory(**dict(kwargs or {}))
  if not isinstance(transform, (optax.GradientTransformation,
                                optax.GradientTransformationExtraArgs)):
    raise ValueError(f"{key}: {name}(**{dict(kwargs or {})}) returned {type(transform).__name__}, "
                     "not an optax GradientTransformation")
  return transform


def build_optimizer(opt_config, task_transforms: Optional[OptimizerTransforms] = None,
                    frozen_subtrees: Sequence[str] = ()) -> optax.GradientTransformation:
  """Returns the optax chain for `config.optimizer` (ValueError naming a bad key):

    config gradient_transforms -> task gradient transforms -> clip_by_global_norm (optional)
    -> adam/adamw/sgd(learning_rate) -> scale_by_plateau (optional)
    -> config weight_transforms -> task weight transforms,

  wrapped in `freeze(chain, opt_config.trainable, frozen_subtrees)` when that regex is set or
  some init_from subtrees are frozen. Absent parts leave no trace in the optimizer state, so
  a config that uses none of the extension points has the state layout of earlier releases.
  """
  if opt_config.name not in _OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={opt_config.name!r}; expected one of "
                     f"{sorted(_OPTIMIZERS)}")
  if opt_config.learning_rate <= 0:
    raise ValueError(f"config.optimizer.learning_rate must be > 0, got {opt_config.learning_rate}")
  parts = [transform_from_spec(spec, f"config.optimizer.gradient_transforms[{i}]")
           for i, spec in enumerate(opt_config.get("gradient_transforms", ()) or ())]
  task_transforms = task_transforms or OptimizerTransforms()
  parts.extend(task_transforms.gradient)
  if opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(_OPTIMIZERS[opt_config.name](opt_config.learning_rate))
  if opt_config.reduce_on_plateau:
    parts.append(scale_by_plateau())
  parts.extend(transform_from_spec(spec, f"config.optimizer.weight_transforms[{i}]")
               for i, spec in enumerate(opt_config.get("weight_transforms", ()) or ()))
  parts.extend(task_transforms.weight)
  tx = optax.chain(*parts)
  trainable = opt_config.get("trainable", "") or ""
  if trainable:
    try:
      re.compile(trainable)
    except re.error as e:
      raise ValueError(f"config.optimizer.trainable={trainable!r} is not a valid regex: "
                       f"{e}") from e
  if trainable or frozen_subtrees:
    tx = freeze(tx, trainable, frozen_subtrees)
  return tx
