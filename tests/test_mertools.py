"""MERTools data (mmjax.data.mertools): label CSVs and per-sample feature files in the layout
MER participants hold, converted to split files; bad input named; the MER metrics against
scikit-learn; the synthetic and AV-digits sources in the same layout."""

import csv
import os

import ml_collections
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

from mmjax.data import mertools, modality_arrays, synthetic_mertools
from mmjax.data.mertools_layout import feature_file, write_feature
from mmjax.metrics.emotion import EmotionEvaluator, mer_scores


def _write_csv(path, rows, header=("name", "discrete", "valence"), **kwargs):
  with open(path, "w", newline="", **kwargs) as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def test_read_labels_of_a_mertools_label_file(tmp_path):
  path = _write_csv(tmp_path / "train-label.csv", [("sample_00000001", "happy", "2.5"),
                                                   ("sample_00000002", "worried", "-1.25"),
                                                   ("sample_00000003", "neutral", "")])
  labels = mertools.read_labels(path)
  assert labels.names.tolist() == ["sample_00000001", "sample_00000002", "sample_00000003"]
  assert labels.labels.tolist() == [2, 4, 0]
  np.testing.assert_array_equal(labels.valence[:2], [2.5, -1.25])
  assert np.isnan(labels.valence[2])
  # Excel-style: UTF-8 BOM and CRLF line ends; a names-only file lists unlabelled samples.
  bom = _write_csv(tmp_path / "bom.csv", [("a", "sad", "-3")], encoding="utf-8-sig")
  assert mertools.read_labels(bom).labels.tolist() == [3]
  names = _write_csv(tmp_path / "test.csv", [("x",), ("y",)], header=("name",))
  unlabelled = mertools.read_labels(names)
  assert unlabelled.labels.tolist() == [-1, -1] and not unlabelled.labelled.any()


@pytest.mark.parametrize("rows,header,message", [
    ([("a", "happy", "1"), ("b", "excited", "0")], None, r"line 3 \(sample 'b'\).*'excited'"),
    ([("a", "happy", "high")], None, r"line 2 \(sample 'a'\): valence 'high' is not a number"),
    ([("a", "happy", "nan")], None, "not finite"),
    ([("a", "happy", "1"), ("a", "sad", "1")], None, "appears twice"),
    ([("a", "happy")], ("id", "discrete"), "no 'name' column"),
])
def test_bad_label_files_are_named(tmp_path, rows, header, message):
  path = _write_csv(tmp_path / "labels.csv", rows, **({"header": header} if header else {}))
  with pytest.raises(ValueError, match=message) as error:
    mertools.read_labels(path)
  assert "labels.csv" in str(error.value)


def test_frame_features_are_pooled_by_mean_and_variance(tmp_path):
  rng = np.random.default_rng(0)
  frames = {n: rng.normal(size=(t, 5)).astype(np.float32) for n, t in (("a", 3), ("b", 7))}
  for name, value in frames.items():
    write_feature(str(tmp_path), "resnet", "FRA", name, value)
  pooled = mertools.feature_matrix(str(tmp_path), "resnet-FRA", ["a", "b"], "meanvar")["value"]
  for i, value in enumerate(frames.values()):
    np.testing.assert_allclose(pooled[i], np.concatenate([value.mean(0), value.var(0)]),
                               rtol=1e-6)
  sequence = mertools.feature_matrix(str(tmp_path), "resnet-FRA", ["a", "b"], "sequence", 5)
  assert sequence["value"].shape == (2, 5, 5) and sequence["frames"].tolist() == [3, 5]
  np.testing.assert_array_equal(sequence["value"][0, :3], frames["a"])
  assert not sequence["value"][0, 3:].any()
  np.testing.assert_array_equal(sequence["value"][1], frames["b"][:5])


def test_bad_feature_files_name_the_extractor_and_sample(tmp_path):
  root = str(tmp_path)
  write_feature(root, "manet", "UTT", "a", np.zeros(4))
  write_feature(root, "manet", "UTT", "b", np.zeros(6))
  with pytest.raises(ValueError, match=r"manet-UTT: sample 'b' has dimension 6, sample 'a' "
                                       r"has 4"):
    mertools.feature_matrix(root, "manet-UTT", ["a", "b"])
  with pytest.raises(ValueError, match=r"manet-UTT: no feature file for sample 'c'"):
    mertools.feature_matrix(root, "manet-UTT", ["a", "c"])
  np.save(os.path.join(root, "manet-UTT", "d.npy"), np.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"manet-UTT: sample 'd' has shape \(2, 4\)"):
    mertools.feature_matrix(root, "manet-UTT", ["d"])
  with pytest.raises(ValueError, match="no such feature directory"):
    mertools.feature_matrix(root, "hubert-UTT", ["a"])
  with pytest.raises(ValueError, match="must end in -UTT or -FRA"):
    mertools.feature_matrix(root, "manet", ["a"])
  with pytest.raises(ValueError, match="UTT feature must have 1 dimension"):
    write_feature(root, "manet", "UTT", "e", np.zeros((2, 2)))


