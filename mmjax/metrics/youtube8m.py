"""YouTube-8M evaluation metrics: GAP, MAP, PERR and Hit@1.

Definitions follow the google/youtube-8m starter code (`eval_util.py`,
`average_precision_calculator.py`, `mean_average_precision_calculator.py`).
Inputs are scores s [N, C] and labels y [N, C]; a label is positive when
y > 0. Let T_n be the top k = min(top_k, C) classes of video n by score.

  GAP   Pool the N * k pairs {(s_nc, y_nc) : c in T_n}, rank them by score
        descending and take
          AP = (1 / P) * sum_i prec@i * rel_i,
        where P = sum_nc y_nc counts every positive label, also those that
        never reached a T_n. P = 0 gives 0.
  MAP   For each class c, rank only the videos with c in T_n and take
          AP_c = (1 / P_c) * sum_i prec@i * rel_i,   P_c = sum_n y_nc;
        MAP is the mean of AP_c over the classes with P_c > 0 (0 if none).
  Hit@1 mean_n y[n, argmax_c s_nc].
  PERR  For video n with k_n positives, the fraction of its k_n best-scored
        classes that are positive and have a score > 0 (the starter code's
        `if predictions[row][label_index] > 0`); a video with k_n = 0 scores 0
        and stays in the mean over all N videos.

Ties in scores are broken towards the smaller class id within a video and
towards the earlier video in pooled rankings, so results are deterministic
and do not depend on how the videos are split into batches.

Level-wise metrics (seed 001, cross-modal video categorization, Tables 4 and 8): for level
l, keep the classes at level l, discard the videos that have neither a positive label nor
a score >= 0.5 on those classes, and compute the four metrics on the rest.

Everything runs in numpy on the host. `Youtube8mMetrics` keeps only
per-video top-k summaries, so 128k videos x 3862 classes never sit in memory.
"""

import re
from typing import Sequence

import numpy as np

_METRICS = ('gap', 'map', 'perr', 'hit_at_1')
_ROW_CHUNK = 1024  # rows per top-k selection step


def gap(predictions, labels, top_k: int = 20) -> float:
  """Global average precision over the pooled per-video top-k predictions.

  Args:
    predictions: [N, C] scores.
    labels: [N, C] ground truth, positive where > 0.
    top_k: predictions kept per video; k = min(top_k, C).

  Returns:
    AP = (1 / P) * sum_i prec@i * rel_i over the N * k pooled pairs ranked by
    score, P = number of positive labels (0.0 when P = 0).
  """
  positives, _, rel = _pooled_top_k(predictions, labels, top_k)
  return _average_precision(rel, positives.sum())


def mean_ap(predictions, labels, top_k: int = 20) -> float:
  """Mean over classes of the AP restricted to the per-video top-k.

  Arguments as for `gap`.

  Returns:
    mean_{c : P_c > 0} (1 / P_c) * sum_i prec@i * rel_i, ranking for class c
    the videos whose top k holds c (0.0 when no class has a positive).
  """
  positives, classes, rel = _pooled_top_k(predictions, labels, top_k)
  class_positives = positives.sum(axis=0)
  return _mean_over_labelled(_class_aps(classes, rel, class_positives),
                             class_positives)


def hit_at_1(predictions, labels) -> float:
  """Fraction of videos whose best-scored class is positive.

  Args:
    predictions: [N, C] scores.
    labels: [N, C] ground truth, positive where > 0.

  Returns:
    mean_n y[n, argmax_c s_nc] (0.0 when N = 0).
  """
  scores, positives = _prepare(predictions, labels)
  return _mean(_hit_at_1_per_video(scores, positives))


