"""Classification and retrieval metrics against scikit-learn and brute force."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mmjax.metrics import ClassificationMetrics, RetrievalMetrics
from mmjax.metrics.retrieval import recall_at_k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_and_weighted_f1_match_sklearn_streaming_with_padding(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 6, 97)
  labels[labels == 5] = 4  # a class that is never true (but may be predicted)
  scores = rng.standard_normal((97, 6)) + 1.5 * np.eye(6)[labels]
  metrics = ClassificationMetrics(6)
  for lo in range(0, 97, 32):  # batches of 32, the last padded with weight-0 junk
    hi = min(lo + 32, 97)
    pad = 32 - (hi - lo)
    metrics.update(np.concatenate([scores[lo:hi], rng.standard_normal((pad, 6))]),
                   np.concatenate([labels[lo:hi], np.zeros(pad, np.int64)]),
                   np.concatenate([np.ones(hi - lo), np.zeros(pad)]))
  out = metrics.compute()
  predicted = scores.argmax(1)
  assert out["num_examples"] == 97
  assert out["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
  assert out["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted",
                                                      zero_division=0))
  assert out["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro",
                                                   zero_division=0))


def test_retrieval_recall_against_brute_force_with_duplicate_captions():
  rng = np.random.default_rng(0)
  n = 40
  caption_ids = rng.integers(0, 25, n)
  images, texts = rng.standard_normal((n, 8)), rng.standard_normal((n, 8))
  out = recall_at_k(images, texts, caption_ids, ks=(1, 5))
  def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = unit(images) @ unit(texts).T
  for k in (1, 5):
    i2t = np.mean([any(caption_ids[j] == caption_ids[i] for j in np.argsort(-sim[i])[:k])
                   for i in range(n)])
    t2i = np.mean([any(caption_ids[i] == caption_ids[j] for i in np.argsort(-sim[:, j])[:k])
                   for j in range(n)])
    assert out[f"i2t_r@{k}"] == pytest.approx(i2t) and out[f"t2i_r@{k}"] == pytest.approx(t2i)


def test_retrieval_metrics_group_identical_token_rows_and_skip_padding():
  ids = np.array([[1, 5, 2], [1, 6, 2], [1, 5, 2], [0, 0, 0]])
  texts = np.array([[1.0, 0], [0, 1], [1, 0], [1, 0]])
  images = np.array([[0.9, 0.1], [0.1, 0.9], [1, 0.2], [0, 1]])
  metrics = RetrievalMetrics(ks=(1,))
  metrics.update(images, texts, ids, np.array([1, 1, 1, 0]))
  out = metrics.compute()
  assert out == {"i2t_r@1": 1.0, "t2i_r@1": 1.0, "num_examples": 3}
