"""The training loop: sharded jit step, periodic logging / eval / async checkpoints, exact resume.

train_and_evaluate(config, workdir) is what launch/train.py calls. Resume: if
<workdir>/checkpoints has a checkpoint, the state (params, optimizer, step, RNG, task state)
and the data iterator are restored and training continues to config.total_steps; the result is
bit-identical to an uninterrupted run. SIGTERM or SIGINT on any process (preemption) makes every
process save the same step and raise Preempted (mmjax.train.preemption). A fresh run starts
from Task.pretrained_params, then config.init_from.

The trainer reaches a task only through mmjax.tasks.Task (required members and optional hooks);
where each hook is called: docs/architecture.md.
"""

import collections
import logging
import math
import os
import time
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

from mmjax import parallel
from mmjax.tasks import get_task
from mmjax.train import init_from, snapshot
from mmjax.train.bad_records import BadRecordMonitor
from mmjax.train.checkpoint import Checkpointer, abstract_like
from mmjax.train.evaluate import (
  check_eval_splits,
  check_metric_name,
  eval_splits,
  evaluate_splits,
  metric_value,
)
from mmjax.train.metric_writer import MetricWriter
from mmjax.train.optimizer import build_optimizer, learning_rate_at
from mmjax.train.preemption import (
  PREEMPTED_EXIT_CODE,
  EvaluationPreempted,
  Preempted,
  PreemptionWatcher,
)
from mmjax.train.steps import (
  abstract_train_state,
  create_train_state,
  make_eval_step,
  make_plateau_observer,
  make_train_step,
)
from mmjax.train.validate import validate_config

log = logging.getLogger("mmjax")


class NonFiniteLossError(RuntimeError):
  """Raised when the training loss becomes NaN/inf; the last good checkpoint is kept."""


def setup_logging(level: int = logging.INFO) -> None:
  """Human-readable progress lines on stderr (only process 0 logs at INFO)."""
  if not log.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.propagate = False  # absl's root handler would print every line twice
  log.setLevel(level if jax.process_index() == 0 else logging.WARNING)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs each file it writes at INFO


def check_batch_size(name: str, batch_size: int, mesh) -> None:
  """The global batch must split evenly over processes and over the mesh's data axis."""
  divisor = math.lcm(jax.process_count(), mesh.shape["data"])
  if batch_size % divisor:
    fitting = [d for d in range(mesh.shape["data"], 0, -1)
               if batch_size % math.lcm(jax.process_count(), d) == 0 and mesh.size % d == 0]
    mesh_hint = (f", or give the data axis a size that divides it with --config.mesh (e.g. "
                 f"('data', {fitting[0]}) and the other axes taking the remaining devices)"
                 if fitting else "")
    raise ValueError(
        f"config.{name}={batch_size} must be divisible by {divisor} (processes "
        f"{jax.process_count()}, devices on the mesh's 'data' axis {mesh.shape['data']}): set "
        f"--config.{name} to a multiple of {divisor}{mesh_hint}"
        + (" (a resumed run also needs --allow_config_change to change the batch)"
           if name == "batch_size" else ""))


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def build_optimizer_for(config, task):
  """The optax chain of `config.optimizer` with the task's transforms and the frozen
  `config.init_from` subtrees (see mmjax.tasks.protocol for the order)."""
  return build_optimizer(config.optimizer, task.optimizer_transforms(),
                         init_from.frozen_subtrees(config))


def plateau_metric(config) -> str:
  """The metric the plateau rule watches ('<split>/<metric>'; default 'eval/loss')."""
  return config.optimizer.get("plateau_metric", "eval/loss")


