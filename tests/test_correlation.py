"""The correlation tower of seed 001 (mmjax/projects/youtube8m/correlation.py): pairs (positives
from one video, negatives across disjoint level-0 categories, deterministic, resumable), the
weighted loss of eq. (1), accuracy / FPR / FNR against scikit-learn, padding; a CM-C model loads
it frozen from the tower's run and it stays bit-identical; bad towers are named."""

import jax
import numpy as np
import pytest
from conftest import load_config
from sklearn.metrics import confusion_matrix

from mmjax.projects.youtube8m.correlation import (
  CorrelationMetrics,
  NoNegativeError,
  choose_partners,
  level0_categories,
  pair_batch,
)
from mmjax.projects.youtube8m.tower import CorrelationTower
from mmjax.tasks import get_task
from mmjax.train import train_and_evaluate
from mmjax.train.checkpoint import CheckpointReader

# Classes 0-1 are in category 0, 2-3 in category 1, 4 in category 2; class 5 has none.
TOP = np.array([0, 0, 1, 1, 2, -1])


def _videos(labels, frames=5):
  labels = np.array(labels, np.float32)
  n = len(labels)
  rng = np.random.default_rng(0)
  lengths = 1 + np.arange(n) % frames
  return {"rgb": rng.normal(size=(n, frames, 3)).astype(np.float32),
          "audio": rng.normal(size=(n, frames, 2)).astype(np.float32) + np.arange(n)[:, None, None],
          "mask": (np.arange(frames)[None] < lengths[:, None]).astype(np.float32),
          "labels": labels, "weight": np.ones(n, np.float32)}


