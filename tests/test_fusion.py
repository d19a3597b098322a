"""Decision-level fusion against numpy transcriptions of its formulas and hand-built votes."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score

from mmjax.fusion import (
  MAX_SUBSET_MODELS,
  VoteSubset,
  apply_vote_subset,
  best_vote_subset,
  check_labels,
  entropy_fusion,
  entropy_weights,
  majority_vote,
  weighted_average,
  weighted_f1,
)


def _random_probs(shape, seed=0, sharpness=2.0):
  logits = np.random.default_rng(seed).normal(size=shape) * sharpness
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return exp / exp.sum(axis=-1, keepdims=True)


# --- entropy fusion (seed 004 eq. 5-7) --------------------------------------------------------

def _entropy_fusion_loops(probs):
  """Seed 004 eq. 5-7 example by example, model by model."""
  num_models, num_examples, num_classes = probs.shape
  fused = np.zeros((num_examples, num_classes))
  for n in range(num_examples):
    entropies = [-sum(p * np.log(p) for p in probs[i, n] if p > 0) for i in range(num_models)]
    for i in range(num_models):
      weight = (1 - entropies[i] / sum(entropies)) / (num_models - 1)
      fused[n] += weight * probs[i, n]
  return fused


def test_entropy_fusion_is_eq_5_to_7():
  probs = _random_probs((3, 6, 4))
  probs[1, 2] = [0.0, 0.5, 0.5, 0.0]  # 0 log 0 = 0
  np.testing.assert_allclose(entropy_fusion(probs), _entropy_fusion_loops(probs), rtol=1e-12)
  np.testing.assert_allclose(entropy_fusion(jnp.asarray(probs)), _entropy_fusion_loops(probs),
                             rtol=1e-5)


def test_entropy_weights_sum_to_1_and_favour_the_confident_model():
  probs = _random_probs((4, 5, 3), seed=1, sharpness=0.5)
  probs[2] = np.array([0.96, 0.02, 0.02])  # the most confident model on every example
  weights = entropy_weights(probs)
  assert weights.shape == (4, 5)
  np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-12)
  assert np.all(np.argmax(weights, axis=0) == 2)
  entropy = -(probs * np.log(probs)).sum(-1)
  np.testing.assert_array_equal(np.argsort(weights, axis=0), np.argsort(-entropy, axis=0))
  np.testing.assert_allclose(entropy_fusion(probs).sum(axis=-1), 1.0, rtol=1e-12)


def test_entropy_weights_two_models_closed_form():
  probs = _random_probs((2, 7, 5), seed=2)
  entropy = -(probs * np.log(probs)).sum(-1)
  weights = entropy_weights(probs)
  np.testing.assert_allclose(weights[0], entropy[1] / entropy.sum(0), rtol=1e-12)
  np.testing.assert_allclose(weights[1], entropy[0] / entropy.sum(0), rtol=1e-12)


def test_entropy_weights_all_one_hot_are_equal():
  probs = np.zeros((3, 2, 4))
  probs[0, :, 0] = probs[1, :, 1] = probs[2, :, 3] = 1.0
  weights = entropy_weights(probs)
  np.testing.assert_array_equal(weights, np.full((3, 2), 1 / 3))
  fused = entropy_fusion(probs)
  assert np.all(np.isfinite(fused))
  np.testing.assert_allclose(fused, np.tile([1 / 3, 1 / 3, 0, 1 / 3], (2, 1)))


def test_entropy_fusion_single_model_is_identity():
  probs = _random_probs((1, 3, 4))
  np.testing.assert_allclose(entropy_fusion(probs), probs[0])


# --- weighted average ------------------------------------------------------------------------

def test_weighted_average_is_np_average():
  probs = _random_probs((3, 4, 5), seed=3)
  np.testing.assert_allclose(weighted_average(probs), probs.mean(0))
  weights = [2.0, 0.0, 1.0]
  np.testing.assert_allclose(weighted_average(probs, weights),
                             np.average(probs, axis=0, weights=weights))


@pytest.mark.parametrize("weights, message", [([1.0, -1.0, 1.0], ">= 0"), ([0, 0, 0], "not all 0"),
                                              ([1.0, 1.0], r"\[M\] = \[3\]")])
def test_weighted_average_rejects_bad_weights(weights, message):
  with pytest.raises(ValueError, match=message):
    weighted_average(_random_probs((3, 2, 2)), weights)


# --- majority vote ---------------------------------------------------------------------------

def test_majority_vote_hand_built():
  probs = np.array([
      [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.4, 0.5, 0.1]],
      [[0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]],
      [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]],
  ])
  # example 0: votes 0, 0, 1 -> 0; example 1: 2, 1, 2 -> 2; example 2: 1, 1, 1 -> 1.
  np.testing.assert_array_equal(majority_vote(probs), [0, 2, 1])


def test_majority_vote_2_2_tie_goes_to_highest_mean_probability():
  # votes 0, 0, 1, 1; mean probabilities 0.305, 0.31, 0.385: class 1 wins the tie (class 2 has
  # the highest mean but no votes).
  probs = np.array([[[0.41, 0.2, 0.39]], [[0.41, 0.2, 0.39]], [[0.2, 0.42, 0.38]],
                    [[0.2, 0.42, 0.38]]])
  np.testing.assert_array_equal(majority_vote(probs), [1])


def test_majority_vote_full_tie_goes_to_lowest_index():
  # votes 2 and 1 with equal mean probabilities 0.5 for both classes.
  probs = np.array([[[0.0, 0.4, 0.6]], [[0.0, 0.6, 0.4]]])
  np.testing.assert_array_equal(majority_vote(probs), [1])


# --- best vote subset (seed 000) -------------------------------------------------------------

def _planted_ensemble(num_examples=300, num_classes=4, seed=4):
  """5 confident models: 0, 2 and 3 right 70% of the time with independent errors, 1 and 4 noise
  (equally confident when wrong, so the vote's tie rule cannot tell right from wrong)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples)
  votes = rng.integers(0, num_classes, (5, num_examples))
  for model in (0, 2, 3):
    right = rng.random(num_examples) < 0.7
    votes[model, right] = labels[right]
  probs = 0.1 * _random_probs((5, num_examples, num_classes), seed=seed, sharpness=0.3)
  probs[np.arange(5)[:, None], np.arange(num_examples), votes] += 0.9
  return probs, labels


def test_best_vote_subset_finds_planted_models():
  probs, labels = _planted_ensemble()
  subset = best_vote_subset(probs, labels)
  assert isinstance(subset, VoteSubset)
  assert subset.models == (0, 2, 3)
  assert len(subset.scores) == 2 ** 5 - 1
  vote = majority_vote(probs[[0, 2, 3]])
  assert subset.score == pytest.approx(f1_score(labels, vote, average="weighted"), abs=1e-12)
  np.testing.assert_array_equal(apply_vote_subset(probs, subset), vote)


def test_best_vote_subset_min_size_and_tie_rule():
  probs, labels = _planted_ensemble()
  assert all(len(models) >= 2 for models in best_vote_subset(probs, labels, min_size=2).scores)
  # every subset scores the same: the smallest, lexicographically first wins.
  assert best_vote_subset(probs, labels, metric=lambda y, p: 1.0).models == (0,)


def test_weighted_f1_is_sklearn():
  rng = np.random.default_rng(5)
  labels, predicted = rng.integers(0, 5, 50), rng.integers(0, 6, 50)
  assert weighted_f1(labels, predicted) == pytest.approx(
      f1_score(labels, predicted, average="weighted"), abs=1e-12)


# --- input checks ----------------------------------------------------------------------------

def test_logits_name_the_row():
  probs = _random_probs((2, 9, 3))
  probs[1, 7] = [0.9, 0.53, 0.3]
  with pytest.raises(ValueError, match=r"probs\[1, 7\] sums to 1.73, not 1.*not logits"):
    entropy_fusion(probs)
  with pytest.raises(ValueError, match=r"probs\[0, 0, \d\] = -.* is negative.*not logits"):
    majority_vote(np.random.default_rng(0).normal(size=(2, 3, 4)))


@pytest.mark.parametrize("fuse", [entropy_fusion, weighted_average, majority_vote])
def test_nan_and_wrong_ndim_raise(fuse):
  probs = _random_probs((2, 3, 4))
  probs[0, 1, 2] = np.nan
  with pytest.raises(ValueError, match=r"probs\[0, 1, 2\] is nan"):
    fuse(probs)
  with pytest.raises(ValueError, match=r"\[M, N, C\].*\(3, 4\)"):
    fuse(_random_probs((3, 4)))


def test_bad_labels_raise():
  probs = _random_probs((2, 4, 3))
  with pytest.raises(ValueError, match=r"val_labels\[2\] = 3 is not a class id in \[0, 3\)"):
    best_vote_subset(probs, [0, 1, 3, 2])
  with pytest.raises(ValueError, match=r"\[N\] = \[4\]"):
    best_vote_subset(probs, [0, 1, 2])
  with pytest.raises(ValueError, match="integer"):
    check_labels(np.zeros(4), 4, 3)


def test_too_many_models_raise():
  num_models = MAX_SUBSET_MODELS + 1
  probs = np.full((num_models, 2, 2), 0.5)
  with pytest.raises(ValueError, match=f"M <= {MAX_SUBSET_MODELS}"):
    best_vote_subset(probs, [0, 1])
  with pytest.raises(ValueError, match="min_size"):
    best_vote_subset(probs[:3], [0, 1], min_size=4)


def test_all_subsets_enumerated_in_size_then_lexicographic_order():
  probs, labels = _planted_ensemble(num_examples=20)
  expected = [models for size in range(1, 6) for models in itertools.combinations(range(5), size)]
  assert list(best_vote_subset(probs, labels).scores) == expected