def checkpointer_for(config, workdir: str, **kwargs) -> Checkpointer:
  """The run's Checkpointer (<workdir>/checkpoints; keep / best metric from the config)."""
  return Checkpointer(os.path.join(workdir, "checkpoints"),
                      save_every=kwargs.pop("save_every", config.checkpoint_every_steps),
                      keep=kwargs.pop("keep", config.keep_checkpoints),
                      best_metric=config.get("best_metric", ""),
                      best_mode=config.get("best_mode", "max"),
                      background=config.get("checkpoint_background", "auto"), **kwargs)


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False
                       ) -> Dict[str, float]:
  """Trains to config.total_steps (resuming if possible), evaluating every split of
  config.evals; returns the last evaluation's metrics as {'<split>/<metric>': value}.

  The first start writes <workdir>/config.json; a resume whose config changes a key that is not
  safe to change (mmjax.train.snapshot) refuses to start unless `allow_config_change`.
  SIGTERM/SIGINT: every process saves the same step, then Preempted is raised
  (mmjax.train.preemption; launch/train.py exits with PREEMPTED_EXIT_CODE)."""
  setup_logging()
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.mesh)
  check_batch_size("batch_size", config.batch_size, mesh)
  check_batch_size("eval_batch_size", config.eval_batch_size, mesh)
  with PreemptionWatcher(mesh) as watcher:
    return _train(config, workdir, mesh, watcher, allow_config_change)


def _train(config, workdir: str, mesh, watcher, allow_config_change: bool) -> Dict[str, float]:
  splits = eval_splits(config)
  check_metric_name("best_metric", config.get("best_metric", ""), splits)
  if config.optimizer.get("reduce_on_plateau", False):
    check_metric_name("optimizer.plateau_metric", plateau_metric(config), splits)
  log.info("devices: %d (%s), processes: %d, mesh: %s", jax.device_count(),
           jax.devices()[0].platform, jax.process_count(), dict(mesh.shape))
  task = get_task(config)
  task.prepare(log.info)
  check_eval_splits(task, splits, mesh, config.eval_batch_size)
  tx = build_optimizer_for(config, task)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  log.info("task %s: %s parameters", config.task, f"{num_params:,}")

  local_batch = config.batch_size // jax.process_count()
  train_data = task.train_dataset(local_batch, config.seed, jax.process_index(),
                                  jax.process_count())
  train_iter = iter(train_data)
  checkpointer = checkpointer_for(config, workdir)
  if checkpointer.latest_step() is not None:
    snapshot.check_resume(config, workdir, allow_config_change)
  else:
    snapshot.write(config, workdir)
  restored = checkpointer.restore_latest(abstract_like(state, shardings), train_iter)
  redo_evaluation = False
  if restored is not None:
    state = restored[1]
    redo_evaluation = checkpointer.pending_evaluation(restored[0])
    log.info("resumed from %s at step %d", checkpointer.directory, restored[0])
  else:
    state = _load_initial_weights(config, task, state, shardings)
  checkpointer.prepare_background(state)

  writer = MetricWriter(workdir, resume_step=int(jax.device_get(state.step)),
                        redo_evaluation=redo_evaluation)
  loop = _Loop(config, task, splits, mesh, shardings, checkpointer, writer, watcher,
               BadRecordMonitor(train_data, config.data),
               train_step=make_train_step(task, tx, mesh, shardings),
               eval_step=make_eval_step(task, mesh, shardings))
  try:
    return loop.run(state, train_iter, redo_evaluation)
  finally:
    checkpointer.wait()
    checkpointer.close()
    loop.writer.close()


def _load_initial_weights(config, task, state, shardings):
  """A fresh run starts from the task's pretrained weights, then config.init_from."""
  params = task.pretrained_params(state.params)
  if params is not None:
    log.info("initial weights: pretrained (%s)", type(task).__name__)
    params = jax.tree.map(lambda new, old: np.asarray(new, dtype=old.dtype), params,
                          state.params)
    state = state.replace(params=jax.device_put(params, shardings.params))
  model_state = task.pretrained_model_state(state.model_state)
  if model_state is not None:
    model_state = jax.tree.map(lambda new, old: np.asarray(new, dtype=old.dtype), model_state,
                               state.model_state)
    state = state.replace(model_state=jax.device_put(model_state, shardings.model_state))
  entries = init_from.entries(config)
  if entries:
    params, model_state = init_from.apply_init_from(entries, state.params, state.model_state)
    state = state.replace(params=params, model_state=model_state)
  return state


