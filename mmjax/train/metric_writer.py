"""Metrics to <workdir>/metrics.jsonl (one JSON object per record) and TensorBoard event files.

Only process 0 writes (all processes compute identical global metrics). A training run opens
the writer with `resume_step` (the step it starts from, 0 for a fresh run): rows of
metrics.jsonl past that step, written by an earlier run that died before its next checkpoint,
are dropped (with `redo_evaluation`, also the rows of an evaluation of that step that a
preemption interrupted), and TensorBoard is told to purge its events past it, so the log of a
killed and resumed run equals the log of an uninterrupted one.
"""

import json
import os
from typing import Mapping, Optional

import jax
import numpy as np


def _to_python(value):
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).item()
  return value


def drop_rows_after(path: str, step: int, evaluations_at_step: bool = False) -> int:
  """Rewrites the JSON-lines file `path` without its rows whose "step" is > `step` (and, with
  `evaluations_at_step`, without the evaluation rows of `step` itself: an evaluation that a
  preemption interrupted and that runs again) by atomic rename; a torn last line from a killed
  writer is dropped too. Returns how many were dropped; 0 and no rewrite when nothing is to
  drop or the file does not exist."""
  if not os.path.isfile(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
        row_step = int(row["step"])
        keep = row_step < step or (row_step == step and not (
            evaluations_at_step and row.get("split") != "train"))
      except (ValueError, KeyError, TypeError, AttributeError):
        keep = False  # a torn or foreign line
      if keep:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  if dropped:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped


class MetricWriter:
  """write(step, split, metrics) appends {"step", "split", **metrics} to metrics.jsonl and logs
  each scalar as '<split>/<name>' to TensorBoard (tensorboardX, no TensorFlow needed)."""

  def __init__(self, workdir: str, enabled: bool = None, tensorboard: bool = True,
               resume_step: Optional[int] = None, redo_evaluation: bool = False):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if resume_step is not None:
        drop_rows_after(self.path, resume_step, evaluations_at_step=redo_evaluation)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        purge = None if resume_step is None else resume_step + 1
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: _to_python(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in record.items():
        if name not in ("step", "split") and isinstance(value, (int, float)):
          self._tb.add_scalar(f"{split}/{name}", value, int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
