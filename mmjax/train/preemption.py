"""Preemption: SIGTERM or SIGINT on any process makes every process save the same step and exit
with PREEMPTED_EXIT_CODE, meaning "saved, requeue me".

Each process's signal handler only sets a local flag. The trainer polls at every training step
and after every evaluation batch; a poll combines the flags of all processes with a tiny jitted
max over the mesh (one int32 per device) and returns the combined value of the *previous* poll,
so the host never waits on the device for it (the step in flight keeps the device busy). All
processes poll equally often (training steps run in lockstep, and every process yields the same
number of eval batches), so they read the same agreed value at the same poll and save the same
step. A single process reads its own flag at once. A second SIGINT (Ctrl-C twice) stops at once
with KeyboardInterrupt, without saving.
"""

import logging
import signal
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import parallel

log = logging.getLogger("mmjax")

# EX_TEMPFAIL of sysexits.h: "temporary failure; the user is invited to retry". launch/train.py
# exits with it after a preemption save; a scheduler requeues on it (e.g. Slurm:
# `scontrol requeue` in an epilog on exit code 75), and the requeued run resumes.
PREEMPTED_EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on a preemption signal after checkpoint `step` was saved."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"preempted: checkpoint of step {step} saved in {directory}; run the same "
                     f"command again to resume (exit status {PREEMPTED_EXIT_CODE})")
    self.step = step


class EvaluationPreempted(Exception):
  """Raised by PreemptionWatcher.check inside an evaluation once all processes agree to stop."""


class PreemptionWatcher:
  """Context manager: installs the SIGTERM/SIGINT handlers (main thread only; restores the
  previous ones on exit) and agrees on a stop across processes (see the module docstring)."""

  def __init__(self, mesh):
    self.requested = False
    self._mesh = mesh
    self._previous = {}
    self._pending: Optional[jax.Array] = None  # the previous poll's agreed flag (device)
    self._agreed = False
    if jax.process_count() > 1:
      self._flag_sharding = NamedSharding(mesh, P(mesh.axis_names))
      self._any = jax.jit(jnp.max, out_shardings=parallel.replicated(mesh))

  def __enter__(self):
    for signum in SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: no signal handling
        pass
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt("second SIGINT: stopping without saving")
    self.requested = True
    log.warning("received %s: every process will save the same step and exit with status %d "
                "(send SIGINT again to stop at once without saving)", signal.Signals(signum).name,
                PREEMPTED_EXIT_CODE)

  def poll(self) -> bool:
    """True (on every process alike) once some process has been signalled. Call it at the
    same points on every process."""
    if self._agreed:
      return True
    if jax.process_count() == 1:
      self._agreed = self.requested
      return self._agreed
    flag = np.int32(self.requested)
    local = jax.make_array_from_callback((jax.device_count(),), self._flag_sharding,
                                         lambda index: np.full((1,), flag, np.int32))
    previous, self._pending = self._pending, self._any(local)
    self._agreed = previous is not None and bool(previous)
    return self._agreed

  def check(self) -> None:
    """poll(), raising EvaluationPreempted when agreed (called after each eval batch)."""
    if self.poll():
      raise EvaluationPreempted()
