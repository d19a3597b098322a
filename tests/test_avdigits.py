"""AV-digits (real pictures + real spoken digits), the modality-arrays format, modality dropout
and gradient blending, checked against numpy transcriptions of their definitions."""

import json
import os

import jax
import numpy as np
import pytest
import torch

from mmjax import losses
from mmjax.data import avdigits, modality_arrays
from mmjax.projects.avdigits import model as avmodel
from mmjax.transforms import gblend
from mmjax.transforms.modality_dropout import keep_mask, modality_dropout


@pytest.fixture(scope="module")
def dataset(cache_dir):
  """The default AV-digits dataset, built once per session in the test cache."""
  return avdigits.resolve_files({"directory": ""}, log=lambda _: None)[0]


def _split(dataset, name):
  return modality_arrays.load_split(os.path.join(dataset, f"{name}.npz"), 10)


def test_splits_pair_same_digit_and_keep_speakers_and_pictures_apart(dataset):
  _, picture_labels = avdigits.load_pictures()
  recordings, labels = avdigits.load_recordings()
  splits = {name: _split(dataset, name) for name in avdigits.SPLITS}
  assert sum(len(s) for s in splits.values()) == len(recordings) == 3000
  speakers, pictures = {}, {}
  for name, split in splits.items():
    source = np.array([int(i.split("-")[1]) for i in split.ids])
    np.testing.assert_array_equal(split.labels, labels[source])  # the recording's digit
    np.testing.assert_array_equal(picture_labels[split.fields["picture"]], split.labels)
    for i in (0, len(split) - 1):  # the recording itself, zero padded
      n = split.fields["audio_frames"][i]
      np.testing.assert_array_equal(split.fields["audio"][i, :n], recordings[source[i]])
      assert not split.fields["audio"][i, n:].any()
    speakers[name] = set(split.fields["speaker"].tolist())
    pictures[name] = set(split.fields["picture"].tolist())
  assert speakers == {"train": {0, 1, 2, 3}, "validation": {4}, "test": {5}}
  assert not pictures["train"] & pictures["validation"]
  assert not pictures["train"] & pictures["test"]
  assert not pictures["validation"] & pictures["test"]


def test_speaker_clusters_hold_about_50_of_every_digit():
  recordings, labels = avdigits.load_recordings()
  speakers = avdigits.speaker_clusters(recordings, labels, seed=0)
  counts = np.stack([np.bincount(labels[speakers == s], minlength=10) for s in range(6)])
  assert counts.sum() == 3000 and counts.min() >= 35 and counts.max() <= 65
  assert np.all(np.diff(counts.sum(1)) <= 0)  # numbered by size


def test_kmeans_recovers_planted_clusters():
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0], [10, 0], [0, 10]], float)
  truth = rng.integers(0, 3, 300)
  assign = avdigits.kmeans(centres[truth] + rng.normal(size=(300, 2)), 3, seed=1)
  pairs = {(a, t) for a, t in zip(assign, truth)}
  assert len(pairs) == 3  # a one-to-one relabelling


def test_long_tail_keeps_a_geometric_share_of_each_digit():
  labels = np.repeat(np.arange(10), 100)
  rows = avdigits.long_tail(np.arange(1000), labels, 0.05, np.random.default_rng(0))
  counts = np.bincount(labels[rows], minlength=10)
  np.testing.assert_array_equal(counts, np.round(0.05 ** (np.arange(10) / 9) * 100))


def test_audio_standardization_constants_match_the_training_split(dataset):
  train = _split(dataset, "train")
  frames = np.concatenate([a[:n] for a, n in zip(train.fields["audio"],
                                                 train.fields["audio_frames"])])
  np.testing.assert_allclose(frames.mean(0), avmodel.AUDIO_MEAN, atol=0.1)
  np.testing.assert_allclose(frames.std(0), avmodel.AUDIO_STD, atol=0.1)


def test_masked_mean_std_ignores_padding_and_empty_tracks():
  x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
  out = np.asarray(avmodel.masked_mean_std(x, np.array([5, 2, 0])))
  np.testing.assert_allclose(out[0], np.concatenate([x[0].mean(0), x[0].std(0)]), atol=1e-3)
  np.testing.assert_allclose(out[1], np.concatenate([x[1, :2].mean(0), x[1, :2].std(0)]),
                             atol=1e-3)
  assert not out[2].any()


