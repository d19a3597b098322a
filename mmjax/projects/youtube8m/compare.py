"""Seed 001's comparison of one model family (Tables 4-9), run on any YouTube-8M copy.

`run_comparison` trains the correlation tower once (configs/ytb8m_correlation.py), then the four
rows of a family, E, L, CM-G and CM-C (configs/ytb8m.py:<family>_<fusion>), each in its own
workdir under one root, all by the ordinary trainer (a killed comparison resumes every run where
it stopped; a finished run is only evaluated again). It then prints, from the final evaluation
of each run:

* Tables 4 / 8: error rates in % (100 - value; lower is better) of GAP, MAP, PERR and Hit@1,
  overall and per taxonomy level, one column per row of the family;
* Tables 5 / 9: the GAP error per level-0 category of the best baseline (E or L, by overall GAP)
  and of CM-C, with the gain (baseline error - CM-C error, in points; positive: CM-C better);
* Tables 6 / 7: for evaluation videos, the ground truth next to the top predictions of the best
  baseline and of CM-C: videos whose top prediction CM-C gets right and the baseline wrong
  (Table 6, qualitative analysis), and videos whose top prediction CM-C gets wrong (Table 7,
  error analysis);

with the hardware and each run's wall time. Everything is also written to
<root>/comparison_<family>.md and .json (the families of one root share the tower).
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Callable, Dict, List, Mapping, Sequence

import jax
import numpy as np

from mmjax import benchmarking, parallel
from mmjax import metrics as mm_metrics
from mmjax.config_files import load_sibling
from mmjax.data import tfrecord
from mmjax.data.youtube8m import RecordSpec
from mmjax.train.steps import make_eval_step
from mmjax.train.trainer import restore_for_eval, train_and_evaluate

FUSIONS = ("early", "late", "cmg", "cmc")
BASELINES = ("early", "late")
FAMILY_ABBREVIATIONS = {"transformer": "TM", "netvlad": "NV", "attention_rnn": "AR"}
FUSION_ABBREVIATIONS = {"early": "E", "late": "L", "cmg": "CM-G", "cmc": "CM-C"}
METRICS = (("gap", "GAP"), ("map", "MAP"), ("perr", "PERR"), ("hit_at_1", "Hit@1"))
TOWER = "tower"
SPLIT = "eval"


def row_name(family: str, fusion: str) -> str:
  """The paper's name of a row, e.g. 'TM-CM-C'."""
  return f"{FAMILY_ABBREVIATIONS[family]}-{FUSION_ABBREVIATIONS[fusion]}"


def default_tower_config(config_file: str, variants: str, base):
  """The tower's config beside `config_file`: ytb8m_correlation.py with those of `variants` it
  knows (tiny, paper), and `base`'s data section and seed (so both train on the same data)."""
  module = load_sibling(config_file, "ytb8m_correlation")
  known = [v for v in variants.split(",") if v.strip() in module.VARIANTS]
  config = module.get_config(",".join(known))
  with config.unlocked():
    config.data = copy.deepcopy(base.data)
    config.seed = base.seed
  return config


def row_configs(base, tower_config, family: str, tower_workdir: str,
                apply_row: Callable[[object, str, str], None]) -> Dict[str, object]:
  """{fusion: config} of the four rows: copies of `base` with the row applied (`apply_row(config,
  family, fusion)`), the cm rows loading the tower of `tower_workdir` (its width from
  `tower_config.model.hidden`)."""
  if family not in FAMILY_ABBREVIATIONS:
    raise ValueError(f"--family={family!r}: expected one of {sorted(FAMILY_ABBREVIATIONS)}")
  configs = {}
  for fusion in FUSIONS:
    config = copy.deepcopy(base)
    with config.unlocked():
      config.model.correlation.workdir = tower_workdir
      config.model.correlation.hidden = tower_config.model.hidden
      apply_row(config, family, fusion)
    configs[fusion] = config
  return configs


def error_rates(metrics: Mapping[str, float], split: str = SPLIT) -> Dict[str, float]:
  """{'<scope>/<metric>': 100 (1 - value)} (`mmjax.metrics.error_rates`) from a run's final
  '<split>/...' metrics; scope 'overall', 'level_<l>' or 'category_<name>'."""
  own = {key[len(split) + 1:]: value for key, value in metrics.items()
         if key.startswith(f"{split}/")}
  rates = {}
  for key, value in mm_metrics.error_rates(own).items():
    scope, _, name = key.rpartition("/")
    rates[f"{scope or 'overall'}/{name[len('err_'):]}"] = value
  return rates


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def captioned_tables(header: Sequence[str], sections: Sequence[tuple]) -> str:
  """Markdown of (caption, rows) sections that share one table header; '(none)' for no rows."""
  parts = []
  for caption, rows in sections:
    parts += [caption, markdown_table(header, rows) if len(rows) else "(none)"]
  return "\n\n".join(parts)


