"""Decision-level fusion of M models' class probabilities, run on the host after evaluation.

probs are [M, N, C] (M models, N examples, C classes) softmax probabilities; every function
checks them with `check_probabilities` first. The functions accept numpy or jax arrays, compute
in float64 numpy and return numpy arrays; they are not jit-able (the checks need concrete
values), except `entropy_weights_in_graph`, the same eq. 5-6 for use inside a jitted step.

- `entropy_fusion` / `entropy_weights`: per-example entropy weights (seed 004, eq. 5-7).
- `weighted_average`: fixed per-model weights (linear weighting).
- `majority_vote`: each model votes its argmax class.
- `best_vote_subset`: the subset of models whose majority vote scores best on a validation set
  (seed 000's ensemble search); `apply_vote_subset` applies it to test predictions.
"""

import dataclasses
import itertools
from typing import Callable, Dict, Optional, Tuple

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from mmjax.metrics.classification import confusion_matrix, metrics_from_confusion

MAX_SUBSET_MODELS = 20  # best_vote_subset scores 2^M - 1 subsets.
ROW_SUM_ATOL = 1e-3

Metric = Callable[[np.ndarray, np.ndarray], float]


def _position(index) -> str:
  return ", ".join(str(int(i)) for i in index)


def check_probabilities(probs: ArrayLike, name: str = "probs") -> np.ndarray:
  """probs as float64 [M, N, C], after checking that every row probs[i, n] is a distribution:
  finite, >= 0 and sum_c probs[i, n, c] = 1 within 1e-3 (`ROW_SUM_ATOL`).

  Raises:
    ValueError: not 3-D, an empty dimension, or a bad row; the message names the first bad
      element or row, e.g. "probs[1, 7] sums to 1.73, not 1".
  """
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 3 or 0 in probs.shape:
    raise ValueError(f"{name} must be [M, N, C] (models, examples, classes) and non-empty, got "
                     f"shape {probs.shape}")
  hint = "pass softmax probabilities, not logits"
  bad = np.argwhere(~np.isfinite(probs))
  if bad.size:
    raise ValueError(f"{name}[{_position(bad[0])}] is {probs[tuple(bad[0])]} ({len(bad)} of "
                     f"{probs.size} values not finite)")
  bad = np.argwhere(probs < 0)
  if bad.size:
    raise ValueError(f"{name}[{_position(bad[0])}] = {probs[tuple(bad[0])]:.4g} is negative "
                     f"({len(bad)} of {probs.size} values negative): {hint}")
  sums = probs.sum(axis=-1)
  bad = np.argwhere(np.abs(sums - 1) > ROW_SUM_ATOL)
  if bad.size:
    raise ValueError(f"{name}[{_position(bad[0])}] sums to {sums[tuple(bad[0])]:.4g}, not 1 "
                     f"({len(bad)} of {sums.size} rows off): {hint}")
  return probs