# --- the modality-arrays format ---------------------------------------------------------------

def _write(path, n=10, label=None):
  rng = np.random.default_rng(0)
  modality_arrays.write_split(
      str(path), labels=np.arange(n) % 3 if label is None else label,
      ids=[f"r{i}" for i in range(n)],
      fields={"image": rng.normal(size=(n, 2, 2)), "audio": rng.normal(size=(n, 4, 3)),
              "audio_frames": np.full(n, 4)})


def _data(directory, **values):
  return {"directory": str(directory), "train_split": "train", "eval_split": "train",
          "modalities": ("audio", "image"), "num_classes": 3, "num_threads": 1,
          "prefetch_batches": 0, **values}


def test_eval_pass_reads_every_row_in_order_and_marks_missing_modalities(tmp_path):
  _write(tmp_path / "train.npz")
  data = _data(tmp_path, missing_modalities=("audio",))
  batches = list(modality_arrays.make_eval_dataset(data, batch_size=4, process_index=0,
                                                   process_count=1))
  weight = np.concatenate([b["weight"] for b in batches])
  assert weight.tolist() == [1] * 10 + [0] * 2
  assert np.concatenate([b["label"] for b in batches])[:10].tolist() == [i % 3 for i in range(10)]
  assert not any(b["audio"].any() or b["audio_frames"].any() for b in batches)
  assert any(b["image"].any() for b in batches)
  mask = np.concatenate([b["modality_mask"] for b in batches])
  np.testing.assert_array_equal(mask, np.outer(weight, [0, 1]))


def test_holdout_rows_are_disjoint_from_training_rows(tmp_path):
  _write(tmp_path / "train.npz", n=50)
  held = modality_arrays.holdout_rows(50, 0.2, seed=3)
  assert held.sum() == 10
  data = _data(tmp_path, holdout_fraction=0.2, holdout_seed=3, train_subset="train",
               eval_subset="holdout")
  np.testing.assert_array_equal(modality_arrays.subset_rows(data, 50, "train_subset"),
                                np.flatnonzero(~held))
  np.testing.assert_array_equal(modality_arrays.subset_rows(data, 50, "eval_subset"),
                                np.flatnonzero(held))
  rows = modality_arrays.make_eval_dataset(data, batch_size=16, process_index=0,
                                           process_count=1)
  assert sum(b["weight"].sum() for b in rows) == 10


@pytest.mark.parametrize("change,message", [
    (dict(label=np.array([0, 1, 7, 0])), r"train.npz: row 2 \(id 'r2'\) has label 7, outside "
                                         r"\[0, 3\) \(data.num_classes\)"),
    (dict(holdout_fraction=1.0), r"data.holdout_fraction must be in \[0, 1\)"),
    (dict(missing_modalities=("video",)), r"data.missing_modalities names \['video'\]"),
    (dict(fields=("image", "depth")), r"no field\(s\) \['depth'\] \(data.fields"),
    (dict(train_subset="holdout"), r"data.train_subset='holdout' needs data.holdout_fraction"),
])
def test_bad_arrays_and_keys_are_named(tmp_path, change, message):
  label = change.pop("label", None)
  _write(tmp_path / "train.npz", n=4 if label is not None else 10, label=label)
  with pytest.raises(ValueError, match=message):
    next(iter(modality_arrays.make_train_dataset(_data(tmp_path, **change), batch_size=2,
                                                 seed=0, process_index=0, process_count=1)))


def test_missing_split_file_names_the_config_keys(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nope.npz: no such split file \(config keys "
                     r"data.directory"):
    modality_arrays.make_train_dataset(_data(tmp_path, train_split="nope"), batch_size=2,
                                       seed=0, process_index=0, process_count=1)


# --- modality dropout -------------------------------------------------------------------------

def test_modality_dropout_rate_and_identity_at_eval():
  key = jax.random.PRNGKey(0)
  emb = {"image": np.ones((20000, 3), np.float32), "audio": np.ones((20000, 2), np.float32)}
  out, mask = modality_dropout(emb, key, p=0.3, train=True)
  assert abs(float(1 - np.asarray(mask).mean()) - 0.3) < 0.01
  np.testing.assert_array_equal(np.asarray(out["audio"])[:, 0], np.asarray(mask)[:, 0])
  np.testing.assert_array_equal(np.asarray(out["image"])[:, 0], np.asarray(mask)[:, 1])
  again, _ = modality_dropout(emb, key, p=0.3, train=True)  # reproducible from the key
  np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(out["image"]))
  same, mask = modality_dropout(emb, key, p=0.3, train=False)
  assert np.asarray(mask).all() and np.asarray(same["image"]).all()