class _Loop:
  """The step loop (see train_and_evaluate). Per step: train; poll for preemption; log;
  evaluate every split, then the plateau rule and Task.after_evaluation see the metrics;
  finiteness check and checkpoint (with the metrics, which rank the best checkpoint); preemption
  or early-stop exit."""

  def __init__(self, config, task, splits, mesh, shardings, checkpointer, writer, watcher,
               bad_records, *, train_step, eval_step):
    self.config, self.task, self.splits, self.mesh = config, task, splits, mesh
    self.shardings, self.checkpointer, self.writer = shardings, checkpointer, writer
    self.watcher, self.bad_records = watcher, bad_records
    self.train_step, self.eval_step = train_step, eval_step
    self.observe_plateau = (make_plateau_observer(config.optimizer, shardings)
                            if config.optimizer.reduce_on_plateau else None)
    self.best_metric = config.get("best_metric", "")

  def run(self, state, train_iter, redo_evaluation: bool = False) -> Dict[str, float]:
    """Trains from state.step to config.total_steps. `redo_evaluation`: the restored step's
    evaluation was interrupted by a preemption; it runs first and the step is saved again."""
    config, checkpointer = self.config, self.checkpointer
    first_step, total = int(state.step), config.total_steps
    guard = _NonFiniteGuard(config.get("max_nonfinite_steps", 0), checkpointer)
    window = []  # device losses since the last log (no per-step host sync)
    window_start, window_steps = time.time(), 0
    metrics: Dict[str, float] = {}
    if redo_evaluation:
      log.info("step %d: its evaluation was interrupted by a preemption; evaluating it now",
               first_step)
      state, metrics, stop = self._evaluate_or_exit(state, first_step)
      checkpointer.save_again(first_step, state, train_iter, metrics)
      if stop:
        return metrics
    if first_step < total:
      log.info("training steps %d..%d, global batch %d", first_step + 1, total, config.batch_size)
    in_flight = collections.deque()  # losses of the dispatched steps not yet known finished
    for step in range(first_step + 1, total + 1):
      state, step_metrics = self.train_step(state, parallel.global_batch(next(train_iter),
                                                                         self.mesh))
      # Dispatch is asynchronous: the next batch is read and transferred while this step runs.
      # Waiting for the previous step bounds the device batches alive to two (the running
      # step's and the next one's), however fast the input pipeline is.
      in_flight.append(step_metrics["loss"])
      if len(in_flight) > 1:
        jax.block_until_ready(in_flight.popleft())
      window.append(step_metrics["loss"])
      guard.add(step, step_metrics["nonfinite"])
      window_steps += 1
      is_last = step == total
      preempted = self.watcher.poll() or checkpointer.reached_preemption(step)
      if step % config.log_every_steps == 0 or is_last:
        guard.check()
        self._log_train(step, step_metrics, window, guard.take_skipped(), window_steps,
                        time.time() - window_start, state.opt_state)
        window, window_start, window_steps = [], time.time(), 0
      eval_due = bool(config.eval_every_steps and step % config.eval_every_steps == 0) or is_last
      stop = evaluated = False
      if eval_due and not preempted:
        eval_start = time.time()
        state, metrics, stop = self._evaluate_or_exit(state, step, train_iter, guard)
        evaluated = True
        window_start += time.time() - eval_start  # throughput and ETA count training time only
      forced = is_last or preempted or stop or (evaluated and bool(self.best_metric))
      if step % config.checkpoint_every_steps == 0 or forced:
        guard.check()
        if checkpointer.save(step, state, train_iter, force=forced,
                             metrics=metrics if evaluated else None,
                             pending_evaluation=preempted and eval_due):
          log.info("checkpoint: saving step %d (async)", step)
      if preempted:
        self._exit_preempted(step)
      if stop:
        log.warning("stopped by the task: checkpoint of step %d saved; exiting", step)
        checkpointer.wait()
        return metrics
    if first_step >= total and not redo_evaluation:
      log.info("already trained to step %d; evaluating", total)
      metrics = self._evaluate_or_exit(state, total)[1]
    return metrics

  def _evaluate_or_exit(self, state, step: int, train_iter=None, guard=None):
    """evaluate(); when a preemption is agreed during it, saves `state` as step `step` with a
    pending evaluation (when `train_iter` is given; else the checkpoint exists) and raises
    Preempted."""
    try:
      return self.evaluate(state, step)
    except EvaluationPreempted:
      if train_iter is not None:
        guard.check()
        self.checkpointer.save(step, state, train_iter, force=True, pending_evaluation=True)
        log.info("checkpoint: saving step %d (async), its evaluation to be redone", step)
      self._exit_preempted(step)

  def _exit_preempted(self, step: int):
    log.warning("preemption signal: checkpoint of step %d saved; exiting with status %d "
                "(requeue to resume)", step, PREEMPTED_EXIT_CODE)
    self.checkpointer.wait()
    raise Preempted(step, self.checkpointer.directory)

  def _log_train(self, step, step_metrics, window, skipped, window_steps, elapsed,
                 opt_state) -> None:
    summary = {k: float(v) for k, v in step_metrics.items() if k != "nonfinite"}
    losses = jnp.stack(window)
    finite = jnp.isfinite(losses)
    summary["loss"] = float(jnp.sum(jnp.where(finite, losses, 0.0)) /
                            jnp.maximum(jnp.sum(finite), 1)) if bool(jnp.any(finite)) else math.nan
    summary["skipped_steps"] = skipped
    summary.update(self.bad_records.take_window())
    summary["examples_per_sec"] = window_steps * self.config.batch_size / max(elapsed, 1e-9)
    summary["learning_rate"] = learning_rate_at(self.config.optimizer, opt_state)
    log.info("step %d/%d | loss %.4f | %.1f examples/s | ETA %s", step, self.config.total_steps,
             summary["loss"], summary["examples_per_sec"],
             _format_eta((self.config.total_steps - step) * elapsed / max(window_steps, 1)))
    self.writer.write(step, "train", summary)

  def evaluate(self, state, step: int):
    """Every split; then the plateau rule and the task's after-evaluation hook (before the save:
    a resumed run must see the same state). Returns (state, flat metrics, stop). Raises
    EvaluationPreempted when a preemption is agreed between two eval batches."""
    metrics = evaluate_splits(self.task, self.eval_step, state, self.mesh, self.splits,
                              self.writer, step, self.config.eval_batch_size,
                              after_batch=self.watcher.check)
    if self.best_metric:
      metric_value(metrics, self.best_metric, "best_metric")
    if self.observe_plateau is not None:
      value = metric_value(metrics, plateau_metric(self.config), "optimizer.plateau_metric")
      state = self.observe_plateau(state, value)
    by_split = {split.name: {k[len(split.name) + 1:]: v for k, v in metrics.items()
                             if k.startswith(split.name + "/")} for split in self.splits}
    host_task_state = jax.tree.map(np.asarray, jax.device_get(state.task_state))
    decision = self.task.after_evaluation(step, by_split, host_task_state)
    if decision.task_state is not None:
      state = state.replace(task_state=place_like(decision.task_state, state.task_state,
                                                  self.shardings.task_state))
      log.info("step %d: task state updated after evaluation", step)
    if decision.stop:
      log.warning("step %d: the task stops training%s", step,
                  f" ({decision.reason})" if decision.reason else "")
    return state, metrics, bool(decision.stop)