def _scopes(rates: Mapping[str, float], prefix: str) -> List[str]:
  return sorted({key.split("/")[0] for key in rates if key.startswith(prefix)})


def error_table(family: str, rates: Mapping[str, Mapping[str, float]]) -> str:
  """Tables 4 / 8: rows scope x metric, one column per fusion (error %, lower is better)."""
  fusions = [f for f in FUSIONS if f in rates]
  any_rates = rates[fusions[0]]
  rows = []
  for scope in ["overall"] + _scopes(any_rates, "level_"):
    for metric, title in METRICS:
      key = f"{scope}/{metric}"
      if key in any_rates:
        label = "overall" if scope == "overall" else scope.replace("level_", "level ")
        rows.append([label, title] + [f"{rates[f][key]:.2f}" for f in fusions])
  return markdown_table(["scope", "error %"] + [row_name(family, f) for f in fusions], rows)


def best_baseline(rates: Mapping[str, Mapping[str, float]]) -> str:
  """The baseline fusion ('early' or 'late') with the lower overall GAP error."""
  return min(BASELINES, key=lambda f: rates[f]["overall/gap"])


def category_table(family: str, rates: Mapping[str, Mapping[str, float]]) -> str:
  """Tables 5 / 9: GAP error % per level-0 category, best baseline against CM-C, with the gain
  (baseline - CM-C, in points)."""
  baseline = best_baseline(rates)
  rows = []
  for scope in _scopes(rates["cmc"], "category_"):
    before, after = rates[baseline][f"{scope}/gap"], rates["cmc"][f"{scope}/gap"]
    rows.append([scope[len("category_"):], f"{before:.2f}", f"{after:.2f}",
                 f"{before - after:+.2f}"])
  return markdown_table(["level-0 category", f"{row_name(family, baseline)} GAP error %",
                    f"{row_name(family, 'cmc')} GAP error %", "gain"], rows)


def first_eval_chunks(config, task, num_videos: int):
  """The first `num_videos` videos of the eval pattern, read directly in file order (the same
  videos for every run), as padded batches of config.eval_batch_size (`spec.collate`; padding
  has weight 0), and their ids."""
  spec = RecordSpec.from_config(task.data_config)
  examples, ids = [], []
  for path in tfrecord.list_files(task.data_config.eval_pattern):
    for index, data in enumerate(tfrecord.iter_tfrecord(path)):
      if len(examples) == num_videos:
        break
      examples.append(spec.parse_raw(data, path=path, index=index))
      ids.append(examples[-1]["id"])
  size = config.eval_batch_size
  examples += [None] * (-len(examples) % size)
  return [spec.collate(examples[i:i + size]) for i in range(0, len(examples), size)], ids


def restore_and_read_videos(config, workdir: str, num_videos: int):
  """Restores the latest checkpoint of `workdir` and reads the first `num_videos` eval videos.
  Returns (task, chunks, ids, run): `first_eval_chunks`, and run(batch) -> the outputs of the
  jitted eval step (predictions, evaluator batch, loss sum, weight sum) on any mesh."""
  task, state, shardings, mesh, _ = restore_for_eval(config, workdir)
  chunks, ids = first_eval_chunks(config, task, num_videos)
  eval_step = make_eval_step(task, mesh, shardings)
  return task, chunks, ids, lambda batch: eval_step(state, parallel.global_batch(batch, mesh))


def predict_videos(config, workdir: str, num_videos: int):
  """(probabilities [N, C], labels [N, C], ids, taxonomy) of the first `num_videos` eval videos
  under the latest checkpoint of `workdir`."""
  task, chunks, ids, run = restore_and_read_videos(config, workdir, num_videos)
  probabilities = np.concatenate([np.asarray(run(chunk)[0]) for chunk in chunks])
  labels = np.concatenate([chunk["labels"] for chunk in chunks])
  return probabilities[:len(ids)], labels[:len(ids)], ids, task.taxonomy


def class_names(taxonomy, classes) -> List[str]:
  """The names of class ids (`Taxonomy.class_name`; 'class <id>' without a taxonomy)."""
  return [taxonomy.class_name(c) if taxonomy else f"class {c}" for c in classes]


def _top(taxonomy, probabilities, k: int) -> str:
  order = np.argsort(-probabilities, kind="stable")[:k]
  return "; ".join(f"{name} {probabilities[c]:.2f}"
                   for name, c in zip(class_names(taxonomy, order), order))