def perr(predictions, labels) -> float:
  """Precision at equal recall rate, averaged over all videos.

  Args:
    predictions: [N, C] scores.
    labels: [N, C] ground truth, positive where > 0.

  Returns:
    mean_n |{c in top k_n : y_nc > 0, s_nc > 0}| / k_n, k_n = sum_c y_nc,
    where a video with k_n = 0 contributes 0 (0.0 when N = 0).
  """
  scores, positives = _prepare(predictions, labels)
  num_positives = positives.sum(axis=1)
  top_scores, _, top_hits = _top_k(scores, positives,
                                   max(1, num_positives.max(initial=0)))
  return _mean(_perr_per_video(top_scores, top_hits, num_positives))


class Youtube8mMetrics:
  """Streaming GAP / MAP / PERR / Hit@1, overall and per taxonomy level.

  State: per-video top-k scores, class ids and hits ([n, k] each), per-class
  positive counts [C] (their sum is P), and per-video PERR and Hit@1 [n].
  Per level, an accumulator of the same kind over that level's classes.
  `compute()` over any batch split equals the whole-array functions.
  """

  def __init__(self, num_classes: int, top_k: int = 20,
               class_levels: np.ndarray | None = None,
               level_threshold: float = 0.5,
               class_categories: np.ndarray | None = None,
               category_names: Sequence[str] = ()):
    """Creates an empty accumulator.

    Args:
      num_classes: C, the width of every predictions / labels batch.
      top_k: predictions kept per video; k = min(top_k, C).
      class_levels: optional [C] int levels (`read_taxonomy(...).levels`); classes at
        level -1 only count for the overall metrics.
      level_threshold: a video counts for a group of classes (a level or a
        category) when it has a positive label or a score >= level_threshold
        among them.
      class_categories: optional [C] int level-0 category of each class
        (`Taxonomy.top`, -1 for none), for per-category metrics (seed 001
        Tables 5 and 9) named 'category_<name>/...' after `category_names`.
      category_names: the category names, indexed by `class_categories`.
    """
    if num_classes < 1:
      raise ValueError(f'num_classes must be >= 1, got {num_classes}')
    self.num_classes = num_classes
    self.top_k = top_k
    self._k = _effective_k(top_k, num_classes)
    self._level_threshold = level_threshold
    self._top_scores = [np.empty((0, self._k), np.float32)]
    self._top_classes = [np.empty((0, self._k), _class_dtype(num_classes))]
    self._top_hits = [np.empty((0, self._k), bool)]
    self._perr = [np.empty(0)]
    self._hit_at_1 = [np.empty(0)]
    self._class_positives = np.zeros(num_classes, np.int64)
    self._groups = {**_level_groups(class_levels, num_classes, top_k),
                    **_category_groups(class_categories, category_names, num_classes, top_k)}

  def update(self, predictions, labels, weights=None) -> None:
    """Adds one batch.

    Args:
      predictions: [B, C] scores.
      labels: [B, C] ground truth, positive where > 0.
      weights: optional [B] 0/1; rows with weight 0 are padding and ignored.
    """
    scores, positives = _prepare(predictions, labels, self.num_classes)
    if weights is not None:
      keep = _weight_mask(weights, scores.shape[0])
      if not keep.all():
        scores, positives = scores[keep], positives[keep]
    self._accumulate(scores, positives)
    for columns, level_metrics in self._groups.values():
      level_scores = np.take(scores, columns, axis=1)
      level_positives = np.take(positives, columns, axis=1)
      present = (level_positives.any(axis=1)
                 | (level_scores >= self._level_threshold).any(axis=1))
      if not present.all():
        level_scores, level_positives = (level_scores[present],
                                         level_positives[present])
      level_metrics._accumulate(level_scores, level_positives)

  def compute(self) -> dict:
    """Returns the metrics of everything added so far.

    Returns:
      {'gap', 'map', 'perr', 'hit_at_1': float, 'num_examples': int}, plus
      'level_{l}/<same keys>' for each level l when class_levels was given and
      'category_<name>/<same keys>' for each category when class_categories
      was. Metrics over zero videos are 0.0.
    """
    result = self._compute_overall()
    for group, (_, group_metrics) in self._groups.items():
      for name, value in group_metrics.compute().items():
        result[f'{group}/{name}'] = value
    return result

  def _accumulate(self, scores: np.ndarray, positives: np.ndarray) -> None:
    """Stores the summaries of [B, C] float scores and bool positives."""
    num_positives = positives.sum(axis=1)
    # One selection wide enough for both the top k and PERR's top k_n; its
    # first k columns equal the top k since the order is total.
    width = max(self._k, num_positives.max(initial=0))
    top_scores, top_classes, top_hits = _top_k(scores, positives, width)
    self._top_scores.append(np.ascontiguousarray(top_scores[:, :self._k]))
    self._top_classes.append(np.ascontiguousarray(top_classes[:, :self._k]))
    self._top_hits.append(np.ascontiguousarray(top_hits[:, :self._k]))
    self._perr.append(_perr_per_video(top_scores, top_hits, num_positives))
    self._hit_at_1.append(_hit_at_1_per_video(scores, positives))
    self._class_positives += positives.sum(axis=0)

  def _compute_overall(self) -> dict:
    """Overall metrics from the stored summaries."""
    classes, rel = _rank_pooled(np.concatenate(self._top_scores),
                                np.concatenate(self._top_classes),
                                np.concatenate(self._top_hits))
    perr_values = np.concatenate(self._perr)
    return {
        'gap': _average_precision(rel, self._class_positives.sum()),
        'map': _mean_over_labelled(
            _class_aps(classes, rel, self._class_positives),
            self._class_positives),
        'perr': _mean(perr_values),
        'hit_at_1': _mean(np.concatenate(self._hit_at_1)),
        'num_examples': int(perr_values.size),
    }


