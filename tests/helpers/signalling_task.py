"""Fault injection for the preemption tests: the tiny YouTube-8M task registered as
'signalled_youtube8m', which sends a signal to its own process at a chosen point. The point is
the environment variable MMJAX_TEST_SIGNAL = '<SIGNAL>@<where>[@<process>]' (unset: never):

  SIGTERM@train:5    when the trainer asks for the 5th training batch of this run; the batch then
                     takes 2 s to arrive (the signal comes while the trainer waits for data)
  SIGINT@eval:2:1    after the 1st batch of the 2nd evaluation pass of this run (the 1st pass is
                     the start-up check of the eval splits), i.e. during an evaluation
  ...@1              only on process 1 (default: every process)
"""

import os
import signal
import time

import grain
import jax

from mmjax.projects.youtube8m.task import Youtube8mTask
from mmjax.tasks import register

ENV = "MMJAX_TEST_SIGNAL"


def _spec():
  """(signal, where, numbers) for this process, or None."""
  value = os.environ.get(ENV, "")
  if not value:
    return None
  parts = value.split("@")
  if len(parts) == 3 and int(parts[2]) != jax.process_index():
    return None
  where, *numbers = parts[1].split(":")
  return getattr(signal, parts[0]), where, [int(n) for n in numbers]


def _send(sig) -> None:
  os.kill(os.getpid(), sig)


class _SignallingIterator(grain.DatasetIterator):
  """Delegates to `parent` (state included); signals before returning batch number `at`."""

  def __init__(self, parent, sig, at: int, delay: float = 0.0):
    super().__init__(parent)
    self._sig, self._at, self._delay, self._count = sig, at, delay, 0

  def __next__(self):
    self._count += 1
    if self._count == self._at:
      _send(self._sig)
      time.sleep(self._delay)
    return next(self._parent)

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class _Wrapped:
  """An iterable whose iterator is a _SignallingIterator over `dataset`'s."""

  def __init__(self, dataset, sig, at: int, delay: float = 0.0):
    self._dataset, self._args = dataset, (sig, at, delay)

  def __iter__(self):
    return _SignallingIterator(iter(self._dataset), *self._args)


@register("signalled_youtube8m")
class SignalledTask(Youtube8mTask):
  """Youtube8mTask sending MMJAX_TEST_SIGNAL's signal at its point (module docstring)."""

  def __init__(self, config):
    super().__init__(config)
    self._spec = _spec()
    self._eval_passes = 0

  def train_dataset(self, batch_size, seed, process_index, process_count):
    dataset = super().train_dataset(batch_size, seed, process_index, process_count)
    if self._spec is None or self._spec[1] != "train":
      return dataset
    return _Wrapped(dataset, self._spec[0], self._spec[2][0], delay=2.0)

  def eval_dataset(self, batch_size, process_index, process_count, **kwargs):
    dataset = super().eval_dataset(batch_size, process_index, process_count, **kwargs)
    self._eval_passes += 1
    if self._spec is None or self._spec[1] != "eval" or self._eval_passes != self._spec[2][0]:
      return dataset
    return _Wrapped(dataset, self._spec[0], self._spec[2][1] + 1)
