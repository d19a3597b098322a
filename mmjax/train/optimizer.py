"""Optimizer from `config.optimizer`, as one optax chain, and the plateau rule.

  config.optimizer.gradient_transforms -> the task's gradient transforms
  -> clip_by_global_norm (optional) -> adam/adamw/sgd(learning_rate schedule)
  -> scale_by_plateau (optional)
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

Learning-rate schedules (`learning_rate_schedule`; keys of config.optimizer):

  schedule                  'constant' (default) | 'cosine' | 'linear'
  warmup_steps              0: linear warmup from 0 to learning_rate over the first
                            warmup_steps updates (the first update has rate 0), then:
  decay_steps               'cosine' / 'linear': the decay from learning_rate to
                            end_learning_rate_factor * learning_rate takes decay_steps updates
                            after the warmup (the end value is reached at update
                            warmup_steps + decay_steps and kept after it); must be > 0 for them.
                            'constant': must stay 0 (a decay length with no decaying schedule
                            is a config error, not silently ignored).
  end_learning_rate_factor  0.0, in [0, 1]: the final rate as a fraction of learning_rate.

The schedule is a function of the optimizer's own update count (optax.ScaleByScheduleState in
the optimizer state, so it is checkpointed with it), not of config.total_steps: to decay over
the whole run set decay_steps = total_steps - warmup_steps. Extending total_steps on a resume
does not stretch the schedule. The plateau scale (above) multiplies the scheduled rate. With
'constant' and no warmup the optimizer gets the float learning_rate itself, so its state has the
layout of earlier releases (checkpoints stay compatible); any other schedule adds a
ScaleByScheduleState to it (a resume that changes config.optimizer.schedule is refused by the
config snapshot and would not match the checkpoint).

Learning-rate rewinding (Renda et al. 2020: keep the trained weights, replay the original
schedule from its start): a PNAO round / retraining run starts from trained weights via
config.init_from with the same optimizer config: its step counter starts at 0, so the schedule
replays from its start (learning-rate rewinding); resuming a killed run continues the schedule
where it stopped (the count is restored with the optimizer state).

The trainer logs `learning_rate` in each train row of metrics.jsonl / TensorBoard
(`learning_rate_at`: the rate of the last applied update, times the plateau scale).
"""

import importlib
import numbers
import re
from typing import NamedTuple, Optional, Sequence, Union

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

SCHEDULES = ("constant", "cosine", "linear")


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


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _schedule_settings(opt_config):
  """(learning_rate, schedule, warmup_steps, decay_steps, end factor) of `opt_config`, checked
  (ValueError naming the key). Keys absent from an older config take their defaults."""
  learning_rate = opt_config.learning_rate
  if not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
    raise ValueError(f"config.optimizer.learning_rate must be > 0, got {learning_rate}")
  name = opt_config.get("schedule", "constant")
  warmup = opt_config.get("warmup_steps", 0)
  decay = opt_config.get("decay_steps", 0)
  factor = opt_config.get("end_learning_rate_factor", 0.0)
  if name not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={name!r}; expected one of {list(SCHEDULES)}")
  if not _is_int(warmup) or warmup < 0:
    raise ValueError(f"config.optimizer.warmup_steps={warmup!r}: must be an integer >= 0")
  if name == "constant":
    if not _is_int(decay) or decay != 0:
      raise ValueError(f"config.optimizer.decay_steps={decay!r} with config.optimizer.schedule="
                       "'constant': a constant rate does not decay; set schedule to 'cosine' or "
                       "'linear', or decay_steps to 0")
  elif not _is_int(decay) or decay <= 0:
    raise ValueError(f"config.optimizer.decay_steps={decay!r}: schedule {name!r} needs an "
                     "integer > 0 (the updates of the decay after the warmup, e.g. "
                     "config.total_steps - config.optimizer.warmup_steps)")
  if (isinstance(factor, bool) or not isinstance(factor, numbers.Real)
      or not 0.0 <= factor <= 1.0):
    raise ValueError(f"config.optimizer.end_learning_rate_factor={factor!r}: must be in [0, 1]")
  return float(learning_rate), name, int(warmup), int(decay), float(factor)


