"""Metrics to <workdir>/metrics.jsonl (one JSON object per record) and TensorBoard event files.

Only process 0 writes (all processes compute identical global metrics).
"""

import json
import os
from typing import Mapping

import jax
import numpy as np


def _to_python(value):
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).item()
  return value


class MetricWriter:
  """write(step, split, metrics) appends {"step", "split", **metrics} to metrics.jsonl and logs
  each scalar as '<split>/<name>' to TensorBoard (tensorboardX, no TensorFlow needed)."""

  def __init__(self, workdir: str, enabled: bool = None, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
