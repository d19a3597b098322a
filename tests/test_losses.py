"""Losses against numpy transcriptions of their formulas."""

import numpy as np

from mmjax.losses import multilabel_sigmoid_cross_entropy, weighted_mean


def test_multilabel_sigmoid_cross_entropy_is_starter_code_loss():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 6)).astype(np.float32) * 3
  labels = (rng.random((4, 6)) < 0.3).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  per_example = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(multilabel_sigmoid_cross_entropy(logits, labels),
                             per_example.mean(), rtol=1e-5)
  weights = np.array([1, 0, 1, 0], np.float32)
  np.testing.assert_allclose(multilabel_sigmoid_cross_entropy(logits, labels, weights),
                             per_example[[0, 2]].mean(), rtol=1e-5)


def test_weighted_mean_all_zero_weights_is_zero():
  assert float(weighted_mean(np.ones(3, np.float32), np.zeros(3, np.float32))) == 0.0
