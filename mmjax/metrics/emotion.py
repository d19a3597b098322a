"""MER metrics: the emotion classification scores and MER2023's valence and combined metrics.

  WAF (weighted F1, scikit-learn's f1_score(average='weighted')), accuracy, macro F1:
      mmjax.metrics.classification over the argmax of the emotion probabilities;
  MSE = sum_n w_n (v^_n - v_n)^2 / sum_n w_n   over the rows with a valence label;
  Com = WAF - 0.25 * MSE                          (MER2023's combined metric).

Rows with weight 0 (evaluation padding) or labelled 0 (no discrete label) are ignored.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from mmjax.metrics.classification import confusion_matrix, metrics_from_confusion

__all__ = ["COM_VALENCE_WEIGHT", "EmotionEvaluator", "mer_scores"]

COM_VALENCE_WEIGHT = 0.25


def _valence_scores(scores: Dict[str, float], squared_error: float, weight: float) -> None:
  if weight > 0:
    scores["mse"] = squared_error / weight
    scores["com"] = scores["weighted_f1"] - COM_VALENCE_WEIGHT * scores["mse"]


def mer_scores(labels, probs, valence=None, predicted_valence=None,
               weight=None) -> Dict[str, float]:
  """{'accuracy', 'weighted_f1', 'macro_f1', 'num_examples'} of probs [N, C] against labels
  [N], plus 'mse' and 'com' when both valence arrays [N] are given (module docstring)."""
  probs = np.asarray(probs)
  weight = np.ones(len(probs)) if weight is None else np.asarray(weight, np.float64)
  scores = metrics_from_confusion(confusion_matrix(labels, probs.argmax(-1), probs.shape[-1],
                                                   weight))
  if valence is not None and predicted_valence is not None:
    error = np.square(np.asarray(predicted_valence, np.float64) - np.asarray(valence))
    _valence_scores(scores, float((error * weight).sum()), float(weight.sum()))
  return scores


class EmotionEvaluator:
  """Accumulates MER predictions over an eval pass (mmjax.tasks.Evaluator).

  predictions: {'emotion': [B, C] (the decision), 'valence': [B] (optional), and per structure
  'structure_emotion' [B, S, C], 'structure_valence' [B, S]}; batch: 'label', 'weight',
  'labelled', 'valence'. compute(): the decision's scores (`mer_scores`), each structure's
  'weighted_f1_s<i>' (and 'mse_s<i>') when S > 1, and 'confusion' (the [C, C] matrix as nested
  lists: Fig. 2 of seed 004) only through `confusion()`.
  """

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self._matrix = np.zeros((num_classes, num_classes))
    self._structures: Optional[np.ndarray] = None
    self._squared = None
    self._has_valence = False
    self._weight = 0.0

  def update(self, predictions: Dict[str, Any], batch: Dict[str, Any]) -> None:
    labels = np.asarray(batch["label"], np.int64)
    weight = np.asarray(batch["weight"], np.float64) * np.asarray(batch["labelled"], np.float64)
    self._matrix += confusion_matrix(labels, np.asarray(predictions["emotion"]).argmax(-1),
                                     self.num_classes, weight)
    per = np.asarray(predictions["structure_emotion"])
    if self._structures is None:
      self._structures = np.zeros((per.shape[1], self.num_classes, self.num_classes))
      self._squared = np.zeros(per.shape[1] + 1)
    for s in range(per.shape[1]):
      self._structures[s] += confusion_matrix(labels, per[:, s].argmax(-1), self.num_classes,
                                              weight)
    if "valence" in predictions:
      self._has_valence = True
      target = np.asarray(batch["valence"], np.float64)[:, None]
      values = np.concatenate([np.asarray(predictions["valence"])[:, None],
                               np.asarray(predictions["structure_valence"])], axis=1)
      self._squared += (np.square(values - target) * weight[:, None]).sum(0)
    self._weight += float(weight.sum())

  def confusion(self) -> np.ndarray:
    """The decision's [C, C] confusion matrix (rows true, columns predicted)."""
    return self._matrix.copy()

  def compute(self) -> Dict[str, float]:
    scores = metrics_from_confusion(self._matrix)
    has_valence = self._has_valence
    if has_valence:
      _valence_scores(scores, float(self._squared[0]), self._weight)
    if self._structures is not None and len(self._structures) > 1:
      for s, matrix in enumerate(self._structures):
        scores[f"weighted_f1_s{s}"] = metrics_from_confusion(matrix)["weighted_f1"]
        if has_valence:
          scores[f"mse_s{s}"] = float(self._squared[s + 1]) / max(self._weight, 1e-12)
    return scores
