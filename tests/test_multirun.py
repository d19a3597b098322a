"""Protocols of several training runs (mmjax.train.multirun) on tiny AV-digits runs: k-fold and
self-training resume where they stopped, self-training never sees the hidden labels, offline
G-Blend writes the weights the task then reads, PNAO shrinks the model round by round and
rewinds the learning-rate schedule."""

import json
import os

import numpy as np
import pytest
from conftest import config_defaults, load_config

from mmjax import fusion
from mmjax.data import modality_arrays
from mmjax.projects.avdigits import model as avmodel
from mmjax.tasks import get_task
from mmjax.train import multirun


def _config(*variants):
  """Tiny runs of 4 steps, evaluated once at the end ('eval' and 'test' only, plus G-Blend's)."""
  config = load_config("avdigits", ",".join(variants + ("tiny",)))
  gblend = {k: v for k, v in config.evals.items() if k.startswith("gblend")}
  config.evals = config_defaults().eval_splits(eval={}, test={"eval_split": "test"})
  with config.unlocked():
    config.evals.update(gblend)
  config.total_steps, config.log_every_steps = 4, 2
  config.eval_every_steps, config.checkpoint_every_steps = 0, 4
  return config


def _train_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return sum(json.loads(line)["split"] == "train" for line in f)


class _Killed(Exception):
  pass


def test_k_fold_resumes_at_the_fold_where_it_stopped(cache_dir, tmp_path):
  config, root = _config(), str(tmp_path)

  def kill_after_first(fold, _):
    if fold == 0:
      raise _Killed

  with pytest.raises(_Killed):
    multirun.k_fold(config, root, folds=2, on_fold=kill_after_first)
  trained = _train_rows(os.path.join(root, "fold_0"))
  result = multirun.k_fold(config, root, folds=2)
  assert _train_rows(os.path.join(root, "fold_0")) == trained  # only evaluated again
  assert result["fold_probs"].shape == (2, 474, 10) and len(result["fold_metrics"]) == 2
  np.testing.assert_allclose(result["mean_probs"], result["fold_probs"].mean(0))
  folds = [modality_arrays.load_split(os.path.join(root, f"fold_{f}", "data", "validation.npz"))
           for f in range(2)]
  assert not set(folds[0].ids) & set(folds[1].ids)
  assert len(folds[0]) + len(folds[1]) == 2032
  train_0 = modality_arrays.load_split(os.path.join(root, "fold_0", "data", "train.npz"))
  assert set(train_0.ids) == set(folds[1].ids)
  assert fusion.entropy_fusion(result["fold_probs"]).shape == (474, 10)


def test_self_training_hides_labels_adds_top_k_per_class_and_resumes(cache_dir, tmp_path):
  config, root = _config(), str(tmp_path)
  first = multirun.self_training(config, root, rounds=1, top_k=2, labelled_fraction=0.1)
  assert [r["round"] for r in first] == [0, 1]
  pool = modality_arrays.load_split(os.path.join(root, "pool", "unlabelled.npz"))
  assert not pool.labels.any()  # hidden: the truth is only in pool/truth.npz
  assert first[0]["train_rows"] == 203 and len(pool) == 2032 - 203
  assert first[1]["train_rows"] == 203 + first[0]["added"] and first[0]["added"] <= 2 * 10
  trained = _train_rows(os.path.join(root, "round_1"))
  second = multirun.self_training(config, root, rounds=2, top_k=2, labelled_fraction=0.1)
  assert _train_rows(os.path.join(root, "round_1")) == trained  # resumed, not retrained
  assert [r["round"] for r in second] == [0, 1, 2]
  assert second[:1] == first[:1]
  round_2 = modality_arrays.load_split(os.path.join(root, "round_2", "data", "train.npz"))
  assert len(round_2) == 203 + first[0]["added"] + second[1]["added"]
  added = json.load(open(os.path.join(root, "round_0", "added.json")))
  predicted = np.bincount(list(added.values()), minlength=10)
  assert predicted.max() <= 2  # top_k per class


def test_pseudo_label_takes_the_most_confident_rows_per_class():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
  available = np.array([True, True, True, True, False])
  assert multirun.pseudo_label(probs, available, top_k=2) == {0: 0, 2: 0, 3: 1}


def test_offline_gblend_weights_file_is_read_by_the_task(cache_dir, tmp_path):
  heads = ("image", "fused")  # the image-only model's two heads: two short runs
  config = _config("image", "gblend")
  path = multirun.offline_gblend(config, str(tmp_path), heads, steps=4)
  record = json.load(open(path))
  weights = np.array([record["weights"][h] for h in heads])
  assert np.isclose(weights.sum(), 1) and np.all(weights >= 0)
  assert sorted(os.listdir(tmp_path)) == ["gblend_fused", "gblend_image", "gblend_weights.json"]
  for i, head in enumerate(heads):  # each weight from its own run's first and last evaluation
    evals = multirun.evaluations(str(tmp_path / f"gblend_{head}"), "gblend_holdout")
    assert [e["step"] for e in evals] == [2, 4]
    assert record["losses"]["holdout_end"][i] == evals[-1][f"loss_{head}"]
  task = get_task(multirun.with_values(_config("image"), **{"loss.gblend.mode": "offline",
                                                            "loss.gblend.weights_file": path}))
  np.testing.assert_allclose([task.blended.fixed_weights[h] for h in heads], weights, rtol=1e-6)
  with pytest.raises(ValueError, match=r"config.evals has no split\(s\) \['gblend_train', "
                     r"'gblend_holdout'\]"):
    multirun.offline_gblend(_config("image"), str(tmp_path / "x"), heads, steps=4)


def test_pnao_rounds_shrink_the_model_and_rewind_the_schedule(cache_dir, tmp_path):
  config = _config("l1")
  config.optimizer.schedule, config.optimizer.decay_steps = "cosine", config.total_steps
  result = multirun.pnao(config, str(tmp_path), rounds=1, k=0.5,
                         consumers=avmodel.consumers, keep=r"head.*")
  counts = [r["params"] for r in result["rounds"]]
  assert counts[0] > counts[1]
  assert result["best_round"] in (0, 1) and os.path.getsize(tmp_path / "pnao.png") > 0
  for r in (0, 1):  # every round starts the schedule at its beginning
    rates = [json.loads(line)["learning_rate"] for line in
             open(tmp_path / f"round_{r}" / "metrics.jsonl") if '"train"' in line]
    assert rates[0] > 0.5 * config.optimizer.learning_rate > rates[-1], (r, rates)
  widths = json.load(open(tmp_path / "round_1" / "widths.json"))
  assert all(1 <= widths[n] <= 8 for n in widths) and sum(widths.values()) < 6 * 8