def place_like(new_tree, old_tree, shardings):
  """`new_tree` (host or device arrays) placed with `shardings`, checked against `old_tree`'s
  structure, shapes and dtypes (ValueError naming the first differing leaf)."""
  if jax.tree.structure(new_tree) != jax.tree.structure(old_tree):
    raise ValueError(f"Task.after_evaluation returned a task state of structure "
                     f"{jax.tree.structure(new_tree)}; expected {jax.tree.structure(old_tree)}")
  def place(path, new, old, sharding):
    new = np.asarray(new)
    if new.shape != old.shape or new.dtype != old.dtype:
      raise ValueError(f"Task.after_evaluation: task_state {parallel.path_to_str(path)} is "
                       f"{new.shape} {new.dtype}; expected {old.shape} {old.dtype}")
    return jax.device_put(new, sharding)
  return jax.tree_util.tree_map_with_path(place, new_tree, old_tree, shardings)


class _NonFiniteGuard:
  """Host side of the train step's non-finite guard. Collects the per-step flags (device
  scalars, read only at log and checkpoint steps: no per-step host sync) and raises
  NonFiniteLossError once more than `max_in_a_row` consecutive steps were skipped. Skipped
  steps changed nothing in the state, so every checkpoint holds finite values only."""

  def __init__(self, max_in_a_row: int, checkpointer):
    self.max_in_a_row, self.checkpointer = max_in_a_row, checkpointer
    self.unchecked = []  # (step, device flag)
    self.in_a_row, self.skipped = 0, 0

  def add(self, step: int, flag) -> None:
    self.unchecked.append((step, flag))

  def check(self) -> None:
    if not self.unchecked:
      return
    flags = np.asarray(jax.device_get(jnp.stack([flag for _, flag in self.unchecked])))
    for (step, _), bad in zip(self.unchecked, flags):
      if not bad:
        self.in_a_row = 0
        continue
      self.in_a_row += 1
      self.skipped += 1
      if self.in_a_row > self.max_in_a_row:
        self.checkpointer.wait()
        latest = self.checkpointer.latest_step()
        last_good = ("there is no checkpoint yet" if latest is None else
                     f"the last good checkpoint is step {latest} in {self.checkpointer.directory}")
        raise NonFiniteLossError(
            f"step {step}: the loss, a gradient or an updated parameter is NaN/inf "
            f"({self.in_a_row} step(s) in a row, config.max_nonfinite_steps="
            f"{self.max_in_a_row}); those steps changed nothing, and training stopped without "
            f"saving; {last_good}. Lower config.optimizer.learning_rate or set "
            "config.optimizer.grad_clip_norm.")
      log.warning("step %d: non-finite loss or gradients: step skipped (%d in a row; "
                  "config.max_nonfinite_steps=%d)", step, self.in_a_row, self.max_in_a_row)
    self.unchecked = []

  def take_skipped(self) -> int:
    """Skipped steps since the last call (the 'skipped_steps' of a metrics.jsonl train row)."""
    skipped, self.skipped = self.skipped, 0
    return skipped


