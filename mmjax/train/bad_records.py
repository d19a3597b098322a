"""Bad training records: counted per logging window, bounded by config.data.max_bad_fraction.

With config.data.skip_bad_records, the input pipeline skips records it cannot read or parse and
counts them, with the good ones, in its `skip_counter` (mmjax.data.tfrecord.SkipCounter, which
logs the first few by file, record index and reason). At every log step the trainer takes the
window's counts, summed over all processes, writes them as 'bad_records' in the train row of
metrics.jsonl, and stops when the fraction of bad records among those this run has read,

  sum bad / (sum bad + sum good) > config.data.max_bad_fraction,

with the same decision on every process (the sums are gathered); a config without the key
allows none (0). Counts start again with each (resumed) run. A dataset without a
`skip_counter` is not monitored. (The input pipeline keeps its own, looser stop for configs that
make every record bad, where no batch would ever fill: mmjax.data.pipeline._ReadAndParse.)
"""

import logging
from typing import Dict, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger("mmjax")


class TooManyBadRecordsError(RuntimeError):
  """The fraction of bad training records passed config.data.max_bad_fraction."""


class BadRecordMonitor:
  """Per-window bad-record counts of one training dataset (module docstring)."""

  def __init__(self, dataset, data_config):
    self.counter = getattr(dataset, "skip_counter", None)
    self.max_fraction = float(data_config.get("max_bad_fraction", 0.0))
    self.bad = self.good = 0

  def take_window(self) -> Dict[str, int]:
    """{'bad_records': bad records of all processes since the last call} ({} when the dataset
    counts nothing). Raises TooManyBadRecordsError past config.data.max_bad_fraction."""
    if self.counter is None:
      return {}
    counts = np.asarray(self.counter.take_window(), np.int64)
    if jax.process_count() > 1:
      counts = np.asarray(multihost_utils.process_allgather(counts)).sum(axis=0)
    bad, good = int(counts[0]), int(counts[1])
    self.bad, self.good = self.bad + bad, self.good + good
    fraction = self.fraction()
    if fraction is not None and fraction > self.max_fraction:
      raise TooManyBadRecordsError(
          f"{self.bad} of the {self.bad + self.good} training records read in this run were bad "
          f"({fraction:.2%} > config.data.max_bad_fraction={self.max_fraction}); first ones on "
          f"this process: {self.counter.examples}. Repair or remove those files, check the "
          "config.data keys that describe the records (level, id_key, labels_key, "
          "feature_names, feature_sizes, num_classes), or raise config.data.max_bad_fraction")
    return {"bad_records": bad}

  def fraction(self) -> Optional[float]:
    """Bad records among those read in this run so far (None before any was read)."""
    total = self.bad + self.good
    return self.bad / total if total else None
