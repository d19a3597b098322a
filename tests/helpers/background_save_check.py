"""Run by tests/test_background_save.py in a subprocess (SCHED_IDLE cannot be undone without
CAP_SYS_NICE, so the test process's own TensorStore threads are left alone).

Saves a state with Checkpointer(background='on'), overwrites the live state's buffers at once
with a donating step, saves again, and prints one JSON line: whether the restored checkpoints
hold the values of the states saved (not the overwritten ones), whether the second save reused
the snapshot's buffers, and the scheduling policy of TensorStore's pool threads once the
saves are done. Usage: background_save_check.py DIRECTORY
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.train import background_save
from mmjax.train.checkpoint import Checkpointer, abstract_like


def writer_policies():
  """{'ts_pool_worker': the sorted scheduling policies of TensorStore's worker threads}."""
  return {"ts_pool_worker": sorted({os.sched_getscheduler(tid)
                                    for tid in background_save.writer_thread_ids()})}


def main(directory):
  overwrite = jax.jit(lambda tree: jax.tree.map(lambda x: x * 0 - 1, tree), donate_argnums=0)
  advance = jax.jit(lambda tree: jax.tree.map(lambda x: x + 1, tree), donate_argnums=0)
  state = {"params": {"w": jnp.arange(3 << 20, dtype=jnp.float32).reshape(3, -1)},
           "step": jnp.int32(1)}
  target = abstract_like(state, jax.tree.map(lambda x: x.sharding, state))
  checkpointer = Checkpointer(directory, save_every=1, keep=3, background="on")
  on = checkpointer.prepare_background(state)
  snapshot = checkpointer._snapshot  # pylint: disable=protected-access
  expected, pointers = [], []
  for step in (1, 2):
    expected.append(jax.tree.map(np.array, state))
    assert checkpointer.save(step, state)
    pointers.append(snapshot._snapshot["params"]["w"].unsafe_buffer_pointer())  # pylint: disable=protected-access
    live_pointer = state["params"]["w"].unsafe_buffer_pointer()
    state = advance(overwrite(state))  # the live buffers are donated while the save runs
  checkpointer.wait()
  policies = writer_policies()  # the threads that wrote (a restore may start new ones)
  restored = [jax.tree.map(np.asarray, checkpointer.restore(step, target)) for step in (1, 2)]
  checkpointer.close()
  print(json.dumps({
      "on": on,
      "restored_equal": [all(np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(got), jax.tree.leaves(want))) for got, want in zip(restored, expected)],
      "snapshot_reused": pointers[0] == pointers[1],
      "snapshot_is_not_live": pointers[-1] != live_pointer,
      "policies": policies, "sched_idle": os.SCHED_IDLE}))


if __name__ == "__main__":
  main(sys.argv[1])