def test_keep_one_never_drops_everything_and_lowers_the_rate_as_documented():
  mask = np.asarray(keep_mask(jax.random.PRNGKey(1), 40000, 2, 0.5, keep_one=True))
  assert mask.sum(1).min() == 1
  assert abs((1 - mask).mean() - (0.5 - 0.5 ** 2 / 2)) < 0.01  # p - p^M / M
  mask = np.asarray(keep_mask(jax.random.PRNGKey(1), 1000, 3, 1.0, keep_one=True))
  assert (mask.sum(1) == 1).all()


def test_present_mask_zeroes_missing_modalities_at_eval():
  emb = {"audio": np.ones((2, 3), np.float32), "image": np.ones((2, 3), np.float32)}
  out, _ = modality_dropout(emb, None, p=0.3, train=False,
                            present=np.array([[1, 0], [0, 1]], np.float32))
  assert np.asarray(out["audio"]).sum(1).tolist() == [3, 0]
  assert np.asarray(out["image"]).sum(1).tolist() == [0, 3]
  with pytest.raises(ValueError, match="needs an rng"):
    modality_dropout(emb, None, p=0.3, train=True)
  with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
    keep_mask(jax.random.PRNGKey(0), 2, 2, 1.5)


# --- gradient blending ------------------------------------------------------------------------

def test_gblend_weights_follow_the_overfitting_to_generalization_ratio():
  heads = ("audio", "image", "fused")
  t0, v0 = np.array([2.0, 2.1, 2.2]), np.array([2.1, 2.2, 2.3])
  t1, v1 = np.array([1.0, 0.2, 0.5]), np.array([1.5, 1.9, 0.9])
  est = gblend.estimate_weights(heads, t0, v0, t1, v1)
  d_g = v0 - v1
  d_o = (v1 - t1) - (v0 - t0)
  raw = d_g / d_o ** 2
  np.testing.assert_allclose(est.weights, raw / raw.sum(), rtol=1e-12)
  assert est.weights.argmax() == 2 and est.weights.argmin() == 1  # image overfits most
  assert not est.reason


def test_gblend_keeps_previous_weights_when_no_head_generalizes():
  heads = ("a", "b")
  est = gblend.estimate_weights(heads, [1, 1], [1, 1], [0.5, 0.5], [1.2, 1.0],
                                fallback=[0.3, 0.7])
  np.testing.assert_allclose(est.weights, [0.3, 0.7])
  assert "no head's held-out loss improved" in est.reason and np.isfinite(est.weights).all()
  with pytest.raises(ValueError, match=r"held-out loss at the end of head\(s\) \['b'\] is not "
                     "finite"):
    gblend.estimate_weights(heads, [1, 1], [1, 1], [0.5, 0.5], [0.9, np.nan])


def test_gblend_weights_file_roundtrip_and_errors(tmp_path):
  heads = ("audio", "image", "fused")
  est = gblend.estimate_weights(heads, [2, 2, 2], [2, 2, 2], [1, 1, 1], [1.5, 1.8, 1.2])
  path = str(tmp_path / "w.json")
  gblend.write_weights_file(path, heads, est, steps=10)
  np.testing.assert_allclose(gblend.read_weights_file(path, heads), est.weights, rtol=1e-6)
  assert json.load(open(path))["steps"] == 10
  with pytest.raises(ValueError, match=r"has no weight for head\(s\) \['video'\]"):
    gblend.read_weights_file(path, ("video",))
  with pytest.raises(ValueError, match="weights_file='/nope.json': cannot read"):
    gblend.read_weights_file("/nope.json", heads)


