"""config.checkpoint_background (mmjax.train.background_save): when it is on, the snapshot the
save writes from, the idle-priority writer threads, and checkpoints that hold the saved values
although the live state is donated while they are written."""

import json
import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import runs

from mmjax.train import background_save
from mmjax.train.checkpoint import Checkpointer


def _state(size):
  return {"params": {"w": jnp.ones((size,), jnp.float32)}, "step": jnp.int32(0)}


def test_settings_auto_on_off_and_a_bad_value_named(tmp_path):
  small, large = _state(1024), _state(background_save.AUTO_MIN_BYTES // 4)
  assert background_save.local_bytes(large) == background_save.AUTO_MIN_BYTES + 4
  assert background_save.on_cpu(small)
  assert not background_save.enabled("auto", small)
  assert background_save.enabled("auto", large)
  assert background_save.enabled("on", small) and not background_save.enabled("off", large)
  with pytest.raises(ValueError, match="config.checkpoint_background='sometimes'"):
    background_save.enabled("sometimes", small)
  with pytest.raises(ValueError, match="config.checkpoint_background='yes'"):
    Checkpointer(str(tmp_path), save_every=1, keep=1, background="yes")
  checkpointer = Checkpointer(str(tmp_path), save_every=1, keep=1, background="off")
  assert not checkpointer.prepare_background(large)
  checkpointer.close()


def test_snapshot_holds_the_values_in_the_same_buffers_and_follows_a_layout_change():
  snapshot = background_save.StateSnapshot()
  state = {"a": jnp.arange(1000, dtype=jnp.float32), "b": jnp.int32(7)}
  snapshot.reserve(state)
  first = snapshot.take(state)
  pointer = first["a"].unsafe_buffer_pointer()
  assert pointer != state["a"].unsafe_buffer_pointer()
  state = jax.tree.map(lambda x: x * 3, state)
  second = snapshot.take(state)
  assert second["a"].unsafe_buffer_pointer() == pointer  # refilled in place: no new memory
  assert first["a"].is_deleted()  # donated
  np.testing.assert_array_equal(second["a"], np.arange(1000) * 3)
  assert int(second["b"]) == 21
  wider = {"a": jnp.zeros((2000,), jnp.float32), "b": jnp.int32(1)}
  third = snapshot.take(wider)  # another layout: reserved anew
  assert third["a"].shape == (2000,) and int(third["b"]) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_saves_from_the_snapshot_at_idle_priority_while_the_live_state_is_donated(tmp_path):
  helper = os.path.join(runs.ROOT, "tests", "helpers", "background_save_check.py")
  result = subprocess.run([sys.executable, helper, str(tmp_path / "checkpoints")],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["on"]
  assert report["restored_equal"] == [True, True]
  assert report["snapshot_reused"] and report["snapshot_is_not_live"]
  # TensorStore's writers ran at idle priority (a worker the pool starts after the save is
  # done, for Orbax's last metadata, may still have the normal policy).
  assert report["sched_idle"] in report["policies"]["ts_pool_worker"], report["policies"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_threads_named_as_tensorstore_workers_and_only_they_are_moved_to_sched_idle():
  named, done, tids = threading.Barrier(3), threading.Event(), {}

  def worker(name):
    tid = threading.get_native_id()
    with open(f"/proc/self/task/{tid}/comm", "w") as f:
      f.write(name)
    tids[name] = tid
    named.wait()
    done.wait()

  threads = [threading.Thread(target=worker, args=(name,))
             for name in ("ts_pool_worker", "other_worker")]
  for thread in threads:
    thread.start()
  named.wait()
  try:
    assert background_save.idle_writer_threads() >= 1
    assert os.sched_getscheduler(tids["ts_pool_worker"]) == os.SCHED_IDLE
    assert os.sched_getscheduler(tids["other_worker"]) == os.SCHED_OTHER
  finally:
    done.set()
    for thread in threads:
      thread.join()