def check_labels(labels: ArrayLike, num_examples: int, num_classes: int,
                 name: str = "labels") -> np.ndarray:
  """labels as int64 [N], after checking that they are N integer class ids in [0, C).

  Raises:
    ValueError: wrong shape or dtype, or an id out of range (the message names the first).
  """
  labels = np.asarray(labels)
  if labels.shape != (num_examples,):
    raise ValueError(f"{name} must be [N] = [{num_examples}], got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(f"{name}[{bad[0]}] = {labels[bad[0]]} is not a class id in [0, "
                     f"{num_classes}) ({bad.size} of {num_examples} out of range)")
  return labels.astype(np.int64)


def entropy_weights(probs: ArrayLike) -> np.ndarray:
  """Per-example confidence weights of seed 004 (MER 2023 entropy-based fusion), eq. 5-6:

    H_{i,n} = -sum_c e_{i,n,c} log e_{i,n,c}                     (eq. 5, 0 log 0 = 0)
    w_{i,n} = (1 / (M - 1)) (1 - H_{i,n} / sum_j H_{j,n}),        (eq. 6)

  so sum_i w_{i,n} = 1 and a lower entropy (a more confident model) gets a larger weight. The
  weights are per example: eq. 5 is the entropy of one prediction e_i in R^C, and the paper
  weighs "the variations in samples" that linear weighting neglects. Each w is at most
  1 / (M - 1): with M > 2 even a one-hot model does not outvote the others alone.
  Where every H_{j,n} is 0 (all models one-hot on example n) the weights are 1 / M; M = 1
  gives weight 1. H is clipped at 0 (a row summing to 1 + 1e-3 can give H slightly below 0).

  Args:
    probs: [M, N, C] probabilities.

  Returns:
    [M, N] weights.
  """
  return _entropy_weights(check_probabilities(probs))


def _entropy_weights(probs, xp=np):
  """entropy_weights of checked [M, N, C] probabilities, with array module `xp` (numpy on the
  host, jax.numpy inside a jitted step: `entropy_weights_in_graph`)."""
  num_models = probs.shape[0]
  if num_models == 1:
    return xp.ones(probs.shape[:2], probs.dtype)
  entropy = -xp.sum(probs * xp.log(xp.where(probs > 0, probs, 1.0)), axis=-1)
  entropy = xp.maximum(entropy, 0.0)
  total = entropy.sum(axis=0)
  safe_total = xp.where(total > 0, total, 1.0)
  weights = (1 - entropy / safe_total) / (num_models - 1)
  return xp.where(total > 0, weights, 1 / num_models)


def entropy_weights_in_graph(probs):
  """`entropy_weights` (eq. 5-6) for jax arrays [M, N, C] inside jit (no host checks): the
  same formula through jax.numpy."""
  return _entropy_weights(probs, jnp)


def entropy_fusion(probs: ArrayLike) -> np.ndarray:
  """Entropy-weighted fusion of seed 004 eq. 7 with the per-example weights of
  `entropy_weights` (eq. 5-6):

    e_n = sum_i w_{i,n} e_{i,n}.

  Rows of the result sum to 1. M = 1 returns the model's probabilities.

  Args:
    probs: [M, N, C] probabilities.

  Returns:
    [N, C] fused probabilities.
  """
  probs = check_probabilities(probs)
  return np.einsum("mn,mnc->nc", _entropy_weights(probs), probs)


def weighted_average(probs: ArrayLike, weights: Optional[ArrayLike] = None) -> np.ndarray:
  """Linear weighting with one weight per model:

    e_n = sum_i w_i e_{i,n} / sum_i w_i      (w = 1 when weights is None: the plain mean).

  Args:
    probs: [M, N, C] probabilities. weights: optional [M] non-negative weights, not all 0.

  Returns:
    [N, C] fused probabilities.

  Raises:
    ValueError: weights of the wrong shape, non-finite, negative or all 0.
  """
  probs = check_probabilities(probs)
  if weights is None:
    return probs.mean(axis=0)
  weights = np.asarray(weights, np.float64)
  if weights.shape != probs.shape[:1]:
    raise ValueError(f"weights must be [M] = [{probs.shape[0]}], got shape {weights.shape}")
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
    raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
  return np.einsum("m,mnc->nc", weights / weights.sum(), probs)


def _vote(probs: np.ndarray) -> np.ndarray:
  """majority_vote on checked [M, N, C] probabilities."""
  votes = np.argmax(probs, axis=-1)
  counts = (votes[..., None] == np.arange(probs.shape[-1])).sum(axis=0)
  tied = counts == counts.max(axis=-1, keepdims=True)
  return np.argmax(np.where(tied, probs.mean(axis=0), -np.inf), axis=-1)


def majority_vote(probs: ArrayLike) -> np.ndarray:
  """Majority vote: model i votes v_{i,n} = argmax_c e_{i,n,c} and example n gets

    y_n = argmax_c #{i : v_{i,n} = c}.

  Ties: among the classes with the most votes, the one with the highest mean probability
  (1/M) sum_i e_{i,n,c} over all M models wins; if that ties too, the lowest class index. (A
  model whose own argmax ties votes for its lowest tied class index.)

  Args:
    probs: [M, N, C] probabilities.

  Returns:
    [N] int64 predicted class ids.
  """
  return _vote(check_probabilities(probs))


def weighted_f1(labels: ArrayLike, predicted: ArrayLike) -> float:
  """scikit-learn's f1_score(labels, predicted, average='weighted') (the MER WAF):

    WAF = sum_c n_c F1_c / sum_c n_c,   F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) (0 if 0 / 0),

  n_c the number of examples of true class c. labels, predicted: [N] class ids, N >= 1.
  """
  labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
  num_classes = int(max(labels.max(), predicted.max())) + 1
  return metrics_from_confusion(confusion_matrix(labels, predicted, num_classes))["weighted_f1"]


@dataclasses.dataclass(frozen=True)
class VoteSubset:
  """The result of `best_vote_subset`.

  Attributes:
    models: the chosen model indices, ascending. score: their vote's validation metric.
    scores: the metric of every subset searched, keyed by its model indices.
  """
  models: Tuple[int, ...]
  score: float
  scores: Dict[Tuple[int, ...], float]


def best_vote_subset(val_probs: ArrayLike, val_labels: ArrayLike, metric: Metric = weighted_f1,
                     min_size: int = 1) -> VoteSubset:
  """Exhaustive ensemble search of seed 000 (Memotion 3, section 5: "We iterate over all
  possible model combinations and adopt majority voting on the validation set"):

    S* = argmax_{S subset of {0..M-1}, |S| >= min_size} metric(y, majority_vote(e_S)).

  All sum_{k >= min_size} binom(M, k) subsets are scored (2^M - 1 for min_size = 1, which
  includes every single model). Ties between subsets: the smaller subset, then the
  lexicographically first tuple of indices. Apply the result to test predictions with
  `apply_vote_subset`.

  Args:
    val_probs: [M, N, C] validation probabilities, M <= 20 (`MAX_SUBSET_MODELS`).
    val_labels: [N] class ids. metric: metric(labels [N], predicted [N]) -> float, higher is
      better (sklearn's signature; default weighted F1). min_size: smallest subset, in [1, M].

  Returns:
    The best VoteSubset.

  Raises:
    ValueError: bad inputs, M > 20, or min_size outside [1, M].
  """
  probs = check_probabilities(val_probs, "val_probs")
  num_models, num_examples, num_classes = probs.shape
  labels = check_labels(val_labels, num_examples, num_classes, "val_labels")
  if num_models > MAX_SUBSET_MODELS:
    raise ValueError(f"best_vote_subset: {num_models} models give 2^{num_models} - 1 subsets; "
                     f"the limit is M <= {MAX_SUBSET_MODELS}")
  if not 1 <= min_size <= num_models:
    raise ValueError(f"best_vote_subset: min_size must be in [1, {num_models}], got {min_size}")
  scores = {}
  for size in range(min_size, num_models + 1):
    for models in itertools.combinations(range(num_models), size):
      scores[models] = float(metric(labels, _vote(probs[list(models)])))
  best = max(scores, key=scores.get)  # the first maximum in (size, lexicographic) order
  return VoteSubset(models=best, score=scores[best], scores=scores)


def apply_vote_subset(probs: ArrayLike, subset: VoteSubset) -> np.ndarray:
  """majority_vote(probs[subset.models]): [M, N, C] probabilities (the same M models, in the
  same order, as the search) -> [N] int64 predicted class ids."""
  return _vote(check_probabilities(probs)[list(subset.models)])
