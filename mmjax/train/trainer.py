"""The training loop: sharded jit step, periodic logging / eval / async checkpoints, exact resume.

train_and_evaluate(config, workdir) is what launch/train.py calls. Resume: if
<workdir>/checkpoints has a checkpoint, the state (params, optimizer, step, RNG) and the data
iterator are restored and training continues to config.total_steps; the result is bit-identical
to an uninterrupted run. SIGTERM (preemption) saves a checkpoint at the next step and returns.
"""

import logging
import math
import os
import signal
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

from mmjax import parallel
from mmjax.tasks import get_task
from mmjax.train.checkpoint import Checkpointer, abstract_like
from mmjax.train.evaluate import evaluate
from mmjax.train.metric_writer import MetricWriter
from mmjax.train.optimizer import build_optimizer
from mmjax.train.steps import (abstract_train_state, create_train_state, make_eval_step,
                               make_plateau_observer, make_train_step)

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
    raise ValueError(f"config.{name}={batch_size} must be divisible by {divisor} (processes "
                     f"{jax.process_count()}, data-axis devices {mesh.shape['data']})")


class _Preemption:
  """Turns SIGTERM into a flag the loop polls (restores the previous handler on exit)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._previous = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _all_finite(losses) -> bool:
  return bool(jnp.all(jnp.isfinite(jnp.stack(losses)))) if losses else True


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Trains to config.total_steps (resuming if possible), evaluates, returns the last eval
  metrics."""
  setup_logging()
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.mesh)
  check_batch_size("batch_size", config.batch_size, mesh)
  check_batch_size("eval_batch_size", config.eval_batch_size, mesh)
  log.info("devices: %d (%s), processes: %d, mesh: %s", jax.device_count(),
           jax.devices()[0].platform, jax.process_count(), dict(mesh.shape))
  task = get_task(config)
  task.prepare(log.info)
  tx = build_optimizer(config.optimizer)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  log.info("task %s: %s parameters", config.task, f"{num_params:,}")

  local_batch = config.batch_size // jax.process_count()
  train_iter = iter(task.train_dataset(local_batch, config.seed, jax.process_index(),
                                       jax.process_count()))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              save_every=config.checkpoint_every_steps,
                              keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:
    state = checkpointer.restore(latest, abstract_like(state, shardings), train_iter)
    log.info("resumed from %s at step %d", checkpointer.directory, latest)
  else:
    state = _load_pretrained(task, state, shardings)

  train_step = make_train_step(task, tx, mesh, shardings)
  eval_step = make_eval_step(task, mesh, shardings)
  observe_plateau = (make_plateau_observer(config.optimizer, shardings)
                     if config.optimizer.reduce_on_plateau else None)
  writer = MetricWriter(workdir)
  eval_metrics: Dict[str, float] = {}
  try:
    with _Preemption() as preemption:
      eval_metrics = _loop(config, task, state, train_iter, train_step, eval_step,
                           observe_plateau, mesh, checkpointer, writer, preemption)
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return eval_metrics


def _load_pretrained(task, state, shardings):
  """A fresh run starts from the task's pretrained weights, if it has any."""
  params = task.pretrained_params(state.params) if hasattr(task, "pretrained_params") else None
  if params is None:
    return state
  log.info("initial weights: pretrained (%s)", type(task).__name__)
  params = jax.tree.map(lambda new, old: np.asarray(new, dtype=old.dtype), params, state.params)
  return state.replace(params=jax.device_put(params, shardings.params))