def error_rates(metrics: dict) -> dict:
  """Converts metrics to error rates in percent, as the paper reports them.

  Args:
    metrics: output of `Youtube8mMetrics.compute()` (or any {name: value}).

  Returns:
    {'err_gap': 100 * (1 - gap), ...}; a level prefix stays in front
    ('level_0/gap' -> 'level_0/err_gap'); 'num_examples' entries are dropped.
  """
  rates = {}
  for key, value in metrics.items():
    prefix, _, name = key.rpartition('/')
    if name in _METRICS:
      rates[f'{prefix}/err_{name}' if prefix else f'err_{name}'] = (
          100.0 * (1.0 - value))
  return rates


def _prepare(predictions, labels, num_classes: int | None = None):
  """Returns ([N, C] float scores, [N, C] bool positives) after shape checks."""
  scores = np.asarray(predictions)
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float64)
  positives = np.asarray(labels) > 0
  if scores.ndim != 2 or positives.shape != scores.shape:
    raise ValueError('predictions and labels must both be [N, C], got '
                     f'{scores.shape} and {positives.shape}')
  if scores.shape[1] < 1:
    raise ValueError('predictions must have at least one class')
  if num_classes is not None and scores.shape[1] != num_classes:
    raise ValueError(f'expected {num_classes} classes, got {scores.shape[1]}')
  return scores, positives


def _weight_mask(weights, batch_size: int) -> np.ndarray:
  """Returns the [B] bool mask of rows with weight 1; weights must be 0/1."""
  weights = np.asarray(weights)
  if weights.shape != (batch_size,):
    raise ValueError(f'weights must be [{batch_size}], got {weights.shape}')
  if not np.isin(weights, (0, 1)).all():
    raise ValueError('weights must be 0 or 1')
  return weights == 1


def _effective_k(top_k: int, num_classes: int) -> int:
  """Returns min(top_k, C); top_k must be >= 1."""
  if top_k < 1:
    raise ValueError(f'top_k must be >= 1, got {top_k}')
  return min(top_k, num_classes)


