"""Checkpoint writes in the CPU time the train step leaves idle (`config.checkpoint_background`).

When the train step runs on the host's own cores (CPU devices), an Orbax save slows the steps
after it in two ways, measured for the paper-size NetVLAD state (1.8 GB) on a 2-core VM, where
the first step after a save took 9-11 s against 2 s:

1. Orbax writes from the arrays it is given, so it holds references to the live state while
   it writes; the next step donates that state, cannot reuse its buffers, and allocates a new
   1.8 GB state (and copies the old one into it). On a VM whose host reclaims the memory the
   guest frees (free page reporting), touching memory that was not in use costs 2.6-3.1 s of
   system time per GB, against 0.2 s per GB for memory the process keeps.
2. TensorStore's writer threads (zstd compression, the copy into the page cache) take cores
   from XLA's threads, and a parallel XLA loop waits for its slowest thread.

`StateSnapshot` answers 1: the save is written from a copy of the state in buffers that the
process keeps from one save to the next (allocated once, before training, and refilled by a
jitted copy that donates them), so Orbax never references the live state and the copy touches
no new memory. `IdleWriterThreads` answers 2: while a save is in flight it moves TensorStore's
worker threads to Linux's SCHED_IDLE policy, so they run only when a core has nothing else to
run (XLA leaves about a tenth of the cores idle during a step; the write then finishes some 25
steps later instead of inside the next step).

Measured (`launch/benchmark.py --config=configs/ytb8m.py:paper --models=netvlad
--end_to_end_window=8 --steps=8`, 2-core AMD EPYC VM, load 1.2-2.8, two runs each): the
8-step window in which the checkpoint is written ran at 50.0 / 55.1 examples/s (102 % / 111 %
of the isolated step) against 32.4 / 36.5 (72 % / 69 %) with 'off'.

The cost: one more copy of the train state in host memory for the whole run (NV-L at the
paper's sizes: 1.8 GB; the run's peak RSS still fell, 8.4-8.6 -> 7.5-7.6 GB, since no step
allocates a second state any more), and SCHED_IDLE is one-way for a process without
CAP_SYS_NICE: a worker stays idle-priority until TensorStore retires it (after 20 s without
work), so a restore soon after a save, on a host busy with other processes, is slower. Hence
'auto' turns it on only for a state on CPU devices of at least `AUTO_MIN_BYTES` per process.
"""

import logging
import os
import sys
import threading
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp

log = logging.getLogger("mmjax")

SETTINGS = ("auto", "on", "off")
AUTO_MIN_BYTES = 64 << 20
# The worker threads of TensorStore's shared pool are named 'ts_pool_worker'. They are started
# by an unnamed overseer thread (with the policy of the thread that started it) and retire after
# 20 s without work, so new ones keep appearing: hence the polling below.
WRITER_THREAD_PREFIX = "ts_pool_worker"
_POLL_SECONDS = 0.05


def local_bytes(tree) -> int:
  """Bytes of `tree`'s array shards on this process's devices."""
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in leaf.addressable_shards)


def on_cpu(tree) -> bool:
  """Whether every array of `tree` lives on CPU devices."""
  return all(device.platform == "cpu" for leaf in jax.tree.leaves(tree)
             for device in leaf.sharding.device_set)


def check_setting(setting: str) -> None:
  """ValueError naming config.checkpoint_background unless `setting` is one of SETTINGS."""
  if setting not in SETTINGS:
    raise ValueError(f"config.checkpoint_background={setting!r}; expected one of {SETTINGS}")


def enabled(setting: str, state) -> bool:
  """Whether `config.checkpoint_background` = `setting` turns background saving on for `state`:
  'on', 'off', or 'auto' (on for a state on CPU devices of at least AUTO_MIN_BYTES per process:
  the global size over the process count, so that every process decides alike, as the jitted
  snapshot copy needs). ValueError naming the key for any other value."""
  check_setting(setting)
  if setting == "auto":
    global_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    return on_cpu(state) and global_bytes / jax.process_count() >= AUTO_MIN_BYTES
  return setting == "on"


def _copy_into(destination, source):
  """source's values in destination's (donated) buffers."""
  del destination
  return jax.tree.map(jnp.copy, source)


class StateSnapshot:
  """A copy of the train state in buffers kept from one save to the next.

  `reserve(state)` allocates it (once, before training, so the first save touches no new
  memory either); `take(state)` refills it with `state`'s values by a jitted copy that donates
  the previous snapshot (same shapes, dtypes and shardings, so XLA writes into the same
  buffers) and returns it. The caller must not take a new snapshot while a save still reads
  the previous one (Checkpointer.save waits for the running save first)."""

  def __init__(self):
    self._snapshot: Optional[Any] = None
    self._copy = None

  def reserve(self, state) -> None:
    shardings = jax.tree.map(lambda x: x.sharding, state)
    # keep_unused: jit drops unused arguments, and a dropped donated argument aliases nothing.
    self._copy = jax.jit(_copy_into, out_shardings=shardings, donate_argnums=(0,),
                         keep_unused=True)
    self._snapshot = jax.block_until_ready(jax.jit(
        lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=shardings)(state))
    log.info("checkpoint snapshot: %.0f MB of host memory reserved (config."
             "checkpoint_background)", local_bytes(state) / 1e6)

  def _matches(self, state) -> bool:
    if self._snapshot is None:
      return False
    if jax.tree.structure(self._snapshot) != jax.tree.structure(state):
      return False
    return all(a.shape == b.shape and a.dtype == b.dtype and a.sharding == b.sharding
               for a, b in zip(jax.tree.leaves(self._snapshot), jax.tree.leaves(state)))

  def take(self, state):
    """The snapshot holding `state`'s values (re-reserved first if `state`'s layout changed)."""
    if not self._matches(state):
      self.reserve(state)
      return self._snapshot
    self._snapshot = self._copy(self._snapshot, state)
    return self._snapshot


def _set_idle(tid: int) -> bool:
  try:
    if os.sched_getscheduler(tid) != os.SCHED_IDLE:
      os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    return True
  except OSError:  # the thread exited meanwhile
    return False


def writer_thread_ids() -> list:
  """Native ids of this process's threads whose names start with WRITER_THREAD_PREFIX
  (Linux's /proc/self/task)."""
  ids = []
  for entry in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{entry}/comm") as f:
        name = f.read().strip()
    except OSError:  # the thread exited meanwhile
      continue
    if name.startswith(WRITER_THREAD_PREFIX):
      ids.append(int(entry))
  return ids


def idle_writer_threads() -> int:
  """Moves the threads of `writer_thread_ids` to SCHED_IDLE; returns how many now have it."""
  return sum(_set_idle(tid) for tid in writer_thread_ids())


class IdleWriterThreads:
  """While a save is in flight, keeps TensorStore's worker threads at SCHED_IDLE: `watch(busy)`
  starts a daemon thread that applies `idle_writer_threads` every 50 ms until `busy()` is
  false, so workers the pool starts meanwhile run at normal priority for at most 50 ms. A
  no-op off Linux."""

  def __init__(self):
    self.supported = sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE")
    self._watcher: Optional[threading.Thread] = None

  def watch(self, busy) -> None:
    if not self.supported or (self._watcher is not None and self._watcher.is_alive()):
      return

    def loop():
      while True:
        idle_writer_threads()
        if not busy():
          return
        time.sleep(_POLL_SECONDS)
    self._watcher = threading.Thread(target=loop, name="mmjax-idle-writers", daemon=True)
    self._watcher.start()