def _data_config(root, train, test, features):
  return ml_collections.ConfigDict(dict(
      directory="", class_names=mertools.CLASSES,
      mertools=dict(features=features, features_root=root, train_labels=train, test_labels=test,
                    unlabelled_labels="", pooling="meanvar", max_frames=0,
                    cache_dir=os.path.join(root, "cache"), source="synthetic", labelled="all",
                    synthetic={})))


def test_label_files_and_features_convert_to_split_files(tmp_path):
  root = str(tmp_path)
  rng = np.random.default_rng(1)
  for name in ("s1", "s2", "s3"):
    write_feature(root, "hubert-L18", "FRA", name, rng.normal(size=(4, 3)))
    write_feature(root, "manet", "UTT", name, rng.normal(size=2))
  train = _write_csv(tmp_path / "train.csv", [("s1", "angry", "-2"), ("s2", "happy", "3")])
  test = _write_csv(tmp_path / "test.csv", [("s3",)], header=("name",))
  config = _data_config(root, train, test, {"audio": "hubert-L18-FRA", "face": "manet-UTT"})
  directory, = mertools.resolve_files(config, log=lambda _: None)
  split = modality_arrays.load_split(os.path.join(directory, "train.npz"))
  assert split.ids.tolist() == ["s1", "s2"] and split.labels.tolist() == [1, 2]
  assert split.fields["audio"].shape == (2, 6) and split.fields["face"].shape == (2, 2)
  np.testing.assert_array_equal(split.fields["valence"], [-2, 3])
  np.testing.assert_array_equal(split.fields["labelled"], [1, 1])
  unlabelled = modality_arrays.load_split(os.path.join(directory, "test.npz"))
  assert unlabelled.fields["labelled"].tolist() == [0]
  assert mertools.resolve_files(config, log=lambda _: None) == (directory,)  # cached
  write_feature(root, "manet", "UTT", "s1", np.full(2, 7.0))  # a re-extracted feature
  directory, = mertools.resolve_files(config, log=lambda _: None)
  split = modality_arrays.load_split(os.path.join(directory, "train.npz"))
  np.testing.assert_array_equal(split.fields["face"][0], [7, 7])  # converted again
  missing = _write_csv(tmp_path / "more.csv", [("s1", "angry", "-2"), ("s9", "sad", "-1")])
  config.mertools.train_labels = missing
  with pytest.raises(ValueError, match=r"hubert-L18-FRA: no feature file for sample 's9'"):
    mertools.resolve_files(config, log=lambda _: None)


def test_mer_scores_match_scikit_learn():
  rng = np.random.default_rng(2)
  labels = rng.integers(6, size=50)
  probs = rng.dirichlet(np.ones(6), size=50)
  valence, predicted = rng.normal(size=50) * 2, rng.normal(size=50) * 2
  scores = mer_scores(labels, probs, valence, predicted)
  waf = f1_score(labels, probs.argmax(1), average="weighted")
  mse = mean_squared_error(valence, predicted)
  assert scores["weighted_f1"] == pytest.approx(waf)
  assert scores["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(1)))
  assert scores["mse"] == pytest.approx(mse)
  assert scores["com"] == pytest.approx(waf - 0.25 * mse)
  # The streaming evaluator over padded batches (weight 0) and unlabelled rows gives the same.
  evaluator = EmotionEvaluator(6)
  for start in range(0, 60, 16):
    rows = np.arange(start, start + 16)
    real = rows < 50
    at = np.minimum(rows, 49)
    evaluator.update({"emotion": probs[at], "valence": predicted[at],
                      "structure_emotion": probs[at][:, None],
                      "structure_valence": predicted[at][:, None]},
                     {"label": labels[at], "weight": real.astype(float),
                      "labelled": np.ones(16), "valence": valence[at]})
  computed = evaluator.compute()
  for key in ("weighted_f1", "accuracy", "mse", "com"):
    assert computed[key] == pytest.approx(scores[key]), key


def test_synthetic_features_follow_the_mertools_layout_and_valence_agrees(tmp_path):
  directory = str(tmp_path)
  synthetic_mertools.write(directory, num_train=60, num_test=12, num_unlabelled=6, seed=0,
                           log=lambda _: None)
  train = mertools.read_labels(os.path.join(directory, "train-label.csv"))
  assert len(train.names) == 60 and train.labelled.all()
  means = {c: train.valence[train.labels == i].mean() for i, c in enumerate(mertools.CLASSES)
           if (train.labels == i).any()}
  assert means["happy"] > means["neutral"] > means["angry"]  # valence agrees with the emotion
  assert not mertools.read_labels(os.path.join(directory, "unlabelled.csv")).labelled.any()
  root = synthetic_mertools.features_root(directory)
  for name, (level, dim, *_) in synthetic_mertools.EXTRACTORS.items():
    value = np.load(feature_file(root, name, level, train.names[0]))
    assert value.shape[-1] == dim and value.ndim == (1 if level == "UTT" else 2)
