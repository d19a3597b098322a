"""The non-finite guard: a train batch poisoned with NaN at a chosen step changes nothing in the
state (params, optimizer, model and task state), is counted in metrics.jsonl, and stops the run
once more than config.max_nonfinite_steps steps in a row were skipped."""

import hashlib
import json
import os

import jax
import numpy as np
import pytest
from conftest import load_config
from helpers import runs

from mmjax.projects.youtube8m.task import Youtube8mTask
from mmjax.tasks import register
from mmjax.train import NonFiniteLossError, train_and_evaluate
from mmjax.train.steps import sum_of_squares
from mmjax.train.trainer import restore_for_eval


def _fingerprint(batch) -> int:
  return int.from_bytes(hashlib.sha256(np.asarray(batch["labels"]).tobytes()).digest()[:7], "big")


@register("poisoned_youtube8m")
class _PoisonedTask(Youtube8mTask):
  """Train batches whose labels fingerprint is in config.poison get NaN labels (the frames are
  uint8, which cannot hold a NaN)."""

  def train_dataset(self, batch_size, seed, process_index, process_count):
    targets = set(self.config.poison)

    def poison(batch):
      if _fingerprint(batch) in targets:
        batch = dict(batch, labels=np.full_like(batch["labels"], np.nan))
      return batch

    dataset = super().train_dataset(batch_size, seed, process_index, process_count)
    return dataset.map(poison)


def _poisoned_config(step: int, **values):
  """ytb8m:tiny whose train batch number `step` (1-based) carries NaN features."""
  config = load_config("ytb8m", "tiny")
  task = Youtube8mTask(config)
  task.prepare(lambda *_: None)
  iterator = iter(task.train_dataset(config.batch_size, config.seed, 0, 1))
  target = [_fingerprint(next(iterator)) for _ in range(step)][-1]
  with config.unlocked():
    config.task, config.poison = "poisoned_youtube8m", (target,)
  for key, value in values.items():
    config[key] = value
  return config


def test_a_poisoned_step_stops_the_run_by_default(cache_dir, tmp_path):
  config = _poisoned_config(3, total_steps=8, eval_every_steps=0)
  with pytest.raises(NonFiniteLossError, match=r"step 3: the loss, a gradient or an updated "
                     r"parameter is NaN/inf \(1 step\(s\) in a row, config.max_nonfinite_"
                     r"steps=0\).*there is no checkpoint yet"):
    train_and_evaluate(config, str(tmp_path))
  assert not any(d.isdigit() for d in os.listdir(tmp_path / "checkpoints"))


def test_a_skipped_step_changes_nothing_and_is_counted(cache_dir, tmp_path):
  before = _poisoned_config(3, total_steps=2, eval_every_steps=0, max_nonfinite_steps=1)
  train_and_evaluate(before, str(tmp_path / "two_steps"))
  after = _poisoned_config(3, total_steps=3, eval_every_steps=0, max_nonfinite_steps=1)
  train_and_evaluate(after, str(tmp_path / "three_steps"))
  states = [restore_for_eval(c, str(tmp_path / w))[1]
            for c, w in ((before, "two_steps"), (after, "three_steps"))]
  assert [int(s.step) for s in states] == [2, 3]
  host = [jax.tree.map(np.asarray, (s.params, s.opt_state, s.model_state)) for s in states]
  runs.assert_trees_equal(host[0], host[1])  # step 3 was skipped
  rows = [json.loads(line) for line in open(tmp_path / "three_steps" / "metrics.jsonl")]
  skipped = {r["step"]: r["skipped_steps"] for r in rows if r["split"] == "train"}
  assert skipped == {2: 0, 3: 1}
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(host[1]))


def test_sum_of_squares_matches_numpy_and_flags_every_non_finite_gradient():
  """The guard's gradient check: sum_i g_i^2 over the tree (float64 numpy reference), NaN or
  inf as soon as one element is, and inf on a float32 overflow; integer leaves are skipped."""
  rng = np.random.default_rng(0)
  tree = {"kernel": rng.standard_normal((37, 5)).astype(np.float32),
          "bias": rng.standard_normal((5,)).astype(np.float32),
          "scale": np.float32(1.5), "count": np.arange(3, dtype=np.int32)}
  want = sum(float(np.sum(np.asarray(x, np.float64) ** 2))
             for k, x in tree.items() if k != "count")
  np.testing.assert_allclose(float(jax.jit(sum_of_squares)(tree)), want, rtol=1e-6)
  for bad in (np.nan, np.inf, -np.inf, 3e19):
    poisoned = {**tree, "kernel": tree["kernel"].copy()}
    poisoned["kernel"][4, 2] = bad
    assert not np.isfinite(float(jax.jit(sum_of_squares)(poisoned))), bad
  assert float(sum_of_squares({"count": np.arange(3)})) == 0.0
