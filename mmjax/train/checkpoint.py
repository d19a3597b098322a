"""Orbax checkpoints of the train state and the grain iterator state.

Layout: <workdir>/checkpoints/<step>/{state,data}/ written by one ocp.CheckpointManager with two
items (MaxText's pattern): 'state' (StandardSave of the TrainState pytree) and 'data'
(grain.checkpoint.CheckpointSave of each process's iterator). Saves are asynchronous and atomic
(Orbax writes to a temporary directory and renames on commit; a run killed mid-save leaves the
previous checkpoint as the latest).

Kept: the last `keep` checkpoints (LatestN) and, with a headline metric, the best checkpoint by
that metric (BestN, n = 1): the metrics passed to `save` are stored with the step, so the best
survives any later run of the same workdir.

Restoring takes an abstract state of jax.ShapeDtypeStructs carrying NamedShardings of the
*current* mesh, so a checkpoint restores onto a different device count than it was written with.
A checkpoint whose arrays are laid out as an earlier release wrote them is read to host memory,
upgraded (mmjax.train.checkpoint_upgrades) and placed onto the mesh.
"""

import json
import logging
import os
import re
import time
from typing import Any, Dict, Mapping, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy

from mmjax.parallel import path_to_str
from mmjax.train import background_save, checkpoint_upgrades