def _loop(config, task, state, train_iter, train_step, eval_step, observe_plateau, mesh,
          checkpointer, writer, preemption) -> Dict[str, float]:
  """The step loop (see train_and_evaluate). Per step: train; log; evaluate (then the plateau
  rule sees the eval loss); finiteness check and checkpoint; preemption exit."""
  first_step = int(state.step)
  total = config.total_steps
  pending = []  # device losses since the last finiteness check (no per-step host sync)
  window_start, window_steps = time.time(), 0
  eval_metrics: Dict[str, float] = {}
  if first_step < total:
    log.info("training steps %d..%d, global batch %d", first_step + 1, total, config.batch_size)
  for step in range(first_step + 1, total + 1):
    batch = parallel.global_batch(next(train_iter), mesh)
    state, metrics = train_step(state, batch)
    pending.append(metrics["loss"])
    window_steps += 1
    is_last = step == total
    preempted = preemption.requested or checkpointer.reached_preemption(step)
    if step % config.log_every_steps == 0 or is_last:
      _check_finite(pending, step, checkpointer)
      elapsed = time.time() - window_start
      summary = {k: float(v) for k, v in metrics.items()}
      summary["loss"] = float(jnp.mean(jnp.stack(pending)))
      summary["examples_per_sec"] = window_steps * config.batch_size / max(elapsed, 1e-9)
      log.info("step %d/%d | loss %.4f | %.1f examples/s | ETA %s", step, total,
               summary["loss"], summary["examples_per_sec"],
               _format_eta((total - step) * elapsed / max(window_steps, 1)))
      writer.write(step, "train", summary)
      pending, window_start, window_steps = [], time.time(), 0
    if (config.eval_every_steps and step % config.eval_every_steps == 0) or is_last:
      eval_start = time.time()
      eval_metrics = _evaluate_and_log(config, task, eval_step, state, mesh, writer, step)
      window_start += time.time() - eval_start  # throughput and ETA count training time only
      if observe_plateau is not None:  # before the save: a resumed run must see the same state
        state = observe_plateau(state, eval_metrics["loss"])
    if step % config.checkpoint_every_steps == 0 or is_last or preempted:
      _check_finite(pending, step, checkpointer)
      pending = []
      if checkpointer.save(step, state, train_iter, force=is_last or preempted):
        log.info("checkpoint: saving step %d (async)", step)
    if preempted:
      log.warning("preemption signal: checkpoint of step %d saved; exiting", step)
      checkpointer.wait()
      return eval_metrics
  if first_step >= total:
    log.info("already trained to step %d; evaluating", total)
    eval_metrics = _evaluate_and_log(config, task, eval_step, state, mesh, writer, total)
  return eval_metrics


def _check_finite(pending, step: int, checkpointer) -> None:
  if not _all_finite(pending):
    checkpointer.wait()
    raise NonFiniteLossError(
        f"training loss became NaN/inf at or before step {step}; stopped without saving. The "
        f"last good checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}. "
        "Lower config.optimizer.learning_rate or set config.optimizer.grad_clip_norm.")


def _evaluate_and_log(config, task, eval_step, state, mesh, writer, step: int
                      ) -> Dict[str, float]:
  metrics = evaluate(task, eval_step, state, mesh, batch_size=config.eval_batch_size)
  log.info("eval step %d: %s", step, format_metrics(metrics))
  writer.write(step, "eval", metrics)
  return metrics


def format_metrics(metrics: Dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in metrics.items())


def restore_for_eval(config, workdir: str, step: Optional[int] = None):
  """Builds the task and mesh from `config` and restores the state of `step` (latest if None)
  from <workdir>/checkpoints onto the current devices. Returns (task, state, shardings, mesh,
  step)."""
  mesh = parallel.make_mesh(config.mesh)
  task = get_task(config)
  task.prepare(log.info)
  tx = build_optimizer(config.optimizer)
  abstract, shardings = abstract_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=1_000_000)
  step = checkpointer.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {checkpointer.directory}")
  state = checkpointer.restore(step, abstract_like(abstract, shardings))
  checkpointer.close()
  return task, state, shardings, mesh, step


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> Dict[str, float]:
  """What launch/eval.py runs: restore, evaluate the eval split, append to metrics.jsonl."""
  setup_logging()
  task, state, shardings, mesh, step = restore_for_eval(config, workdir, step)
  check_batch_size("eval_batch_size", config.eval_batch_size, mesh)
  log.info("restored step %d onto %d devices", step, jax.device_count())
  writer = MetricWriter(workdir)
  metrics = _evaluate_and_log(config, task, make_eval_step(task, mesh, shardings), state, mesh,
                              writer, step)
  writer.close()
  return metrics