def example_tables(family: str, baseline: str, predictions: Mapping[str, tuple],
                   num_examples: int, top_k: int = 3) -> str:
  """Tables 6 / 7 from `predictions` {fusion: predict_videos(...)} of the baseline and CM-C."""
  base_p, labels, ids, taxonomy = predictions[baseline]
  cmc_p = predictions["cmc"][0]
  right = lambda p: labels[np.arange(len(labels)), p.argmax(1)] > 0
  base_right, cmc_right = right(base_p), right(cmc_p)
  improved = np.flatnonzero(cmc_right & ~base_right)[:num_examples]
  mistakes = np.flatnonzero(~cmc_right)[:num_examples]
  header = ["video", "ground truth", f"{row_name(family, baseline)} top {top_k}",
            f"{row_name(family, 'cmc')} top {top_k}"]

  def rows(indices):
    return [[ids[i], "; ".join(class_names(taxonomy, np.flatnonzero(labels[i]))),
             _top(taxonomy, base_p[i], top_k), _top(taxonomy, cmc_p[i], top_k)] for i in indices]

  n = len(labels)
  return captioned_tables(header, [
      (f"Table 6 (qualitative analysis): of the first {n} evaluation videos, CM-C's top "
       f"prediction is right and {row_name(family, baseline)}'s wrong for "
       f"{int((cmc_right & ~base_right).sum())} (the reverse: "
       f"{int((base_right & ~cmc_right).sum())}); the first {len(improved)}:", rows(improved)),
      (f"Table 7 (error analysis): CM-C's top prediction is wrong for "
       f"{int((~cmc_right).sum())} of {n}; the first {len(mistakes)}:", rows(mistakes))])


class Comparison:
  """The runs of one family's comparison under `root` (module docstring)."""

  def __init__(self, root: str, family: str, base, tower_config,
               apply_row: Callable[[object, str, str], None], log: Callable[[str], None] = print):
    self.root, self.family, self.log = root, family, log
    self.tower_config = tower_config
    self.tower_workdir = os.path.join(root, TOWER)
    self.configs = row_configs(base, tower_config, family, self.tower_workdir, apply_row)
    self.times_path = os.path.join(root, "wall_times.json")

  def workdir(self, fusion: str) -> str:
    return os.path.join(self.root, f"{self.family}_{fusion}")

  def _train(self, name: str, config, workdir: str, times: dict) -> Dict[str, float]:
    self.log(f"== {name}: training in {workdir}")
    start = time.time()
    metrics = train_and_evaluate(config, workdir)
    seconds = time.time() - start
    # A finished run is only evaluated again: keep the time it took to train.
    if name not in times or seconds > 0.5 * times[name]:
      times[name] = seconds
    os.makedirs(self.root, exist_ok=True)
    with open(self.times_path, "w", encoding="utf-8") as f:
      json.dump(times, f, indent=1)
    return metrics

  def run(self, num_examples: int = 4, num_videos: int = 0) -> Dict[str, object]:
    """Trains what is missing, evaluates, and returns {'markdown', 'rates', 'tower', 'times'}."""
    times = {}
    if os.path.isfile(self.times_path):
      with open(self.times_path, encoding="utf-8") as f:
        times = json.load(f)
    start = time.time()
    tower = self._train(TOWER, self.tower_config, self.tower_workdir, times)
    rates = {}
    for fusion, config in self.configs.items():
      name = row_name(self.family, fusion)
      rates[fusion] = error_rates(self._train(name, config, self.workdir(fusion), times))
    baseline = best_baseline(rates)
    num_videos = num_videos or self.configs["cmc"].eval_batch_size
    predictions = {f: predict_videos(self.configs[f], self.workdir(f), num_videos)
                   for f in (baseline, "cmc")}
    markdown = self.report(rates, tower, times, predictions, baseline, num_examples,
                           time.time() - start)
    result = {"family": self.family, "rates": rates, "tower": tower, "times": times,
              "hardware": benchmarking.hardware_description(), "markdown": markdown}
    with open(os.path.join(self.root, f"comparison_{self.family}.json"), "w",
              encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    with open(os.path.join(self.root, f"comparison_{self.family}.md"), "w",
              encoding="utf-8") as f:
      f.write(markdown + "\n")
    return result

  def report(self, rates, tower, times, predictions, baseline, num_examples, seconds) -> str:
    tower_text = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in tower.items()
                           if k.split("/")[-1] in ("accuracy", "fpr", "fnr"))
    names = [TOWER] + [row_name(self.family, f) for f in FUSIONS]
    run_times = ", ".join(f"{name} {times[name] / 60:.1f} min" for name in names if name in times)
    config = self.configs["late"]
    return "\n\n".join([
        f"# Seed 001 comparison: {self.family} ({config.total_steps} steps of batch "
        f"{config.batch_size} per row)",
        f"Hardware: {benchmarking.hardware_description()}; {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s). Wall time of each run: {run_times}; this "
        f"invocation {seconds / 60:.1f} min.",
        f"Correlation tower ({self.tower_workdir}), final evaluation: {tower_text}.",
        "Tables 4 / 8: error rates in % (lower is better), final evaluation of each run.",
        error_table(self.family, rates),
        "Tables 5 / 9: GAP error % per level-0 category.",
        category_table(self.family, rates),
        example_tables(self.family, baseline, predictions, num_examples)])