BEST_MODES = ("max", "min")
PENDING_EVALUATION = "pending_evaluation"  # item of a step saved during its evaluation
log = logging.getLogger("mmjax")


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with the given shardings, the restore target for Orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def flat_paths(tree) -> Dict[str, Any]:
  """{'/'-joined path: leaf} of a pytree (e.g. 'params/rgb_tower/input_projection/kernel')."""
  return {path_to_str(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def item_metadata(item_directory: str) -> Dict:
  """The saved tree of a 'state' item directory, with ArrayMetadata leaves (.shape, .dtype)."""
  metadata = ocp.PyTreeCheckpointer().metadata(item_directory).item_metadata
  return metadata.tree if hasattr(metadata, "tree") else metadata


def read_arrays(item_directory: str, keys=None) -> Dict:
  """The saved 'state' tree (or only its top-level `keys`) as host numpy arrays, whatever mesh
  it was written from. Reads only the requested subtrees."""
  tree = item_metadata(item_directory)
  if keys is not None:
    tree = {key: tree[key] for key in keys if key in tree}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ocp.PyTreeCheckpointer().restore(
      item_directory, args=ocp.args.PyTreeRestore(item=tree, restore_args=restore_args,
                                                  partial_restore=True))


_DATA_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")  # grain's per-process iterator state


def remap_iterator_states(states, count: int):
  """The iterator state of every one of `count` processes continuing the global stream where the
  saved processes' iterators (`states`, one per saved process, in process order) stopped.

  The training pipelines (mmjax.data.sharded_stream) cut one global stream into global batches,
  process p reading the p-th block of each; a state is {'next_index': n}, the number of stream
  positions the process consumed. With m saved processes at n each, the global position is
  n * m, and each of `count` new processes resumes at n * m / count: when no records were
  skipped, the global batches that follow are exactly those of an uninterrupted run. Processes
  that skipped bad records can stand at different n; then the furthest one decides (nothing is
  read twice; a few records are skipped). Equal n after skips is reported exact although the
  blocks may then be shifted by the skipped count. Returns (state, exact). ValueError when a
  state has another form or the position does not divide over `count` processes."""
  if not all(isinstance(s, dict) and set(s) == {"next_index"} and isinstance(s["next_index"], int)
             for s in states):
    raise ValueError(f"cannot map the iterator states of {len(states)} processes onto {count} "
                     f"(expected {{'next_index': int}} per process, got {states[:2]}); resume "
                     f"with {len(states)} processes")
  positions = [s["next_index"] for s in states]
  exact = len(set(positions)) == 1
  consumed = max(positions) * len(states)
  if exact and consumed % count:
    raise ValueError(f"{len(states)} processes consumed {consumed} records, which does not split "
                     f"over {count} processes; resume with a process count that divides the "
                     "global batch size")
  return {"next_index": -(-consumed // count)}, exact


class MismatchError(ValueError):
  """A checkpoint that is readable but does not match the current config's train state."""


class CorruptCheckpointError(RuntimeError):
  """A checkpoint step directory whose files cannot be read (truncated, missing, half-written)."""

  def __init__(self, directory: str, step: int, cause: BaseException):
    super().__init__(f"checkpoint {directory}/{step} is unreadable: {type(cause).__name__}: "
                     f"{str(cause)[:500]}")
    self.step = step


class _StepIndex:
  """Step lookup shared by the writer and the reader: needs `_manager`, `directory`,
  `best_metric` and `best_mode`."""

  _manager: ocp.CheckpointManager
  directory: str
  best_metric: str
  best_mode: str

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The kept step with the best `best_metric` (None if no kept step has it)."""
    if not self.best_metric:
      raise FileNotFoundError(f"{self.directory}: no best checkpoint is tracked (the run's "
                              "config.best_metric was empty)")
    scored = []
    for step in self.all_steps():
      metrics = self._manager.metrics(step) or {}
      if self.best_metric in metrics:
        scored.append((float(metrics[self.best_metric]), step))
    if not scored:
      return None
    return (max if self.best_mode == "max" else min)(scored)[1]

  def resolve_step(self, which) -> int:
    """'latest', 'best' or a step number (int or digits) -> an existing step; FileNotFoundError
    naming the directory and the available steps otherwise."""
    which = "latest" if which is None else str(which)
    if which == "latest":
      step = self.latest_step()
    elif which == "best":
      step = self.best_step()
    elif which.isdigit():
      step = int(which)
      step = step if step in self.all_steps() else None
    else:
      raise ValueError(f"checkpoint {which!r}: expected 'latest', 'best' or a step number")
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no {which!r} checkpoint; available steps: "
                              f"{self.all_steps()}")
    return step


class CheckpointReader(_StepIndex):
  """Read-only view of another run's <workdir>/checkpoints (config.init_from): steps, the best
  step by the metric that run tracked (recorded in best_metric.json), arrays on the host."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    if not os.path.isdir(self.directory):
      raise FileNotFoundError(f"{self.directory}: no such checkpoint directory")
    self.best_metric, self.best_mode = _read_best_metric(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                             save_interval_steps=0))

  def read_arrays(self, step: int, keys=None) -> Dict:
    """read_arrays of this directory's step `step` (host numpy)."""
    return read_arrays(os.path.join(self.directory, str(step), "state"), keys)


BEST_METRIC_FILE = "best_metric.json"


def _read_best_metric(directory: str):
  path = os.path.join(directory, BEST_METRIC_FILE)
  if not os.path.isfile(path):
    return "", "max"
  with open(path) as f:
    record = json.load(f)
  return record["metric"], record["mode"]


def _write_best_metric(directory: str, metric: str, mode: str) -> None:
  """Records which metric ranks the best checkpoint (process 0; atomic rename)."""
  if jax.process_index() != 0 or _read_best_metric(directory) == (metric, mode):
    return
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{BEST_METRIC_FILE}.tmp")
  with open(tmp, "w") as f:
    json.dump({"metric": metric, "mode": mode}, f)
  os.replace(tmp, os.path.join(directory, BEST_METRIC_FILE))


class Checkpointer(_StepIndex):
  """Saves/restores (TrainState, data iterator) under `directory`.

  best_metric: '' (keep only the latest `keep`) or the name of a metric passed to `save`
    (e.g. 'eval/gap'); the best checkpoint by it, in `best_mode` ('max' or 'min'), is kept too.
  cleanup_tmp: delete leftover temporary directories of interrupted saves at start (training
    runs; False for readers such as launch/eval.py, which may run next to a live run).
  background: config.checkpoint_background ('auto', 'on', 'off'): saves write from a host
    snapshot of the state with idle-priority writer threads (mmjax.train.background_save),
    once `prepare_background(state)` has decided for the run's state.
  """

  def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True,
               best_metric: str = "", best_mode: str = "max", cleanup_tmp: bool = True,
               background: str = "off"):
    background_save.check_setting(background)
    self.background = background
    self._snapshot: Optional[background_save.StateSnapshot] = None
    self._idle_writers: Optional[background_save.IdleWriterThreads] = None
    if save_every <= 0:
      raise ValueError(f"config.checkpoint_every_steps must be > 0, got {save_every}")
    if keep <= 0:
      raise ValueError(f"config.keep_checkpoints must be > 0, got {keep}")
    if best_mode not in BEST_MODES:
      raise ValueError(f"config.best_mode={best_mode!r}; expected one of {BEST_MODES}")
    self.directory = os.path.abspath(directory)
    self.best_metric, self.best_mode = best_metric, best_mode
    policies = [preservation_policy.LatestN(n=keep)]
    if best_metric:
      policies.append(preservation_policy.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, enable_async_checkpointing=async_save, create=True,
        # Leftovers of an interrupted save never block a restart (the training run's
        # checkpointer; an evaluation next to a live run must not delete its save in progress).
        cleanup_tmp_directories=cleanup_tmp,
        preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
        # best_fn makes Orbax store the metrics passed to save(); which steps are kept is
        # decided by the preservation policy above alone.
        best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
        best_mode=best_mode)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    if best_metric:
      _write_best_metric(self.directory, best_metric, best_mode)

  def prepare_background(self, state) -> bool:
    """Decides `background` for the run's train state (before the first save) and, when on,
    reserves the snapshot (a state on CPU devices) and the idle-priority writers. Returns
    whether background saving is on."""
    if not background_save.enabled(self.background, state):
      return False
    if background_save.on_cpu(state):
      self._snapshot = background_save.StateSnapshot()
      self._snapshot.reserve(state)
    self._idle_writers = background_save.IdleWriterThreads()
    return True

  def save(self, step: int, state, data_iterator=None, *, force: bool = False,
           metrics: Optional[Mapping[str, float]] = None,
           pending_evaluation: bool = False) -> bool:
    """Starts an async save when `step` is on the interval (or `force`); returns whether it did.
    `metrics` ({name: float}) are stored with the step and rank it for the best checkpoint.
    `pending_evaluation`: the step's evaluation was interrupted (a preemption); the resumed run
    evaluates it first (see `pending_evaluation`) and saves the step again with its metrics.
    With a snapshot (`prepare_background`), the save waits for the previous one, then writes
    from the snapshot refilled with `state`'s values, so `state` may be donated at once."""
    if not (force or self._manager.should_save(step)):
      return False
    if self._snapshot is not None:
      self._manager.wait_until_finished()  # the previous save reads the snapshot until done
      state = self._snapshot.take(state)
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if pending_evaluation:
      items[PENDING_EVALUATION] = ocp.args.JsonSave({"step": int(step)})
    metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force,
                               metrics=metrics)
    if saved and self._idle_writers is not None:
      self._idle_writers.watch(self._manager.is_saving_in_progress)
    return saved

  def pending_evaluation(self, step: int) -> bool:
    """Whether checkpoint `step` was saved by a preemption during its evaluation."""
    return os.path.isdir(os.path.join(self.directory, str(step), PENDING_EVALUATION))

  def save_again(self, step: int, state, data_iterator, metrics) -> None:
    """Replaces checkpoint `step` (saved with a pending evaluation) by `state` with `metrics`;
    waits for the save. A run killed between the delete and the save resumes from the previous
    kept checkpoint (with keep_checkpoints=1 there is none: it starts afresh)."""
    self.wait()
    self._manager.delete(step)
    self.save(step, state, data_iterator, force=True, metrics=metrics)
    self.wait()

  def restore(self, step: int, abstract_state, data_iterator=None) -> Any:
    """Restores the state at `step` into `abstract_state`'s shapes/shardings; restores the data
    iterator in place when given. Raises FileNotFoundError naming the directory if `step` is
    absent, ValueError naming the differing parameter paths if the checkpoint does not match
    the current config."""
    if step not in self.all_steps():
      raise FileNotFoundError(f"{self.directory}: no checkpoint for step {step}; available: "
                              f"{self.all_steps()}")
    item_directory = os.path.join(self.directory, str(step), "state")
    try:
      saved = flat_paths(item_metadata(item_directory))
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(self.directory, step, e) from e
    expected = flat_paths(abstract_state)
    try:
      if set(saved) == set(expected):
        for path, target in expected.items():  # a config change, not a corrupt checkpoint
          if (tuple(saved[path].shape), np.dtype(saved[path].dtype)) != (
              tuple(target.shape), np.dtype(target.dtype)):
            raise self._mismatch(step, f"{path}: checkpoint {tuple(saved[path].shape)} "
                                 f"{saved[path].dtype}, current {tuple(target.shape)} "
                                 f"{target.dtype}")
        state = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))["state"]
      else:
        state = self._restore_upgraded(step, item_directory, abstract_state)
      if data_iterator is not None:
        self._restore_data(step, data_iterator)
      return state
    except MismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Paths, shapes and dtypes matched: what fails now is the files themselves.
      raise CorruptCheckpointError(self.directory, step, e) from e

  def restore_latest(self, abstract_state, data_iterator=None):
    """(step, state) of the newest readable checkpoint, or None when there is none at all.

    A step directory that cannot be read (truncated or missing files, a half-written save) is
    moved aside to <workdir>/corrupt_checkpoints/<step>-<time> (not deleted) with a warning,
    and the next older step is tried. A checkpoint that does not match the config raises
    MismatchError at once (no fallback: the config, not the file, is wrong). Raises
    CorruptCheckpointError when checkpoints existed but none was readable, and on every later
    call while all of them are still moved aside (a fresh start would overwrite the run)."""
    steps = sorted(self.all_steps(), reverse=True)
    if not steps and os.path.isdir(self.corrupt_directory) and os.listdir(self.corrupt_directory):
      raise CorruptCheckpointError(self.directory, "latest", RuntimeError(
          f"every checkpoint of this run was moved to {self.corrupt_directory} as unreadable; "
          "starting afresh would overwrite the run: move a step back into "
          f"{self.directory} or delete {self.corrupt_directory} to start afresh"))
    for step in steps:
      try:
        return step, self.restore(step, abstract_state, data_iterator)
      except CorruptCheckpointError as e:
        moved = self.move_aside(step)
        log.warning("%s; moved it to %s; falling back to the previous checkpoint", e, moved)
    if steps:
      raise CorruptCheckpointError(self.directory, steps[-1], RuntimeError(
          f"none of the steps {sorted(steps)} was readable; they were moved to "
          f"{self.corrupt_directory}"))
    return None

  @property
  def corrupt_directory(self) -> str:
    return os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")

  def move_aside(self, step: int) -> str:
    """Moves <directory>/<step> to corrupt_directory (process 0; all processes then agree on
    the steps that remain). Returns the new path."""
    target = os.path.join(self.corrupt_directory, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(self.corrupt_directory, exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"mmjax_move_aside_{step}")
    self._manager.reload()
    return target

  def _restore_data(self, step: int, data_iterator) -> None:
    """Restores the data iterator of checkpoint `step`: this process's saved state, or, when
    the checkpoint was written by another number of processes, the states of all of them mapped
    onto this process (`remap_iterator_states`, with a warning)."""
    data_directory = os.path.join(self.directory, str(step), "data")
    count = jax.process_count()
    saved_counts = sorted({int(m.group(2)) for m in map(_DATA_FILE.fullmatch,
                                                         os.listdir(data_directory)) if m})
    if not saved_counts or count in saved_counts:
      self._manager.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(data_iterator)))
      return
    saved = saved_counts[-1]
    states = []
    for i in range(saved):
      with open(os.path.join(data_directory, f"process_{i}-of-{saved}.json")) as f:
        states.append(json.load(f))
    try:
      state, exact = remap_iterator_states(states, count)
    except ValueError as e:
      raise self._mismatch(step, f"data iterator: {e}") from e
    data_iterator.set_state(state)
    if hasattr(data_iterator, "start_prefetch"):
      data_iterator.start_prefetch()
    log.warning("checkpoint %s/%d was written by %d processes, this run has %d: the data "
                "iterator continues from the same global position%s", self.directory, step,
                saved, count, "" if exact else (
                    " as nearly as possible (the processes had skipped different numbers of "
                    "bad records, so a few records are skipped or repeated)"))

  def _restore_upgraded(self, step: int, item_directory: str, abstract_state):
    """Host read -> layout upgrades -> placement onto `abstract_state`'s shardings."""
    arrays, applied = checkpoint_upgrades.upgrade(flat_paths(read_arrays(item_directory)))
    expected = flat_paths(abstract_state)
    missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or unexpected:
      raise self._mismatch(step, f"missing in the checkpoint: {missing[:10]}"
                           f"{' ...' if len(missing) > 10 else ''}; not in the current state: "
                           f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    for path, target in expected.items():
      if tuple(arrays[path].shape) != tuple(target.shape):
        raise self._mismatch(step, f"{path}: checkpoint shape {tuple(arrays[path].shape)}, "
                             f"current {tuple(target.shape)}")
    for name in applied:
      log.info("checkpoint %s/%d: upgraded from %s", self.directory, step, name)

    def place(path, target):
      return jax.device_put(np.asarray(arrays[path_to_str(path)], dtype=target.dtype),
                            target.sharding)
    return jax.tree_util.tree_map_with_path(place, abstract_state)

  def _mismatch(self, step: int, detail: str) -> "MismatchError":
    return MismatchError(
        f"{self.directory}/{step} does not match the train state of the current config (a "
        "changed model, optimizer or data setting?): start a new --workdir or restore with the "
        f"config it was trained with. {detail}")

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a preemption notice (SIGTERM to a jax.distributed job) has
    been seen by any of them at this step."""
    return self._manager.reached_preemption(step)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