def learning_rate_schedule(opt_config) -> optax.Schedule:
  """The learning rate as a function of the update count (0 = the first update), from
  config.optimizer's learning_rate, schedule, warmup_steps, decay_steps and
  end_learning_rate_factor (module docstring). ValueError naming a bad key."""
  learning_rate, name, warmup, decay, factor = _schedule_settings(opt_config)
  if name == "cosine":
    main = optax.cosine_decay_schedule(learning_rate, decay, alpha=factor)
  elif name == "linear":
    main = optax.linear_schedule(learning_rate, factor * learning_rate, decay)
  else:
    main = optax.constant_schedule(learning_rate)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), main],
                              [warmup])


def _optimizer_learning_rate(opt_config) -> Union[float, optax.Schedule]:
  """What the optimizer gets: the float itself for 'constant' without warmup (the optimizer
  state keeps its earlier layout), else the schedule."""
  learning_rate, name, warmup, _, _ = _schedule_settings(opt_config)
  if name == "constant" and warmup == 0:
    return learning_rate
  return learning_rate_schedule(opt_config)


def learning_rate_at(opt_config, opt_state) -> float:
  """The learning rate of the last update applied to `opt_state` (the state build_optimizer's
  chain made), times the plateau scale when config.optimizer.reduce_on_plateau is on: what the
  trainer logs as 'learning_rate'. The update count is read from the first
  optax.ScaleByScheduleState in the state (the optimizer's, unless a custom gradient transform
  before it holds one: every such count advances once per applied update), so steps skipped by
  the non-finite guard, which leave the state unchanged, do not advance the schedule here
  either. Reads device scalars: call it at logging steps, not every step."""
  rate = _optimizer_learning_rate(opt_config)
  wanted = (optax.ScaleByScheduleState, PlateauState)
  nodes = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, wanted))
           if isinstance(x, wanted)]
  if callable(rate):
    counts = [n.count for n in nodes if isinstance(n, optax.ScaleByScheduleState)]
    if not counts:
      raise ValueError("learning_rate_at: no optax.ScaleByScheduleState in the optimizer state "
                       "(was it built from another config.optimizer?)")
    count = int(jax.device_get(counts[0]))
    rate = float(rate(max(count - 1, 0)))
  if opt_config.get("reduce_on_plateau", False):
    scales = [n.scale for n in nodes if isinstance(n, PlateauState)]
    if scales:
      rate *= float(jax.device_get(scales[0]))
  return float(rate)


def build_optimizer(opt_config, task_transforms: Optional[OptimizerTransforms] = None,
                    frozen_subtrees: Sequence[str] = ()) -> optax.GradientTransformation:
  """Returns the optax chain for `config.optimizer` (ValueError naming a bad key):

    config gradient_transforms -> task gradient transforms -> clip_by_global_norm (optional)
    -> adam/adamw/sgd(learning_rate or its schedule) -> scale_by_plateau (optional)
    -> config weight_transforms -> task weight transforms,

  wrapped in `freeze(chain, opt_config.trainable, frozen_subtrees)` when that regex is set or
  some init_from subtrees are frozen. Absent parts leave no trace in the optimizer state, so
  a config that uses none of the extension points has the state layout of earlier releases.
  """
  if opt_config.name not in _OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={opt_config.name!r}; expected one of "
                     f"{sorted(_OPTIMIZERS)}")
  learning_rate = _optimizer_learning_rate(opt_config)  # checks the schedule keys
  parts = [transform_from_spec(spec, f"config.optimizer.gradient_transforms[{i}]")
           for i, spec in enumerate(opt_config.get("gradient_transforms", ()) or ())]
  task_transforms = task_transforms or OptimizerTransforms()
  parts.extend(task_transforms.gradient)
  if opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(_OPTIMIZERS[opt_config.name](learning_rate))
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
