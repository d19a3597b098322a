"""Seed 001's comparison (launch/compare.py: Tables 4-9) and analysis (launch/report.py: Figs. 1,
8, 9, Tables 1-3): the table arithmetic against hand computations, then both commands end to end
on tiny synthetic data (the attention-RNN family: its four rows are trained here)."""

import json
import os

import numpy as np
import pytest
from helpers.runs import env, run, script_command

from mmjax import benchmarking
from mmjax.metrics.taxonomy import Taxonomy
from mmjax.projects.youtube8m import compare, report


def _metrics(gap, level_gap, categories):
  out = {"eval/gap": gap, "eval/map": 0.5, "eval/perr": 0.4, "eval/hit_at_1": 0.9,
         "eval/loss": 3.0, "eval/num_examples": 10, "eval/level_0/gap": level_gap,
         "eval/level_0/num_examples": 5, "train/loss": 1.0}
  out.update({f"eval/category_{name}/gap": v for name, v in categories.items()})
  return out


def test_error_tables_are_100_minus_the_value_and_the_gain_is_baseline_minus_cmc():
  runs = {"early": _metrics(0.70, 0.6, {"a": 0.5, "b": 0.9}),
          "late": _metrics(0.80, 0.7, {"a": 0.6, "b": 0.8}),
          "cmg": _metrics(0.82, 0.7, {"a": 0.6, "b": 0.8}),
          "cmc": _metrics(0.85, 0.75, {"a": 0.7, "b": 0.75})}
  rates = {f: compare.error_rates(m) for f, m in runs.items()}
  assert rates["late"]["overall/gap"] == pytest.approx(20.0)
  assert rates["late"]["level_0/gap"] == pytest.approx(30.0)
  assert rates["late"]["category_b/gap"] == pytest.approx(20.0)
  assert not any("loss" in k or "num_examples" in k for k in rates["late"])
  assert compare.best_baseline(rates) == "late"
  table = compare.error_table("netvlad", rates).splitlines()
  assert table[0] == "| scope | error % | NV-E | NV-L | NV-CM-G | NV-CM-C |"
  assert table[2] == "| overall | GAP | 30.00 | 20.00 | 18.00 | 15.00 |"
  assert "| level 0 | GAP | 40.00 | 30.00 | 30.00 | 25.00 |" in table
  categories = compare.category_table("netvlad", rates).splitlines()
  assert categories[0] == ("| level-0 category | NV-L GAP error % | NV-CM-C GAP error % | gain |")
  assert categories[2:] == ["| a | 40.00 | 30.00 | +10.00 |", "| b | 20.00 | 25.00 | -5.00 |"]


def test_example_tables_pick_videos_by_top_prediction():
  labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)
  baseline = np.array([[.1, .9, 0], [.1, .8, 0], [.9, 0, .1], [.2, .1, 0]])  # right: 1, 3
  cmc = np.array([[.9, .1, 0], [.8, .1, 0], [0, 0, .9], [0, .5, 0]])  # right: 0, 2, 3
  taxonomy = Taxonomy(np.zeros(3, np.int64), np.zeros(3, np.int64), ("all",),
                      {0: "cat", 1: "dog"})
  ids = ["v0", "v1", "v2", "v3"]
  text = compare.example_tables("transformer", "late", {
      "late": (baseline, labels, ids, taxonomy), "cmc": (cmc, labels, ids, taxonomy)}, 4)
  assert "right and TM-L's wrong for 2 (the reverse: 1)" in text
  assert ("| v0 | cat | dog 0.90; cat 0.10; class 2 0.00 | cat 0.90; dog 0.10; class 2 0.00 |"
          in text)
  assert "wrong for 1 of 4" in text and "| v1 | dog |" in text


def test_mistake_tables_list_the_most_confident_mistakes_first():
  pairs = {"rgb_id": ["a", "b", "c", "d", "e"], "audio_id": ["a", "x", "c", "y", "e"],
           "correlated": np.array([1, 0, 1, 0, 1.0]), "p": np.array([0.3, 0.9, 0.1, 0.6, 0.8]),
           "rgb_labels": [np.array([0])] * 5, "audio_labels": [np.array([1])] * 5,
           "taxonomy": None}
  text = report.mistake_tables(pairs, 5)
  assert "uncorrelated (p < 0.5), most confident first: 2 of 3" in text
  assert text.index("| c | c | 0.100 |") < text.index("| a | a | 0.300 |")
  assert "correlated (p >= 0.5), most confident first: 2 of 2" in text
  assert text.index("| b | x | 0.900 |") < text.index("| d | y | 0.600 |")
  assert "| e | e |" not in text  # a right answer is no mistake


def _final_eval(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if '"eval"' in line][-1]


