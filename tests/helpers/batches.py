"""Helpers for pipeline tests: take batches, compare batch lists."""

import numpy as np


def take(ds_or_iter, n):
  """The first n items of a dataset or iterator."""
  it = iter(ds_or_iter)
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  """Two lists of dict batches are equal key by key and array by array."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