def test_online_gblend_estimates_from_the_previous_evaluation():
  online = gblend.OnlineGBlend(("a", "fused"))
  state = online.init_state([0.5, 0.5])
  first = {"gblend_train": {"loss_a": 2.0, "loss_fused": 2.0},
           "gblend_holdout": {"loss_a": 2.1, "loss_fused": 2.1}}
  state, est = online.update(state, first)
  assert est is None and state["has_reference"] and state["weights"].tolist() == [0.5, 0.5]
  second = {"gblend_train": {"loss_a": 0.5, "loss_fused": 1.0},
            "gblend_holdout": {"loss_a": 1.9, "loss_fused": 1.2}}
  state, est = online.update(state, second)
  expected = gblend.estimate_weights(("a", "fused"), [2, 2], [2.1, 2.1], [0.5, 1], [1.9, 1.2])
  np.testing.assert_allclose(state["weights"], expected.weights, rtol=1e-5)
  np.testing.assert_allclose(state["reference"], [[0.5, 1.0], [1.9, 1.2]])
  with pytest.raises(KeyError, match="config.evals.gblend_holdout"):
    online.update(state, {"gblend_train": second["gblend_train"]})


def test_blended_loss_matches_torch_weighted_cross_entropies():
  rng = np.random.default_rng(0)
  logits = {h: rng.normal(size=(6, 4)).astype(np.float32) for h in ("audio", "fused")}
  labels = rng.integers(0, 4, 6)
  weights = {"audio": 0.3, "fused": 0.7}
  example = np.array([1, 1, 1, 1, 0, 1], np.float32)

  def ours(tree):
    return losses.blended_loss(tree, labels, weights, example_weights=example)[0]

  value, grads = jax.value_and_grad(ours)(logits)
  torch_logits = {h: torch.tensor(v, requires_grad=True) for h, v in logits.items()}
  ce = torch.nn.functional.cross_entropy
  keep = torch.tensor(example).bool()
  reference = sum(w * ce(torch_logits[h][keep], torch.tensor(labels)[keep])
                  for h, w in weights.items())
  reference.backward()
  np.testing.assert_allclose(value, reference.item(), rtol=1e-5)
  for h in logits:
    np.testing.assert_allclose(grads[h], torch_logits[h].grad.numpy(), atol=1e-6)
  with pytest.raises(ValueError, match=r"missing \['fused'\]"):
    losses.blended_loss(logits, labels, {"audio": 1.0})


def test_compacting_the_pruned_fusion_model_keeps_its_outputs():
  from mmjax.transforms import pruning  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 17, (4, 8, 8)).astype(np.float32),
           "audio": rng.normal(size=(4, 92, 13)).astype(np.float32) * 30,
           "audio_frames": np.array([92, 10, 1, 40], np.int32),
           "modality_mask": np.ones((4, 2), np.float32)}
  widths = {"image_0": 6, "image_1": 5, "audio_frame_0": 7, "audio_frame_1": 4,
            "audio_embed": 5, "fusion_0": 6}
  big = avmodel.AVDigitsFusion(widths=widths)
  params = big.init(jax.random.PRNGKey(0), batch)["params"]
  with pytest.warns(RuntimeWarning, match="keeping its most important node"):
    masks = pruning.node_masks(params, 0.9, keep=r"head.*")  # prunes most nodes
  zeroed = pruning.apply_masks(params, masks)
  small_params, new_widths = pruning.compact(zeroed, masks, avmodel.consumers(widths))
  assert sum(new_widths.values()) < sum(widths.values()) and min(new_widths.values()) >= 1
  small = avmodel.AVDigitsFusion(widths=new_widths)
  ours, theirs = big.apply({"params": zeroed}, batch), small.apply({"params": small_params}, batch)
  for head in ("fused", "audio", "image"):
    np.testing.assert_allclose(theirs[head], ours[head], atol=1e-4)
  assert pruning.parameter_count(small_params) < pruning.parameter_count(params)


def test_benchmark_tables_render_the_recorded_run():
  """docs/avdigits/results.json (the README's run) renders through the benchmark's tables."""
  from mmjax.projects.avdigits import benchmark  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "docs", "avdigits", "results.json")) as f:
    results = json.load(f)
  assert set(benchmark.ROWS) <= set(results)
  text = benchmark.markdown(results)
  assert "| fused | 99.4 | 99.4 | 71.7 | 67.1 | 87.0 | 28 s |" in text
  assert "| 2 (best) | 21,079 | 92.7 | 99.6 |" in text
  assert text == open(os.path.join(root, "docs", "avdigits", "results.md")).read()