def _class_dtype(num_classes: int) -> np.dtype:
  """Smallest unsigned dtype for class ids < C (uint16 sorts by radix)."""
  return np.min_scalar_type(num_classes - 1)


def _top_k(scores: np.ndarray, positives: np.ndarray, k: int):
  """Per-video top k, ordered by score descending, then class id ascending.

  Args:
    scores: [N, C] float.
    positives: [N, C] bool.
    k: 1 <= k <= C.

  Returns:
    ([N, k] scores, [N, k] class ids, [N, k] bool hits).
  """
  # Row chunks bound the [rows, C] temporaries of whole-array calls.
  num_chunks = max(1, -(-scores.shape[0] // _ROW_CHUNK))
  classes = np.concatenate([_top_k_indices(chunk, k)
                            for chunk in np.array_split(scores, num_chunks)])
  return (np.take_along_axis(scores, classes, axis=1),
          classes.astype(_class_dtype(scores.shape[1])),
          np.take_along_axis(positives, classes, axis=1))


def _top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
  """[N, C] scores -> [N, k] class ids, by (score desc, class id asc)."""
  num_videos, num_classes = scores.shape
  if k == num_classes:
    return np.argsort(-scores, axis=1, kind='stable')
  kth = np.partition(scores, num_classes - k, axis=1)[:, num_classes - k, None]
  selected = scores >= kth
  flat = np.flatnonzero(selected)
  tied = np.bincount(flat // num_classes, minlength=num_videos) != k
  if tied.any():
    # Rows with scores tied at the cut select the first k of a stable sort.
    rows = np.flatnonzero(tied)
    best = np.argsort(-scores[rows], axis=1, kind='stable')[:, :k]
    selected[rows] = False
    selected[rows[:, None], best] = True
    flat = np.flatnonzero(selected)
  indices = (flat % num_classes).reshape(num_videos, k)  # class id ascending
  order = np.argsort(-np.take_along_axis(scores, indices, axis=1), axis=1,
                     kind='stable')
  return np.take_along_axis(indices, order, axis=1)


def _pooled_top_k(predictions, labels, top_k: int):
  """The per-video top k of [N, C] predictions, pooled and ranked by score.

  Returns:
    ([N, C] bool positives, [N * k] class ids, [N * k] bool hits), the last
    two in rank order (`_rank_pooled`).
  """
  scores, positives = _prepare(predictions, labels)
  k = _effective_k(top_k, scores.shape[1])
  classes, rel = _rank_pooled(*_top_k(scores, positives, k))
  return positives, classes, rel


def _rank_pooled(top_scores: np.ndarray, top_classes: np.ndarray,
                 top_hits: np.ndarray):
  """Pools [N, k] summaries and ranks them by score descending (stable).

  Returns:
    ([N * k] class ids, [N * k] bool hits) in rank order.
  """
  order = np.argsort(-top_scores.ravel(), kind='stable')
  return top_classes.ravel()[order], top_hits.ravel()[order]


def _average_precision(rel: np.ndarray, num_positives: int) -> float:
  """AP = (1 / P) * sum_i prec@i * rel_i for [M] bool hits in rank order."""
  if num_positives == 0:
    return 0.0
  ranks = np.flatnonzero(rel) + 1
  precisions = np.arange(1, ranks.size + 1) / ranks
  return float(precisions.sum() / num_positives)


def _class_aps(classes: np.ndarray, rel: np.ndarray,
               class_positives: np.ndarray) -> np.ndarray:
  """Per-class AP from pooled pairs in rank order.

  Args:
    classes: [M] class ids, pairs ranked by score descending.
    rel: [M] bool hits, same order.
    class_positives: [C] P_c, positives of each class in the ground truth.

  Returns:
    [C] AP_c = (1 / P_c) * sum_i prec@i * rel_i over the pairs of class c in
    rank order (0 where P_c = 0).
  """
  num_classes = class_positives.size
  grouped = np.argsort(classes, kind='stable')  # by class, rank order within
  classes, rel = classes[grouped], rel[grouped]
  hit_at = np.flatnonzero(rel)
  hit_classes = classes[hit_at]
  rank = hit_at - _segment_starts(classes, num_classes)[hit_classes] + 1
  hits_so_far = (np.arange(hit_at.size)
                 - _segment_starts(hit_classes, num_classes)[hit_classes] + 1)
  sums = np.bincount(hit_classes, weights=hits_so_far / rank,
                     minlength=num_classes)
  return np.divide(sums, class_positives, out=np.zeros(num_classes),
                   where=class_positives > 0)


def _segment_starts(sorted_ids: np.ndarray, num_ids: int) -> np.ndarray:
  """[M] sorted ids in [0, num_ids) -> [num_ids] first position of each id."""
  counts = np.bincount(sorted_ids, minlength=num_ids)
  return np.cumsum(counts) - counts


def _mean_over_labelled(class_aps: np.ndarray,
                        class_positives: np.ndarray) -> float:
  """Mean of [C] AP_c over classes with P_c > 0 (0.0 if none)."""
  return _mean(class_aps[class_positives > 0])


def _perr_per_video(top_scores: np.ndarray, top_hits: np.ndarray,
                    num_positives: np.ndarray) -> np.ndarray:
  """Per-video PERR.

  Args:
    top_scores: [N, K] scores in rank order, K >= max_n k_n.
    top_hits: [N, K] bool hits, same order.
    num_positives: [N] k_n.

  Returns:
    [N] |{i < k_n : hit_ni, score_ni > 0}| / k_n, 0 where k_n = 0.
  """
  in_top = np.arange(top_scores.shape[1]) < num_positives[:, None]
  correct = (top_hits & (top_scores > 0) & in_top).sum(axis=1)
  return correct / np.maximum(num_positives, 1)


def _hit_at_1_per_video(scores: np.ndarray,
                        positives: np.ndarray) -> np.ndarray:
  """[N, C] -> [N] float y[n, argmax_c s_nc]."""
  best = scores.argmax(axis=1)
  return positives[np.arange(scores.shape[0]), best].astype(np.float64)


def _mean(values: np.ndarray) -> float:
  """Mean of [M] values, 0.0 when M = 0."""
  return float(values.mean()) if values.size else 0.0


def _level_groups(class_levels, num_classes: int, top_k: int) -> dict:
  """{'level_<l>': ([C_l] class ids, Youtube8mMetrics over them)} for levels >= 0."""
  return _groups(class_levels, num_classes, top_k, 'class_levels',
                 lambda level: f'level_{level}')


def _category_groups(class_categories, names: Sequence[str], num_classes: int,
                     top_k: int) -> dict:
  """{'category_<name>': ([C_k] class ids, Youtube8mMetrics over them)} per category (its
  name lowercased, runs of other characters than [a-z0-9] as '_')."""
  slugs = [re.sub(r'[^a-z0-9]+', '_', str(name).lower()).strip('_') for name in names]
  return _groups(class_categories, num_classes, top_k, 'class_categories',
                 lambda k: f'category_{slugs[k] if slugs.count(slugs[k]) == 1 else k}')


def _groups(class_group, num_classes: int, top_k: int, what: str, name) -> dict:
  """{name(g): (class ids of group g, Youtube8mMetrics over them)} for every group id g >= 0
  of class_group ([C] ints)."""
  if class_group is None:
    return {}
  class_group = np.asarray(class_group)
  if class_group.shape != (num_classes,):
    raise ValueError(f'{what} must be [{num_classes}], got {class_group.shape}')
  accumulators = {}
  for group in np.unique(class_group[class_group >= 0]):
    columns = np.flatnonzero(class_group == group)
    accumulators[name(int(group))] = (columns, Youtube8mMetrics(columns.size, top_k))
  return accumulators
