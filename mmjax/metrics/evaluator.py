"""An accumulator of label metrics as a task's evaluator (mmjax.tasks.Evaluator)."""

from typing import Any, Dict


class LabelsEvaluator:
  """Feeds `accumulator.update(predictions, batch[labels_key], batch['weight'])` (e.g.
  ClassificationMetrics, Youtube8mMetrics); `compute()` is the accumulator's."""

  def __init__(self, accumulator: Any, labels_key: str):
    self._accumulator = accumulator
    self._labels_key = labels_key

  def update(self, predictions, batch: Dict[str, Any]) -> None:
    self._accumulator.update(predictions, batch[self._labels_key], batch["weight"])

  def compute(self) -> Dict[str, float]:
    return self._accumulator.compute()