@pytest.fixture(scope="module")
def comparison(cache_dir, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("compare"))
  result = run(script_command("compare.py", root, "--family=attention_rnn",
                              "--config.total_steps=4", "--config.eval_every_steps=4"),
               env(cache_dir))
  return root, result.stdout


def test_compare_trains_the_tower_once_and_prints_every_table(comparison):
  root, stdout = comparison
  for name in ("tower", "attention_rnn_early", "attention_rnn_late", "attention_rnn_cmg",
               "attention_rnn_cmc"):
    assert os.path.isdir(os.path.join(root, name, "checkpoints")), name
  with open(os.path.join(root, "comparison_attention_rnn.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["markdown"] in stdout
  assert "| scope | error % | AR-E | AR-L | AR-CM-G | AR-CM-C |" in stdout
  for scope in ("overall", "level 0", "level 3"):
    assert f"| {scope} | Hit@1 |" in stdout
  # Each row's overall GAP error is 100 - the GAP of its own final evaluation.
  for fusion in compare.FUSIONS:
    final = _final_eval(os.path.join(root, f"attention_rnn_{fusion}"))
    assert saved["rates"][fusion]["overall/gap"] == pytest.approx(100 * (1 - final["gap"]))
  assert "GAP error % per level-0 category" in stdout and "Table 7" in stdout
  assert {"tower", "AR-E", "AR-L", "AR-CM-G", "AR-CM-C"} == set(saved["times"])
  assert saved["hardware"] == benchmarking.hardware_description()


def test_report_writes_figures_and_mistake_tables(comparison, cache_dir, tmp_path):
  root, _ = comparison
  result = run(script_command(
      "report.py", str(tmp_path), "--weights=4",
      f"--attention_workdir={os.path.join(root, 'attention_rnn_cmc')}", "--videos=24",
      config="configs/ytb8m_correlation.py:tiny"), env(cache_dir))
  for name in ("fig8_negative_weight.png", "fig9_positive_outputs.png", "fig1_attention.png"):
    with open(os.path.join(tmp_path, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
  assert os.path.isdir(os.path.join(tmp_path, "weight_2", "checkpoints"))  # the config's own
  assert os.path.isdir(os.path.join(tmp_path, "weight_4", "checkpoints"))
  assert "| negative-class weight | error % | FPR % | FNR % |" in result.stdout
  # Fig. 8's row for weight 4 is that run's final evaluation, as error, FPR and FNR in %.
  final = _final_eval(os.path.join(tmp_path, "weight_4"))
  assert (f"| 4 | {100 * (1 - final['accuracy']):.1f} | {100 * final['fpr']:.1f} | "
          f"{100 * final['fnr']:.1f} |") in result.stdout
  assert "Same-video pairs judged uncorrelated" in result.stdout


def test_tower_pairs_are_the_evaluation_pairs(comparison, cache_dir):
  """Fig. 9 and Tables 1-3 see the pairs the evaluation saw: same video iff correlated, and
  the tower's accuracy on them is the one its final evaluation logged."""
  del cache_dir
  from mmjax.train import snapshot  # pylint: disable=import-outside-toplevel
  tower = os.path.join(comparison[0], "tower")
  pairs = report.tower_pairs(snapshot.read(tower), tower, num_videos=24)
  same = np.array([a == b for a, b in zip(pairs["rgb_id"], pairs["audio_id"])])
  np.testing.assert_array_equal(same, pairs["correlated"] > 0)
  assert 0 < same.sum() < len(same) and ((pairs["p"] >= 0) & (pairs["p"] <= 1)).all()
  accuracy = np.mean((pairs["p"] >= 0.5) == (pairs["correlated"] > 0))
  assert accuracy == pytest.approx(_final_eval(tower)["accuracy"])


def test_attention_maps_are_the_streams_attention_units(comparison, cache_dir):
  """Fig. 1's curves: each stream's own attention (mean over units) sums to 1 over real frames."""
  del cache_dir
  from mmjax.train import snapshot  # pylint: disable=import-outside-toplevel
  workdir = os.path.join(comparison[0], "attention_rnn_cmc")
  maps = report.attention_maps(snapshot.read(workdir), workdir, video=1)
  for stream in ("rgb", "audio"):
    assert maps[f"{stream}_attention"].shape == (maps["length"],)
    assert maps[f"{stream}_attention"].sum() == pytest.approx(1.0, abs=1e-5)
    assert maps[f"{stream}_cross"].shape == (maps["length"],)
  with pytest.raises(ValueError, match="needs a cross-modal attention-RNN run"):
    late = os.path.join(comparison[0], "attention_rnn_late")
    report.attention_maps(snapshot.read(late), late)
