"""The MER fusion model and task against the papers' equations in numpy: attention fusion, the
joint decoder (seed 004 eq. 1-4), entropy fusion in the graph (eq. 5-7), the uncertainty loss
(eq. 9), a missing modality; PNAO really shrinks the model without changing its outputs; the
MER2023 and MER2024 pipelines end to end on tiny runs."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import load_config

from mmjax import fusion
from mmjax.models.mer_fusion import MerFusion, consumers
from mmjax.projects.emovclip import pipeline
from mmjax.projects.mer2023 import figures, table1
from mmjax.tasks import get_task
from mmjax.train import multirun
from mmjax.transforms import pruning

FIELDS = ("audio", "face", "scene")
STRUCTURES = (("audio", "face"), ("face", "scene"))


def _batch(rng, batch=5):
  dims = {"audio": 6, "face": 4, "scene": 3}
  return {f: rng.normal(size=(batch, d)).astype(np.float32) for f, d in dims.items()}


def _relu(x):
  return np.maximum(x, 0)


def _dense(params, name, x):
  return x @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _numpy_structure(params, prefix, inputs, batch):
  """attention_gather + joint_decoder written out from their equations."""
  names = sorted(inputs)
  h = [_relu(_dense(params, f"{prefix}{n}_1", _relu(_dense(params, f"{prefix}{n}_0", batch[n]))))
       for n in names]
  stacked = np.stack(h, axis=1)
  a = _softmax(_dense(params, f"{prefix}att_1",
                      _relu(_dense(params, f"{prefix}att_0", stacked.reshape(len(stacked), -1)))))
  fused = np.einsum("bm,bmh->bh", a, stacked)
  logits = _dense(params, f"{prefix}emotion", fused)                        # eq. 1
  v_h = _dense(params, f"{prefix}valence_h", fused)                         # eq. 3
  v_e = np.tanh(_dense(params, f"{prefix}valence_e", _softmax(logits)))     # eq. 4
  valence = _dense(params, f"{prefix}valence", np.concatenate([v_h, v_e], -1))[:, 0]  # eq. 2
  return logits, valence


def test_structures_and_joint_decoders_follow_the_equations():
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  model = MerFusion(structures=STRUCTURES, fields=FIELDS, num_classes=6, embed=5, hidden=7)
  params = model.init(jax.random.PRNGKey(0), batch)["params"]
  out = model.apply({"params": params}, batch)
  assert out["emotion_logits"].shape == (5, 2, 6) and out["valence"].shape == (5, 2)
  for i, inputs in enumerate(STRUCTURES):
    logits, valence = _numpy_structure(params, f"s{i}_", inputs, batch)
    np.testing.assert_allclose(out["emotion_logits"][:, i], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["valence"][:, i], valence, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["attention"]["s0_"]).sum(-1), 1, rtol=1e-6)


def test_a_missing_modality_is_a_zero_embedding():
  rng = np.random.default_rng(1)
  batch = _batch(rng)
  model = MerFusion(structures=(FIELDS,), fields=FIELDS, embed=5, hidden=7, valence=False)
  params = model.init(jax.random.PRNGKey(1), batch)["params"]
  mask = np.ones((5, 3), np.float32)
  mask[:, 1] = 0  # 'face' missing
  out = model.apply({"params": params}, {**batch, "modality_mask": mask})
  # Reference: the face embedding replaced by zeros before the attention.
  h = {n: _relu(_dense(params, f"{n}_1", _relu(_dense(params, f"{n}_0", batch[n]))))
       for n in FIELDS}
  h["face"] = np.zeros_like(h["face"])
  stacked = np.stack([h[n] for n in FIELDS], axis=1)
  a = _softmax(_dense(params, "att_1", _relu(_dense(params, "att_0", stacked.reshape(5, -1)))))
  logits = _dense(params, "emotion", np.einsum("bm,bmh->bh", a, stacked))
  np.testing.assert_allclose(out["emotion_logits"][:, 0], logits, rtol=1e-5, atol=1e-5)
  assert "valence" not in out


def _task(variants="tiny"):
  return get_task(load_config("mer2023", variants))


def test_predictions_fuse_the_structures_by_entropy_and_loss_is_eq_9(cache_dir):
  del cache_dir
  task = _task()
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(7, 3, 6)).astype(np.float32) * 2
  valence = rng.normal(size=(7, 3)).astype(np.float32)
  predictions = jax.tree.map(np.asarray, task.predictions(
      {"emotion_logits": logits, "valence": valence}))
  probs = _softmax(logits.astype(np.float64))
  entropy = -(probs * np.log(probs)).sum(-1)                                # eq. 5, [B, S]
  weights = (1 - entropy / entropy.sum(1, keepdims=True)) / (3 - 1)        # eq. 6
  np.testing.assert_allclose(predictions["emotion"], np.einsum("bs,bsc->bc", weights, probs),
                             rtol=1e-5, atol=1e-6)                          # eq. 7
  np.testing.assert_allclose(predictions["valence"], (weights * valence).sum(1), rtol=1e-5)
  np.testing.assert_allclose(weights.T, fusion.entropy_weights(np.swapaxes(probs, 0, 1)),
                             rtol=1e-9)  # the host implementation agrees

  labels = rng.integers(6, size=7)
  target = rng.normal(size=7).astype(np.float32)
  raw = np.array([0.3, -0.4], np.float32)
  batch = {"label": labels, "valence": target, "weight": np.ones(7, np.float32),
           "labelled": np.array([1, 1, 1, 1, 1, 1, 0], np.float32)}
  loss, aux = task.loss({"emotion_logits": logits, "valence": valence, "awl_raw_sigmas": raw},
                        batch, {})
  rows = slice(0, 6)  # the unlabelled row is ignored
  ce = -np.log(probs[rows][np.arange(6), :, labels[rows]]).mean()
  mse = np.square(valence[rows] - target[rows, None]).mean()
  d1, d2 = np.log1p(np.exp(raw)) + 1e-6
  awl = ce / d1 ** 2 + mse / (2 * d2 ** 2) + np.log1p(d1) + np.log1p(d2)  # eq. 9
  assert float(aux["loss_emotion"]) == pytest.approx(ce, rel=1e-5)
  assert float(aux["loss_valence"]) == pytest.approx(mse, rel=1e-5)
  assert float(loss) == pytest.approx(awl, rel=1e-5)


@pytest.mark.parametrize("decision", ["entropy", "attention"])
def test_pnao_compaction_removes_nodes_and_keeps_the_outputs(decision):
  rng = np.random.default_rng(3)
  batch = _batch(rng)
  model = MerFusion(structures=STRUCTURES, fields=FIELDS, embed=5, hidden=8, decision=decision)
  params = model.init(jax.random.PRNGKey(3), batch)["params"]
  masks = pruning.node_masks(params, 0.6, prunable=r".*_0/kernel")
  masked = pruning.apply_masks(params, masks)
  small, widths = pruning.compact(jax.tree.map(np.asarray, masked), masks,
                                  consumers(STRUCTURES, decision))
  assert widths and all(w < 8 for w in widths.values())  # nodes really removed
  smaller = MerFusion(structures=STRUCTURES, fields=FIELDS, embed=5, hidden=8,
                      decision=decision, widths=widths)
  assert pruning.parameter_count(small) < pruning.parameter_count(params)
  want = model.apply({"params": masked}, batch)
  got = smaller.apply({"params": small}, batch)
  for key in ("emotion_logits", "valence"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_mer2023_table_runs_pnao_and_writes_the_figures(cache_dir, tmp_path):
  del cache_dir
  results = table1.run_table(str(tmp_path), "tiny", rows=("enf_pnao",), k=0.5,
                             log=lambda _: None)
  rounds = results["enf_pnao"]["rounds"]
  assert len(rounds) == 2 and rounds[1]["params"] < rounds[0]["params"]  # really smaller
  for name in ("figure3.png", "figure4.png", "table1.md"):
    assert os.path.getsize(tmp_path / name) > 0, name
  with open(tmp_path / "table1.json") as f:
    saved = json.load(f)["enf_pnao"]
  assert np.asarray(saved["test_confusion"]).sum() == 24  # every test sample
  pruned = os.path.join(tmp_path, "enf_pnao", "round_1")  # restored with the round's widths
  assert np.asarray(table1.confusion_on_test(pruned)).sum() == 24
  metrics = saved["metrics"]
  assert metrics["test/com"] == pytest.approx(metrics["test/weighted_f1"] -
                                              0.25 * metrics["test/mse"])
  figures.confusion_figure({"enf": saved, "baseline": saved}, str(tmp_path / "figure2.png"))
  assert os.path.getsize(tmp_path / "figure2.png") > 0


def test_mer2024_pipeline_emovclip_features_then_self_training_and_k_fold(cache_dir, tmp_path):
  del cache_dir
  sizes = {"num_labelled": 36, "num_unlabelled": 12, "num_test": 12, "seed": 0}
  results = pipeline.run_pipeline(str(tmp_path), rows=("mdrop_self_training",),
                                  emovclip_variants="tiny", fusion_variants="tiny",
                                  embedded=sizes, log=lambda _: None)
  # Stage 2 wrote EmoVCLIP's [frames, D] features for every sample, read by stage 3.
  video = tmp_path / "data" / "features" / "emovclip-FRA"
  assert len(os.listdir(video)) == 60
  assert np.load(next(video.iterdir())).shape[0] == 4  # configs/emovclip.py's num_frames
  record = results["mdrop_self_training"]
  first, last = record["rounds"][0], record["rounds"][-1]
  assert last["train_rows"] == first["train_rows"] + first["added"] > first["train_rows"] == 36
  train = multirun.modality_arrays.load_split(
      os.path.join(tmp_path, "fusion", "mdrop_self_training", "rounds", "round_1", "data",
                   "train.npz"))
  assert train.fields["labelled"].all()  # pseudo-labelled rows count in the loss
  assert set(record["missing"]) == {"audio", "image", "video"}
  assert len(record["folds"]) == 2
  assert os.path.getsize(tmp_path / "fusion" / "results.md") > 0


def _split_dir(tmp_path, labels, pool_ids=()):
  """A data directory with train/test split files (and an 'unlabelled' pool) for configs/
  mer2024.py:tiny's fields."""
  rng = np.random.default_rng(4)
  dims = {"audio": 4, "image": 3, "video": 2}

  def write(name, ids, labels):
    fields = {f: rng.normal(size=(len(ids), d)).astype(np.float32) for f, d in dims.items()}
    fields.update(valence=np.zeros(len(ids), np.float32),
                  labelled=np.ones(len(ids), np.float32))
    multirun.modality_arrays.write_split(str(tmp_path / f"{name}.npz"), labels=labels,
                                         ids=ids, fields=fields)

  write("train", [f"s{i}" for i in range(len(labels))], np.asarray(labels))
  write("test", ["t0", "t1"], np.array([0, 1]))
  if pool_ids:
    write("unlabelled", list(pool_ids), np.zeros(len(pool_ids), np.int64))
  config = load_config("mer2024", "tiny")
  config.data.directory = str(tmp_path)
  return config


def test_k_fold_refuses_folds_whose_training_rows_lose_a_class(tmp_path):
  config = _split_dir(tmp_path, [0, 0, 1, 1, 2, 0, 1, 0])  # class 2 has one example
  with pytest.raises(ValueError, match=r"fold \d's training rows have no example of class"
                                       r"\(es\) \[2\]"):
    multirun.k_fold(config, str(tmp_path / "kfold"), folds=2)
  assert not os.path.exists(tmp_path / "kfold")  # nothing trained


def test_self_training_refuses_a_pool_sample_that_is_already_labelled(tmp_path):
  config = _split_dir(tmp_path, [0, 1, 2, 0], pool_ids=("u0", "s2"))
  with pytest.raises(ValueError, match=r"1 sample\(s\) are both labelled .* \['s2'\]"):
    multirun.self_training(config, str(tmp_path / "st"), pool_split="unlabelled")
