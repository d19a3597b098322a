"""Accumulators of label metrics as a task's evaluator (mmjax.tasks.Evaluator)."""

from typing import Any, Dict

import numpy as np

from mmjax.metrics.classification import ClassificationMetrics


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


class HeadsEvaluator:
  """Classification metrics of a multi-head model (e.g. gradient blending's unimodal and fused
  heads). predictions: {head: probabilities [B, C]}; the `main` head gives 'accuracy',
  'weighted_f1', 'macro_f1' (ClassificationMetrics); every head h gives 'loss_<h>' (weighted
  mean cross-entropy -log max(p_y, 1e-12)) and 'accuracy_<h>'."""

  def __init__(self, num_classes: int, main: str = "fused", labels_key: str = "label"):
    self._main = ClassificationMetrics(num_classes)
    self._main_head = main
    self._labels_key = labels_key
    self._sums: Dict[str, Any] = {}
    self._weight = 0.0

  def update(self, predictions, batch: Dict[str, Any]) -> None:
    labels = np.asarray(batch[self._labels_key], np.int64)
    weight = np.asarray(batch["weight"], np.float64)
    self._main.update(predictions[self._main_head], labels, weight)
    self._weight += float(weight.sum())
    for head, probs in predictions.items():
      probs = np.asarray(probs, np.float64)
      p_y = np.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
      loss = float((-np.log(np.maximum(p_y, 1e-12)) * weight).sum())
      correct = float(((probs.argmax(1) == labels) * weight).sum())
      old = self._sums.get(head, (0.0, 0.0))
      self._sums[head] = (old[0] + loss, old[1] + correct)

  def compute(self) -> Dict[str, float]:
    out = dict(self._main.compute())
    for head, (loss, correct) in sorted(self._sums.items()):
      out[f"loss_{head}"] = loss / max(self._weight, 1e-12)
      out[f"accuracy_{head}"] = correct / max(self._weight, 1e-12)
    return out
