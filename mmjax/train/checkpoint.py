"""Orbax checkpoints of the train state and the grain iterator state.

Layout: <workdir>/checkpoints/<step>/{state,data}/ written by one ocp.CheckpointManager with two
items (MaxText's pattern): 'state' (StandardSave of the TrainState pytree) and 'data'
(grain.checkpoint.CheckpointSave of each process's iterator). Saves are asynchronous and atomic
(Orbax writes to a temporary directory and renames on commit; a run killed mid-save leaves the
previous checkpoint as the latest). The last `keep` checkpoints are kept.

Restoring takes an abstract state of jax.ShapeDtypeStructs carrying NamedShardings of the
*current* mesh, so a checkpoint restores onto a different device count than it was written with.
"""

import os
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with the given shardings, the restore target for Orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class Checkpointer:
  """Saves/restores (TrainState, data iterator) under `directory`."""

  def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
    if save_every <= 0:
      raise ValueError(f"config.checkpoint_every_steps must be > 0, got {save_every}")
    if keep <= 0:
      raise ValueError(f"config.keep_checkpoints must be > 0, got {keep}")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, max_to_keep=keep,
        enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    """Starts an async save when `step` is on the interval (or `force`); returns whether it did."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None) -> Any:
    """Restores the state at `step` into `abstract_state`'s shapes/shardings; restores the data
    iterator in place when given. Raises FileNotFoundError naming the directory if `step` is
    absent."""
    if step not in self.all_steps():
      raise FileNotFoundError(f"{self.directory}: no checkpoint for step {step}; available: "
                              f"{self.all_steps()}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except ValueError as e:
      raise ValueError(
          f"{self.directory}/{step} does not match the train state of the current config (a "
          "changed model, optimizer or data setting?): start a new --workdir or restore with the "
          f"config it was trained with. Orbax: {str(e)[:2000]}") from e
    return restored["state"]

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a preemption notice (SIGTERM to a jax.distributed job) has
    been seen by any of them at this step."""
    return self._manager.reached_preemption(step)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