def test_pairs_are_own_audio_or_audio_of_a_disjoint_category():
  labels = [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0],
            [1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]]
  batch = _videos(labels)
  batch["weight"][7] = 0.0  # padding
  categories = level0_categories(batch["labels"], TOP, 3)
  np.testing.assert_array_equal(categories[4], [True, True, False])
  chosen = choose_partners(batch, categories, seed=3)
  pairs = pair_batch(batch, chosen)
  # Video k's audio is offset by k: the offset names the partner.
  partner = [int(np.argmin(np.abs(batch["audio"][:, 0, 0] - a))) for a in pairs["audio"][:, 0, 0]]
  np.testing.assert_array_equal(partner, chosen)
  for i, y in enumerate(pairs["correlated"]):
    if y == 1:
      assert partner[i] == i
    else:  # a real video whose level-0 categories share none with video i
      assert partner[i] != i and not (categories[i] & categories[partner[i]]).any()
      np.testing.assert_array_equal(pairs["audio_mask"][i], batch["mask"][partner[i]])
  np.testing.assert_array_equal(pairs["rgb"], batch["rgb"])
  np.testing.assert_array_equal(pairs["weight"], batch["weight"])
  assert 0 < (pairs["correlated"] == 0).sum() <= 4
  # Deterministic in (seed, batch): a resumed run sees the same pairs.
  np.testing.assert_array_equal(choose_partners(batch, categories, seed=3), chosen)
  with pytest.raises(NoNegativeError, match="no two videos of this batch .* raise "
                     "config.batch_size"):
    same = _videos([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    choose_partners(same, level0_categories(same["labels"], TOP, 3), 0, "raise config.batch_size")


def test_metrics_match_scikit_learn_and_loss_is_equation_1():
  rng = np.random.default_rng(1)
  p, y = rng.random(50), (rng.random(50) < 0.5).astype(np.float32)
  w = (rng.random(50) < 0.9).astype(np.float32)
  m = CorrelationMetrics()
  m.update(p[:20], y[:20], w[:20])
  m.update(p[20:], y[20:], w[20:])
  (tn, fp), (fn, tp) = confusion_matrix(y, p >= 0.5, sample_weight=w)
  got = m.compute()
  assert got["fpr"] == pytest.approx(fp / (fp + tn)) and got["fnr"] == pytest.approx(fn / (fn + tp))
  assert got["accuracy"] == pytest.approx((tp + tn) / w.sum()) and got["num_examples"] == w.sum()

  config = load_config("ytb8m_correlation", "tiny")
  task = get_task(config)
  logits = rng.normal(size=50).astype(np.float32)
  loss, _ = task.loss(logits, {"correlated": y, "weight": w})
  q = 1 / (1 + np.exp(-logits.astype(np.float64)))
  lam = config.correlation.negative_weight
  expected = -np.sum(w * (y * np.log(q) + lam * (1 - y) * np.log(1 - q))) / w.sum()
  assert lam == 2.0 and float(loss) == pytest.approx(expected, rel=1e-5)


def test_tower_ignores_padding_of_each_stream():
  rng = np.random.default_rng(2)
  rgb, audio = rng.normal(size=(2, 6, 3)).astype(np.float32), rng.normal(size=(2, 6, 2))
  rgb_mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
  audio_mask = np.array([[1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]], np.float32)
  tower = CorrelationTower(hidden=8)
  variables = tower.init(jax.random.PRNGKey(0), rgb, audio, rgb_mask, audio_mask)
  base = tower.apply(variables, rgb, audio, rgb_mask, audio_mask)
  noisy_rgb = np.where(rgb_mask[..., None] > 0, rgb, 30.0).astype(np.float32)
  noisy_audio = np.where(audio_mask[..., None] > 0, audio, -30.0).astype(np.float32)
  np.testing.assert_allclose(tower.apply(variables, noisy_rgb, noisy_audio, rgb_mask, audio_mask),
                             base, atol=1e-6)
  assert base.shape == (2,)


def test_pair_iterator_restores_to_the_same_pairs(cache_dir):
  task = get_task(load_config("ytb8m_correlation", "tiny"))
  task.prepare(lambda *a: None)
  iterator = iter(task.train_dataset(16, 0, 0, 1))
  next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  restored = iter(task.train_dataset(16, 0, 0, 1))
  restored.set_state(state)
  got = next(restored)
  for key in ("audio", "audio_mask", "correlated"):
    np.testing.assert_array_equal(got[key], expected[key])
  assert 0 < (expected["correlated"] == 0).sum() < 16


def test_cmc_model_loads_the_tower_frozen_and_bad_towers_are_named(cache_dir, tmp_path):
  tower_run = str(tmp_path / "tower")
  tower_config = load_config("ytb8m_correlation", "tiny")
  tower_config.total_steps = 2
  train_and_evaluate(tower_config, tower_run)
  reader = CheckpointReader(f"{tower_run}/checkpoints")
  trained = reader.read_arrays(reader.latest_step(), keys=["params"])["params"]["tower"]

  config = load_config("ytb8m", "tiny,netvlad_cmc")
  config.total_steps, config.eval_every_steps = 4, 0
  with pytest.raises(ValueError, match="--config.model.correlation.workdir=<its workdir>"):
    train_and_evaluate(config, str(tmp_path / "no_tower"))
  config.model.correlation.workdir = tower_run  # the init_from entry follows this key
  assert config.init_from[0].source == tower_run
  main_run = str(tmp_path / "main")
  train_and_evaluate(config, main_run)
  reader = CheckpointReader(f"{main_run}/checkpoints")
  params = reader.read_arrays(reader.latest_step(), keys=["params"])["params"]
  jax.tree.map(np.testing.assert_array_equal, params["correlation"], trained)  # frozen
  assert reader.latest_step() == 4

  config.model.correlation.hidden = 8  # not the tower's 16 units
  with pytest.raises(ValueError, match=r"config.init_from\[0\]: params 'correlation/\w+/\w+' is "
                     r"\(\S*8\S*\) float32 in this model but 'tower/\w+/\w+' is \(\S*16"):
    train_and_evaluate(config, str(tmp_path / "wrong_shape"))
  config.model.correlation.hidden = 16
  config.model.correlation.workdir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    train_and_evaluate(config, str(tmp_path / "missing_tower"))