def restore_for_eval(config, workdir: str, checkpoint="latest"):
  """Builds the task and mesh from `config` and restores checkpoint `checkpoint` ('latest',
  'best' or a step number) from <workdir>/checkpoints onto the current devices. Returns (task,
  state, shardings, mesh, step)."""
  validate_config(config)
  mesh = parallel.make_mesh(config.mesh)
  task = get_task(config)
  task.prepare(log.info)
  tx = build_optimizer_for(config, task)
  abstract, shardings = abstract_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  checkpointer = checkpointer_for(config, workdir, save_every=1, keep=1_000_000,
                                  cleanup_tmp=False)
  try:
    if str(checkpoint or "latest") == "latest":  # falls back past unreadable steps
      restored = checkpointer.restore_latest(abstract_like(abstract, shardings))
      if restored is None:
        raise FileNotFoundError(f"no checkpoint under {checkpointer.directory}")
      step, state = restored
    else:
      step = checkpointer.resolve_step(checkpoint)
      state = checkpointer.restore(step, abstract_like(abstract, shardings))
  finally:
    checkpointer.close()
  return task, state, shardings, mesh, step


def evaluate_checkpoint(config, workdir: str, checkpoint="latest") -> Dict[str, float]:
  """What launch/eval.py runs: restore ('latest', 'best' or a step), evaluate every split of
  config.evals, append to metrics.jsonl; returns {'<split>/<metric>': value}. `config` None:
  the run's snapshot (<workdir>/config.json); a given config that differs from the snapshot in
  keys that are not safe to change is used, with a warning listing them."""
  setup_logging()
  if config is None:
    config = snapshot.read(workdir)
    log.info("config: the run's snapshot %s", snapshot.path(workdir))
  elif os.path.isfile(snapshot.path(workdir)):
    unsafe = [d for d in snapshot.differences(snapshot.read(workdir), config)
              if not snapshot.is_safe(d[0])]
    if unsafe:
      log.warning("evaluating with a config that differs from the run's snapshot: %s",
                  "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in unsafe))
  task, state, shardings, mesh, step = restore_for_eval(config, workdir, checkpoint)
  check_batch_size("eval_batch_size", config.eval_batch_size, mesh)
  log.info("restored step %d onto %d devices (checkpoint %r)", step, jax.device_count(), checkpoint)
  writer = MetricWriter(workdir)
  try:
    return evaluate_splits(task, make_eval_step(task, mesh, shardings), state, mesh,
                           eval_splits(config), writer, step, config.eval_batch_size)
  finally:
    writer.close()
