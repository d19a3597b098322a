"""Single-label classification metrics, streaming over weighted batches.

accuracy = sum_i w_i [argmax p_i = y_i] / sum_i w_i.
weighted F1 (the MER WAF; scikit-learn's f1_score(average='weighted')): per class c,
  F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)  (0 when the denominator is 0),
  WAF = sum_c n_c F1_c / sum_c n_c  with n_c the number of true examples of class c.
Rows with weight 0 (evaluation padding) are ignored.
"""

from typing import Dict

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int,
                     weight=None) -> np.ndarray:
  """[C, C] weighted counts, rows = true class, columns = predicted class."""
  weight = np.ones(len(labels)) if weight is None else np.asarray(weight, np.float64)
  matrix = np.zeros((num_classes, num_classes), np.float64)
  np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), weight)
  return matrix


def metrics_from_confusion(matrix: np.ndarray) -> Dict[str, float]:
  """{'accuracy', 'weighted_f1', 'macro_f1', 'num_examples'} from a confusion matrix."""
  total = matrix.sum()
  if total == 0:
    return {"accuracy": 0.0, "weighted_f1": 0.0, "macro_f1": 0.0, "num_examples": 0}
  tp = np.diag(matrix)
  support = matrix.sum(axis=1)
  denominator = 2 * tp + (matrix.sum(axis=0) - tp) + (support - tp)
  f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
  present = (support > 0) | (matrix.sum(axis=0) > 0)
  return {"accuracy": float(tp.sum() / total),
          "weighted_f1": float((f1 * support).sum() / support.sum()),
          "macro_f1": float(f1[present].mean()),
          "num_examples": int(round(total))}


class ClassificationMetrics:
  """Accumulates (class scores [B, C], labels [B], weight [B]) batches."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self._matrix = np.zeros((num_classes, num_classes), np.float64)

  def update(self, scores, labels, weight=None) -> None:
    predicted = np.argmax(np.asarray(scores), axis=-1)
    self._matrix += confusion_matrix(labels, predicted, self.num_classes, weight)

  def compute(self) -> Dict[str, float]:
    return metrics_from_confusion(self._matrix)
