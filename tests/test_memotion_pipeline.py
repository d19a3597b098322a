"""Seed 000's pipeline: the pretraining corpora in their real formats, the stage lists, the
search's trials, the majority-vote ensembles and Table 4 (checked against scikit-learn)."""

import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from mmjax.data import image_text
from mmjax.projects.memotion3 import pipeline, pretrain_corpora
from tests.conftest import ROOT, load_config


def _image(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", (20, 16), (30, 60, 90)).save(path)


def _hateful_memes(root):
  """A Hateful Memes folder as released: jsonl lines with int ids, img relative paths."""
  rows = {"train.jsonl": [(42953, 0, "look at my new car"),
                          (23058, 1, "monday again\nwhy does it exist")],
          "dev.jsonl": [(8291, 1, "cats are the best")],
          "test.jsonl": [(16395, None, "weekend mode on")]}
  os.makedirs(root)
  for name, memes in rows.items():
    with open(root / name, "w", encoding="utf-8") as f:
      for meme_id, label, text in memes:
        record = {"id": meme_id, "img": f"img/{meme_id}.png", "text": text}
        if label is not None:
          record["label"] = label
        f.write(json.dumps(record) + "\n")
        _image(str(root / "img" / f"{meme_id}.png"))
  return str(root)


def _mami(root):
  """A MAMI folder as released: tab-separated training.csv, test.csv + test_labels.txt."""
  os.makedirs(root / "training")
  os.makedirs(root / "test")
  with open(root / "training" / "training.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, delimiter="\t")
    writer.writerow(["file_name", "misogynous", "shaming", "stereotype", "objectification",
                     "violence", "Text Transcription"])
    writer.writerow(["1.jpg", "0", "0", "0", "0", "0", "Milk Milk.zip"])
    writer.writerow(["10.jpg", "1", "0", "1", "0", "0", "ROSES ARE RED, \"VIOLETS\" ARE BLUE"])
  with open(root / "test" / "test.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, delimiter="\t")
    writer.writerow(["file_name", "Text Transcription"])
    writer.writerow(["15236.jpg", "WHEN THE COFFEE KICKS IN"])
  (root / "test" / "test_labels.txt").write_text("15236.jpg\t1\t0\t0\t1\t0\n")
  for name in ("training/1.jpg", "training/10.jpg", "test/15236.jpg"):
    _image(str(root / name))
  return str(root)


def test_hateful_memes_and_mami_as_released(tmp_path):
  hm = _hateful_memes(tmp_path / "hm")
  memes = pretrain_corpora.read_hateful_memes(os.path.join(hm, "train.jsonl"))
  assert [m.label for m in memes] == [0, 1]
  assert memes[1].text == "monday again why does it exist"
  assert memes[0].image == os.path.join(hm, "img", "42953.png")
  test = pretrain_corpora.read_hateful_memes(os.path.join(hm, "test.jsonl"), labelled=False)
  assert test[0].label is None
  with pytest.raises(ValueError, match=r"test.jsonl: line 1: missing key\(s\) \['label'\]"):
    pretrain_corpora.read_hateful_memes(os.path.join(hm, "test.jsonl"))
  mami = _mami(tmp_path / "mami")
  train = pretrain_corpora.read_mami(os.path.join(mami, "training", "training.csv"))
  assert [(os.path.basename(m.image), m.label) for m in train] == [("1.jpg", 0), ("10.jpg", 1)]
  assert train[1].text == 'ROSES ARE RED, "VIOLETS" ARE BLUE'
  labelled = pretrain_corpora.read_mami(os.path.join(mami, "test", "test.csv"),
                                        os.path.join(mami, "test", "test_labels.txt"))
  assert labelled[0].label == 1
  assert pretrain_corpora.read_mami(os.path.join(mami, "test", "test.csv"))[0].label is None


def test_corpus_errors_name_the_file_and_line(tmp_path):
  bad = tmp_path / "train.jsonl"
  bad.write_text(json.dumps({"id": 1, "img": "img/1.png", "label": 2, "text": "x"}) + "\n")
  with pytest.raises(ValueError, match=r"train.jsonl: line 1: label '2' is not 0 or 1"):
    pretrain_corpora.read_hateful_memes(str(bad))
  mami = _mami(tmp_path / "mami")
  (tmp_path / "mami" / "test" / "test_labels.txt").write_text("other.jpg\t1\n")
  with pytest.raises(ValueError, match=r"test.csv: line 2: '15236.jpg' has no label in"):
    pretrain_corpora.read_mami(os.path.join(mami, "test", "test.csv"),
                               os.path.join(mami, "test", "test_labels.txt"))
  (tmp_path / "odd.csv").write_text("name\ttext\n1.jpg\tx\n")
  with pytest.raises(ValueError, match=r"odd.csv: line 1: no column \['file_name', "
                     r"'Text Transcription'\]"):
    pretrain_corpora.read_mami(str(tmp_path / "odd.csv"))


def test_stage_lists_read_by_both_stages(tmp_path):
  corpora = pretrain_corpora.read_corpora(_hateful_memes(tmp_path / "hm"),
                                          _mami(tmp_path / "mami"))
  assert len(corpora["train"]) == 4 and len(corpora["test"]) == 2  # dev + MAMI test
  out = tmp_path / "lists"
  counts = pretrain_corpora.write_stage_lists(str(out), corpora, log=lambda _: None)
  assert counts == {"pretrainclip_train.jsonl": 4, "pretrainclip_test.jsonl": 2,
                    "pretrainuni_train.jsonl": 4, "pretrainuni_test.jsonl": 2}
  pairs = image_text.read_pairs(str(out / "pretrainclip_train.jsonl"))
  assert all(os.path.isfile(image) for image, _ in pairs)
  assert pairs[0][1] == "look at my new car"
  first = json.loads((out / "pretrainuni_train.jsonl").read_text().splitlines()[0])
  assert not os.path.isabs(first["image"])  # relative: the lists move with the corpora
  table = pretrain_corpora.read_binary_list(str(out / "pretrainuni_train.jsonl"))
  np.testing.assert_array_equal(table.labels["hateful"], [0, 1, 0, 1])
  assert all(os.path.isfile(image) for image in table.images)


def test_synthetic_corpora_have_the_real_layout_and_a_learnable_label(tmp_path):
  directory = pretrain_corpora.write_synthetic_corpora(str(tmp_path), num_memes=60,
                                                       image_size=32, seed=0,
                                                       log=lambda _: None)
  for name in ("hateful_memes/train.jsonl", "hateful_memes/dev.jsonl", "hateful_memes/test.jsonl",
               "mami/training/training.csv", "mami/test/test.csv", "mami/test/test_labels.txt"):
    assert os.path.isfile(os.path.join(directory, name)), name
  corpora = pretrain_corpora.read_corpora(os.path.join(directory, "hateful_memes"),
                                          os.path.join(directory, "mami"))
  for meme in corpora["train"]:  # hateful = an insult in the text and a frowning face
    insult = any(w in meme.text.split() for w in ("idiot", "loser", "clown", "stupid"))
    assert meme.label == 0 or insult


def test_trial_overrides_are_distinct_points_of_the_grid():
  points = pipeline.trial_overrides(5, seed=3)
  assert len({tuple(sorted(p.items())) for p in points}) == 5
  assert points == pipeline.trial_overrides(5, seed=3)
  assert all(p[k] in pipeline.SEARCH_SPACE[k] for p in points for k in p)
  with pytest.raises(ValueError, match="the search space has 9 points"):
    pipeline.trial_overrides(10, seed=0)


def _predictions(rng, labels, num_classes, accuracy):
  """Probabilities whose argmax is right with about `accuracy`."""
  decided = np.where(rng.random(len(labels)) < accuracy, labels,
                     rng.integers(num_classes, size=len(labels)))
  probs = rng.random((len(labels), num_classes)) * 0.2
  probs[np.arange(len(labels)), decided] += 1.0
  return probs / probs.sum(-1, keepdims=True)


def _target_results(rng, num_classes, n=60, with_test=True):
  labels = rng.integers(num_classes, size=n)
  models = {}
  for k, (name, _) in enumerate(pipeline.ROWS):
    key = dict(pipeline.ROWS)[name]
    models[key] = {"val": _predictions(rng, labels, num_classes, 0.4 + 0.05 * k),
                   "test": _predictions(rng, labels, num_classes, 0.5) if with_test else None}
  predictions = {"models": models, "labels": labels}
  return {"predictions": predictions, "ensembles": pipeline.ensembles(predictions)}


def test_ensembles_pick_the_best_vote_subset_on_validation():
  rng = np.random.default_rng(0)
  result = _target_results(rng, 3)
  labels = result["predictions"]["labels"]
  for name, members in pipeline.ENSEMBLES.items():
    val = {m: result["predictions"]["models"][m]["val"] for m in members}
    best = -1.0
    for size in range(1, len(members) + 1):  # exhaustive search, written out again
      for subset in itertools.combinations(members, size):
        votes = np.stack([val[m].argmax(-1) for m in subset])
        counts = np.stack([(votes == c).sum(0) for c in range(3)], -1)
        mean = np.mean([val[m] for m in subset], axis=0)
        tied = counts == counts.max(-1, keepdims=True)
        decided = np.argmax(np.where(tied, mean, -np.inf), -1)
        best = max(best, f1_score(labels, decided, average="weighted"))
    chosen = result["ensembles"][name]
    assert f1_score(labels, chosen["val"], average="weighted") == pytest.approx(best)
    assert set(chosen["members"]) <= set(members)
    assert chosen["test"].shape == labels.shape


def test_table4_and_task_b_against_scikit_learn():
  rng = np.random.default_rng(1)
  results = {t: _target_results(rng, 2 if t == "motivational" else (3 if t == "task_a" else 4))
             for t in pipeline.TARGETS}
  table = pipeline.table4(results)
  decisions = {t: dict({row: r["predictions"]["models"][key]["val"].argmax(-1)
                        for row, key in pipeline.ROWS},
                       **{e: r["ensembles"][e]["val"] for e in pipeline.ENSEMBLES})
               for t, r in results.items()}
  columns = dict((c, t) for t, c in pipeline.TABLE4_COLUMNS)
  for row, scores in table["rows"].items():
    assert list(scores) == ["Overall", "Humorous", "Motivation", "Offensive", "Sarcastic"]
    for column, value in scores.items():
      t = columns[column]
      expected = f1_score(results[t]["predictions"]["labels"], decisions[t][row],
                          average="weighted")
      assert value == pytest.approx(expected)
    task_c = [scores[c] for c in ("Humorous", "Motivation", "Offensive", "Sarcastic")]
    assert table["task_c"][row] == pytest.approx(np.mean(task_c))
    task_b = [f1_score(results[t]["predictions"]["labels"] > 0, decisions[t][row] > 0,
                       average="weighted") for t in ("humour", "sarcasm", "offensive",
                                                     "motivational")]
    assert table["task_b"][row] == pytest.approx(np.mean(task_b))
  text = pipeline.format_table4(table)
  assert text.splitlines()[0] == ("| Models | Overall | Humorous | Motivation | Offensive | "
                                  "Sarcastic | Task B | Task C |")
  assert [line.split(" | ")[0][2:] for line in text.splitlines()[2:]] == [
      "CLIP-text0", "CLIP-text1", "CLIP-image0", "CLIP-image1", "CLIP-multi0", "CLIP-multi1",
      "OSCAR0", "OSCAR1", "CLIP-multi0 without GB", "Ensemble-1", "Ensemble-2"]


def test_pipeline_arguments_are_checked(tmp_path):
  clip, memotion = load_config("clip_pretrain", "tiny"), load_config("memotion3", "tiny")
  with pytest.raises(ValueError, match="targets \\['bogus'\\]"):
    pipeline.run_pipeline(clip, memotion, str(tmp_path), targets=("bogus",))
  with pytest.raises(ValueError, match="trials=1: the paper keeps each model's two best"):
    pipeline.run_pipeline(clip, memotion, str(tmp_path), trials=1)
  with pytest.raises(ValueError, match="search backend 'slurm'"):
    pipeline.search(memotion, str(tmp_path), trials=2, backend="slurm")


@pytest.mark.slow
def test_the_whole_pipeline_on_the_embedded_data(tmp_path):
  """launch/memotion3.py, Task A only, tiny sizes (about 8 minutes on 2 cores)."""
  subprocess.run([sys.executable, os.path.join(ROOT, "launch", "memotion3.py"),
                  f"--workdir={tmp_path}", "--variants=tiny", "--clip_variants=tiny",
                  "--targets=task_a", "--trials=2", "--synthetic_size=60", "--backend=local"],
                 check=True,
                 cwd=ROOT, env=dict(os.environ, MMJAX_CACHE=str(tmp_path / "cache")))
  table = json.loads((tmp_path / "table4.json").read_text())
  assert set(table["rows"]) == {name for name, _ in pipeline.ROWS} | set(pipeline.ENSEMBLES)
  assert all(0.0 <= s["Overall"] <= 1.0 for s in table["rows"].values())
  ids = [row[0] for row in csv.reader(open(tmp_path / "test_predictions.csv"))][1:]
  assert len(ids) == 8  # the tiny synthetic test split, predicted by Ensemble-2


@pytest.mark.slow
def test_the_search_runs_its_trials_with_ray_tune(tmp_path, cache_dir):
  pytest.importorskip("ray")
  config = pipeline.target_config(load_config("memotion3", "tiny"), "task_a", "image")
  trials = pipeline.search(config, str(tmp_path), trials=2, seed=0, backend="ray")
  assert [os.path.basename(t.workdir) for t in sorted(trials, key=lambda t: t.workdir)] == [
      "trial_0", "trial_1"]
  assert trials[0].score >= trials[1].score
  for trial in trials:  # each trial is an ordinary run in its own workdir
    assert trial.score == pipeline.best_score(trial.workdir)
