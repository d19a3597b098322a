"""Tests of mmjax.metrics against a loop transcription of the starter code."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mmjax import metrics

# ---------------------------------------------------------------------------
# Loop-based reference: the google/youtube-8m starter code's algorithm.
# ---------------------------------------------------------------------------


def ref_ap(predictions, actuals, num_positives):
  """AveragePrecisionCalculator.ap_at_n(n=None, total_num_positives=P)."""
  if num_positives == 0:
    return 0.0
  order = sorted(range(len(predictions)), key=lambda i: predictions[i],
                 reverse=True)
  ap, poscount = 0.0, 0.0
  delta_recall = 1.0 / num_positives
  for i, index in enumerate(order):
    if actuals[index] > 0:
      poscount += 1
      ap += poscount / (i + 1) * delta_recall
  return ap


def ref_top_k_by_class(predictions, labels, top_k):
  """eval_util.top_k_by_class: per-class lists of the per-video top-k."""
  num_classes = predictions.shape[1]
  k = min(top_k, num_classes)
  triplets = []
  for video in range(predictions.shape[0]):
    indices = np.argpartition(predictions[video], -k)[-k:]
    triplets.extend((c, predictions[video][c], labels[video][c])
                    for c in indices)
  class_predictions = [[] for _ in range(num_classes)]
  class_labels = [[] for _ in range(num_classes)]
  for c, score, label in triplets:
    class_predictions[c].append(score)
    class_labels[c].append(label)
  class_positives = [np.sum(labels[:, c]) for c in range(num_classes)]
  return class_predictions, class_labels, class_positives


def ref_gap(predictions, labels, top_k=20):
  class_predictions, class_labels, class_positives = ref_top_k_by_class(
      predictions, labels, top_k)
  flat_predictions = [s for scores in class_predictions for s in scores]
  flat_labels = [y for ys in class_labels for y in ys]
  return ref_ap(flat_predictions, flat_labels, sum(class_positives))


def ref_map(predictions, labels, top_k=20):
  class_predictions, class_labels, class_positives = ref_top_k_by_class(
      predictions, labels, top_k)
  aps = [ref_ap(class_predictions[c], class_labels[c], class_positives[c])
         for c in range(predictions.shape[1]) if class_positives[c] > 0]
  return float(np.mean(aps)) if aps else 0.0


def ref_perr(predictions, labels):
  """eval_util.calculate_precision_at_equal_recall_rate, quirk included."""
  total = 0.0
  for row in range(labels.shape[0]):
    num_labels = int(np.sum(labels[row]))
    top_indices = np.argpartition(predictions[row], -num_labels)[-num_labels:]
    item_precision = 0.0
    for label_index in top_indices:
      if predictions[row][label_index] > 0:
        item_precision += labels[row][label_index]
    total += item_precision / top_indices.size
  return total / labels.shape[0]


def ref_hit_at_1(predictions, labels):
  return float(labels[np.arange(len(labels)), predictions.argmax(1)].mean())


def ref_all(predictions, labels, top_k=20):
  labels = labels.astype(np.float64)  # float32 sums would lose precision
  return {
      'gap': ref_gap(predictions, labels, top_k),
      'map': ref_map(predictions, labels, top_k),
      'perr': ref_perr(predictions, labels),
      'hit_at_1': ref_hit_at_1(predictions, labels),
      'num_examples': labels.shape[0],
  }


def random_case(seed, num_videos, num_classes, label_dtype=np.float32):
  """Distinct float32 scores of both signs; rows without positives, a class
  without positives, and a few rows with more positives than top_k."""
  rng = np.random.default_rng(seed)
  predictions = rng.normal(size=(num_videos, num_classes)).astype(np.float32)
  labels = rng.random((num_videos, num_classes)) < 0.08
  labels[rng.random(num_videos) < 0.5] |= (rng.random((1, num_classes)) < 0.6)
  labels[rng.random(num_videos) < 0.15] = False
  labels[:, num_classes // 2] = False
  # Correlate scores with labels so the APs are far from 0 and from 1.
  predictions += 1.5 * labels
  return predictions, labels.astype(label_dtype)


SHAPES = [(1, 3, 20), (40, 8, 20), (120, 37, 20), (150, 64, 5), (60, 25, 1)]


def assert_metrics_close(actual, expected):
  assert actual.keys() == expected.keys()
  for key, value in expected.items():
    assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ---------------------------------------------------------------------------
# Whole-array functions.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('num_videos, num_classes, top_k', SHAPES)
@pytest.mark.parametrize('label_dtype', [np.float32, np.int64, bool])
def test_whole_array_matches_reference(num_videos, num_classes, top_k,
                                       label_dtype):
  p, y = random_case(num_videos * num_classes, num_videos, num_classes,
                     label_dtype)
  yf = y.astype(np.float64)
  assert metrics.gap(p, y, top_k) == pytest.approx(ref_gap(p, yf, top_k),
                                                   rel=1e-9)
  assert metrics.mean_ap(p, y, top_k) == pytest.approx(ref_map(p, yf, top_k),
                                                       rel=1e-9)
  assert metrics.perr(p, y) == pytest.approx(ref_perr(p, yf), rel=1e-9)
  assert metrics.hit_at_1(p, y) == pytest.approx(ref_hit_at_1(p, yf),
                                                 rel=1e-12)


def test_hand_computed_3x4():
  # top_k = 2. Per-video top 2 as (score, label), P = 4 positives in total
  # (video 0's class 3 never reaches the top 2):
  #   v0: (0.9, +) c0, (0.8, -) c1      positives c0, c3
  #   v1: (0.7, +) c1, (0.6, -) c2      positive  c1
  #   v2: (0.95, -) c3, (0.5, +) c2     positive  c2
  # GAP: pooled ranking 0.95-, 0.9+, 0.8-, 0.7+, 0.6-, 0.5+
  #   = (1/2 + 2/4 + 3/6) / 4 = 0.375.
  # MAP: c0 [0.9+] -> 1/1; c1 [0.8-, 0.7+] -> 1/2; c2 [0.6-, 0.5+] -> 1/2;
  #   c3 [0.95-] with P_3 = 1 -> 0; mean = (1 + .5 + .5 + 0) / 4 = 0.5.
  # Hit@1: argmax c0 (+), c1 (+), c3 (-) -> 2/3.
  # PERR: v0 top 2 {c0+, c1-} -> 1/2; v1 top 1 {c1+} -> 1; v2 top 1 {c3-}
  #   -> 0; mean = 0.5.
  p = np.array([[0.9, 0.8, 0.1, 0.2],
                [0.3, 0.7, 0.6, 0.05],
                [0.4, 0.1, 0.5, 0.95]])
  y = np.array([[1, 0, 0, 1],
                [0, 1, 0, 0],
                [0, 0, 1, 0]])
  assert metrics.gap(p, y, top_k=2) == pytest.approx(0.375)
  assert metrics.mean_ap(p, y, top_k=2) == pytest.approx(0.5)
  assert metrics.hit_at_1(p, y) == pytest.approx(2 / 3)
  assert metrics.perr(p, y) == pytest.approx(0.5)
  assert ref_gap(p, y, 2) == pytest.approx(0.375)
  assert ref_map(p, y, 2) == pytest.approx(0.5)


def test_map_drops_classes_without_positives():
  # top_k = 1: v0 -> c0 (+), v1 -> c1 (-). P_0 = 2, P_1 = P_2 = 0, so only
  # class 0 counts: AP_0 = (1/1) / 2 = 0.5 (0.25 if class 1 counted as 0).
  p = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1]])
  y = np.array([[1, 0, 0], [1, 0, 0]])
  assert metrics.mean_ap(p, y, top_k=1) == pytest.approx(0.5)
  assert metrics.gap(p, y, top_k=1) == pytest.approx(0.5)


def test_no_positives_gives_zero():
  p = np.random.default_rng(0).random((5, 4))
  y = np.zeros((5, 4))
  assert metrics.gap(p, y) == 0.0
  assert metrics.mean_ap(p, y) == 0.0
  assert metrics.perr(p, y) == 0.0
  assert metrics.hit_at_1(p, y) == 0.0


def test_perr_ignores_non_positive_scores():
  # The only positive is the best-scored class but its score is < 0: the
  # starter code does not count it. A video without positives scores 0 and
  # stays in the mean.
  p = np.array([[-0.1, -0.5, -0.9], [0.9, 0.2, 0.1], [0.3, 0.2, 0.1]])
  y = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]])
  assert metrics.perr(p, y) == pytest.approx(1 / 3)
  assert metrics.hit_at_1(p, y) == pytest.approx(2 / 3)
  assert ref_perr(p, y) == pytest.approx(1 / 3)


def test_full_ranking_matches_sklearn():
  # With top_k = C every pair is ranked: GAP is the AP of the flattened
  # arrays and each class AP is sklearn's (no ties, every class positive).
  rng = np.random.default_rng(1)
  p = rng.random((80, 12))
  y = (rng.random((80, 12)) < 0.3).astype(int)
  y[0] = 1
  assert metrics.gap(p, y, top_k=12) == pytest.approx(
      average_precision_score(y.ravel(), p.ravel()), rel=1e-9)
  class_aps = [average_precision_score(y[:, c], p[:, c]) for c in range(12)]
  assert metrics.mean_ap(p, y, top_k=12) == pytest.approx(
      np.mean(class_aps), rel=1e-9)
  assert metrics.mean_ap(p, y, top_k=50) == metrics.mean_ap(p, y, top_k=12)


def test_ties_break_towards_smaller_class_id():
  p = np.array([[0.5, 0.5, 0.5]])
  assert metrics.gap(p, [[1, 0, 0]], top_k=1) == 1.0
  assert metrics.gap(p, [[0, 1, 0]], top_k=1) == 0.0
  assert metrics.hit_at_1(p, [[1, 0, 0]]) == 1.0
  assert metrics.perr(p, [[1, 1, 0]]) == 1.0
  assert metrics.perr(p, [[0, 1, 1]]) == 0.5


def test_input_validation():
  with pytest.raises(ValueError, match='must both be'):
    metrics.gap(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match='top_k'):
    metrics.mean_ap(np.zeros((2, 3)), np.zeros((2, 3)), top_k=0)
  accumulator = metrics.Youtube8mMetrics(3)
  with pytest.raises(ValueError, match='expected 3 classes'):
    accumulator.update(np.zeros((2, 4)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match='0 or 1'):
    accumulator.update(np.zeros((2, 3)), np.zeros((2, 3)), weights=[0.5, 1])


# ---------------------------------------------------------------------------
# Streaming accumulation.
# ---------------------------------------------------------------------------


def whole_array_metrics(p, y, top_k):
  return {
      'gap': metrics.gap(p, y, top_k),
      'map': metrics.mean_ap(p, y, top_k),
      'perr': metrics.perr(p, y),
      'hit_at_1': metrics.hit_at_1(p, y),
      'num_examples': len(y),
  }


def stream(accumulator, p, y, seed):
  """Feeds p, y in random-size batches, each padded with junk rows."""
  rng = np.random.default_rng(seed)
  bounds = np.sort(rng.choice(np.arange(1, len(y)), size=min(4, len(y) - 1),
                              replace=False))
  for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(y)]):
    size = hi - lo + rng.integers(0, 4)
    real = np.sort(rng.choice(size, hi - lo, replace=False))  # keeps order
    weights = np.zeros(size)
    weights[real] = 1
    batch_p = rng.normal(size=(size, p.shape[1])).astype(p.dtype) + 5
    batch_y = np.ones((size, y.shape[1]), y.dtype)
    batch_p[real], batch_y[real] = p[lo:hi], y[lo:hi]
    accumulator.update(batch_p, batch_y, weights=weights)
  accumulator.update(p[:0], y[:0])
  accumulator.update(p[:0], y[:0], weights=np.zeros(0))
  return accumulator.compute()


@pytest.mark.parametrize('num_videos, num_classes, top_k', SHAPES[1:])
def test_streaming_equals_whole_array(num_videos, num_classes, top_k):
  p, y = random_case(7 * num_videos, num_videos, num_classes)
  expected = whole_array_metrics(p, y, top_k)
  result = stream(metrics.Youtube8mMetrics(num_classes, top_k), p, y, seed=3)
  assert result == expected  # exact: same pooled arrays in the same order
  assert_metrics_close(result, ref_all(p, y, top_k))


def test_streaming_is_exact_with_tied_scores():
  rng = np.random.default_rng(5)
  p = np.round(rng.random((90, 30)), 1)
  y = (rng.random((90, 30)) < 0.2).astype(np.float32)
  expected = whole_array_metrics(p, y, 5)
  for seed in range(3):
    result = stream(metrics.Youtube8mMetrics(30, 5), p, y, seed=seed)
    assert result == expected


def test_empty_accumulator():
  result = metrics.Youtube8mMetrics(4).compute()
  assert result == {'gap': 0.0, 'map': 0.0, 'perr': 0.0, 'hit_at_1': 0.0,
                    'num_examples': 0}


# ---------------------------------------------------------------------------
# Level-wise metrics and taxonomy files.
# ---------------------------------------------------------------------------


def write(tmp_path, text, name='taxonomy.csv'):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_level_wise_matches_reference_on_filtered_arrays(tmp_path):
  num_classes, top_k = 40, 20
  rng = np.random.default_rng(11)
  rows = ['class_index,level,name']
  levels = rng.integers(-1, 3, num_classes)  # -1: absent from the file
  levels[:3] = [0, 1, 2]
  rows += [f'{c},{level},"class {c}, level {level}"'
           for c, level in enumerate(levels) if level >= 0]
  path = write(tmp_path, '\n'.join(rows) + '\n')
  class_levels = metrics.load_taxonomy(path, num_classes)
  np.testing.assert_array_equal(class_levels, levels)

  p = (rng.random((200, num_classes)) ** 6).astype(np.float32)
  y = (rng.random((200, num_classes)) < 0.03).astype(np.float32)
  p += 0.4 * y
  result = stream(metrics.Youtube8mMetrics(num_classes, top_k, class_levels),
                  p, y, seed=2)

  expected = ref_all(p, y, top_k)
  for level in range(3):
    columns = np.flatnonzero(levels == level)
    p_level, y_level = p[:, columns], y[:, columns]
    keep = (y_level > 0).any(1) | (p_level >= 0.5).any(1)
    assert 0 < keep.sum() < len(keep)  # the filter is exercised
    for name, value in ref_all(p_level[keep], y_level[keep], top_k).items():
      expected[f'level_{level}/{name}'] = value
  assert_metrics_close(result, expected)


def test_level_filter_keeps_score_at_threshold():
  # Level 0 = class 0, level 1 = class 1. Video 0 has no positive but a score
  # of exactly 0.5 at level 0; video 1 only a positive at level 1.
  accumulator = metrics.Youtube8mMetrics(2, class_levels=np.array([0, 1]))
  accumulator.update(np.array([[0.5, 0.1], [0.2, 0.3]]),
                     np.array([[0, 0], [0, 1]]))
  result = accumulator.compute()
  assert result['level_0/num_examples'] == 1
  assert result['level_0/hit_at_1'] == 0.0
  assert result['level_1/num_examples'] == 1
  assert result['level_1/hit_at_1'] == 1.0
  assert result['level_1/gap'] == 1.0
  assert result['hit_at_1'] == 0.5


def test_load_taxonomy_without_names(tmp_path):
  path = write(tmp_path, 'class_index,level\n3,2\n\n0,0\n')
  np.testing.assert_array_equal(metrics.load_taxonomy(path, 5),
                                [0, -1, -1, 2, -1])


@pytest.mark.parametrize('text, line, message', [
    ('index,level\n0,0\n', 1, 'header'),
    ('class_index,level,label\n0,0,a\n', 1, 'header'),
    ('', 1, 'header'),
    ('class_index,level\n0,0\n1,x\n', 3, 'integers'),
    ('class_index,level\n0\n', 2, 'fields'),
    ('class_index,level,name\n0,0,a,b\n', 2, 'fields'),
    ('class_index,level\n0,-2\n', 2, 'level must be'),
    ('class_index,level\n1,0\n2,1\n1,1\n', 4, 'duplicate of line 2'),
    ('class_index,level\n5,0\n', 2, r'outside \[0, 5\)'),
    ('class_index,level\n-1,0\n', 2, 'outside'),
])
def test_bad_taxonomy_names_file_and_line(tmp_path, text, line, message):
  path = write(tmp_path, text, name='bad_taxonomy.csv')
  with pytest.raises(ValueError, match=message) as error:
    metrics.load_taxonomy(path, 5)
  assert f'{path}, line {line}:' in str(error.value)


def test_error_rates():
  rates = metrics.error_rates({'gap': 0.8, 'map': 0.25, 'num_examples': 7,
                               'level_1/perr': 1.0, 'level_1/num_examples': 3})
  assert rates == pytest.approx({'err_gap': 20.0, 'err_map': 75.0,
                                 'level_1/err_perr': 0.0})


def test_taxonomy_with_parents_gives_each_class_its_level_0_category(tmp_path):
  path = write(tmp_path, 'class_index,level,name,parent\n'
                         '0,0,Games,\n5,0,Food,\n1,1,"Video game",0\n2,2,GTA 5,1\n'
                         '3,1,Cooking,5\n4,3,"GTA 5 (mods)",2\n')
  taxonomy = metrics.read_taxonomy(path, 7)
  assert taxonomy.categories == ('Games', 'Food')
  np.testing.assert_array_equal(taxonomy.levels, [0, 1, 2, 1, 3, 0, -1])
  np.testing.assert_array_equal(taxonomy.top, [0, 0, 0, 1, 0, 1, -1])
  assert taxonomy.class_name(4) == 'GTA 5 (mods)' and taxonomy.class_name(6) == 'class 6'
  np.testing.assert_array_equal(metrics.load_taxonomy(path, 7), taxonomy.levels)
  # Without a parent column: levels only.
  assert not metrics.read_taxonomy(write(tmp_path, 'class_index,level\n0,0\n', 'l.csv'),
                                   2).has_hierarchy


def test_youtube8m_vocabulary_csv_is_read_directly(tmp_path):
  # The real file's columns; Vertical1 is the level-0 category.
  text = ('Index,TrainVideoCount,KnowledgeGraphId,Name,WikiDescription,Vertical1,Vertical2,'
          'Vertical3,WikiUrl\n'
          '0,788288,/m/03bt1gh,Game,"A game is...",Games,,,https://en.wikipedia.org/wiki/Game\n'
          '1,539945,/m/01mw1,Video game,"A video game...",Games,Arts & Entertainment,,x\n'
          '2,415890,/m/07yv9,Vehicle,"A vehicle...",Autos & Vehicles,,,x\n')
  taxonomy = metrics.read_taxonomy(write(tmp_path, text, 'vocabulary.csv'), 4)
  assert taxonomy.categories == ('Autos & Vehicles', 'Games')
  np.testing.assert_array_equal(taxonomy.top, [1, 1, 0, -1])
  np.testing.assert_array_equal(taxonomy.levels, [1, 1, 1, -1])
  assert [taxonomy.class_name(c) for c in range(4)] == ['Game', 'Video game', 'Vehicle',
                                                        'class 3']
  with pytest.raises(ValueError, match=r'vocabulary.csv, line 2: class 0 has no Vertical1'):
    metrics.read_taxonomy(write(tmp_path, text.replace(',Games,,,https', ',,,,https'),
                                'vocabulary.csv'), 4)


@pytest.mark.parametrize('rows, message', [
    ('0,0,\n1,1,0\n2,2,1\n3,1,2\n', r'line 5: class 3 \(level 1\) has parent 2 at level 2'),
    ('0,0,\n1,1,7\n', r'line 3: class 1 names parent 7, which is not in the file'),
    ('0,0,\n1,1,\n', r'line 3: class 1 \(level 1\) has no parent, so no path to a level-0'),
    ('0,0,1\n1,1,0\n', r'line 2: class 0 is at level 0 .* but names parent 1'),
    ('0,1,1\n1,2,2\n2,3,0\n', r'the parents of class 0 form a cycle: 0 -> 1 -> 2 -> 0'),
])
def test_bad_hierarchy_names_file_and_class(tmp_path, rows, message):
  path = write(tmp_path, 'class_index,level,parent\n' + rows, name='bad_taxonomy.csv')
  with pytest.raises(ValueError, match=message) as error:
    metrics.read_taxonomy(path, 8)
  assert str(path) in str(error.value)


def test_per_category_metrics_match_reference_on_filtered_arrays():
  # Seed 001 Tables 5 and 9: the metrics over the classes under each level-0 category.
  num_classes, top_k = 30, 10
  rng = np.random.default_rng(12)
  categories = rng.integers(-1, 3, num_classes)
  categories[:3] = [0, 1, 2]
  p = (rng.random((150, num_classes)) ** 6).astype(np.float32)
  y = (rng.random((150, num_classes)) < 0.05).astype(np.float32)
  p += 0.4 * y
  result = stream(metrics.Youtube8mMetrics(num_classes, top_k, class_categories=categories,
                                           category_names=('Games', 'Autos & Vehicles', 'Food')),
                  p, y, seed=3)
  expected = ref_all(p, y, top_k)
  for k, name in enumerate(('games', 'autos_vehicles', 'food')):
    columns = np.flatnonzero(categories == k)
    p_k, y_k = p[:, columns], y[:, columns]
    keep = (y_k > 0).any(1) | (p_k >= 0.5).any(1)
    assert 0 < keep.sum() < len(keep)
    for metric, value in ref_all(p_k[keep], y_k[keep], top_k).items():
      expected[f'category_{name}/{metric}'] = value
  assert_metrics_close(result, expected)
  assert metrics.error_rates(result)['category_food/err_gap'] == pytest.approx(
      100 * (1 - result['category_food/gap']))
