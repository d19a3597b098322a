"""Every measurement of the AV-digits README table, each an ordinary run of configs/avdigits.py
(or a protocol of such runs, mmjax.train.multirun) in its own workdir under one root, so a
killed benchmark resumes where it stopped and a finished row is only evaluated again.

Rows (ROWS; `run_rows(root, rows)`), accuracy on the test speaker unless said otherwise:
  image, audio, fused             the unimodal models and the fused model (cross-entropy)
  gblend_online, gblend_offline   fused + gradient blending (online: re-estimated every
                                  evaluation; offline: estimated once from short per-head runs)
  mdrop                           fused + modality dropout p = 0.3; with `fused`, the accuracy
                                  when audio or image is missing at test time
  imbalanced_ce, imbalanced_focal long-tailed training set: cross-entropy vs focal loss
  pnao                            L1 sparse training, then PNAO rounds (k = 0.05): accuracy and
                                  parameter count per round, the best round kept
  kfold                           5-fold models: their test probabilities fused by plain
                                  averaging, by entropy weights (seed 004) and by majority vote
  ensembles                       the six models above (ENSEMBLE_MODELS, after their rows) fused
                                  on both held-out speakers: averaging, entropy weights, majority
                                  vote of all, and seed 000's vote of the subset that is best on
                                  the validation speaker, applied to the test speaker
  self_training                   10 % of the training labels, pseudo-labels added per round
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Dict, Sequence

import numpy as np

from mmjax import benchmarking, fusion
from mmjax.config_files import CHECKOUT_CONFIGS, load_checkout_config
from mmjax.metrics.classification import confusion_matrix, metrics_from_confusion
from mmjax.projects.avdigits import model as avmodel
from mmjax.train import multirun, snapshot
from mmjax.train.trainer import train_and_evaluate

ROWS = ("image", "audio", "fused", "gblend_online", "gblend_offline", "mdrop", "imbalanced_ce",
        "imbalanced_focal", "pnao", "kfold", "ensembles", "self_training")
ENSEMBLE_MODELS = ("image", "audio", "fused", "gblend_online", "gblend_offline", "mdrop")
CONFIG_FILE = os.path.join(CHECKOUT_CONFIGS, "avdigits.py")


def load_config(variants: str = "", config_file: str = CONFIG_FILE):
  """configs/avdigits.py with `variants` (comma-separated)."""
  return load_checkout_config("avdigits", variants, os.path.dirname(os.path.abspath(config_file)))


def _final(metrics: Dict[str, float], split: str = "test") -> Dict[str, float]:
  return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(split + "/")}


def _record(metrics: Dict[str, float]) -> dict:
  """A row's final metrics: test, validation and (when evaluated) the missing-modality splits."""
  return {name: _final(metrics, split) for name, split in (
      ("test", "test"), ("validation", "eval"), ("test_no_audio", "test_no_audio"),
      ("test_no_image", "test_no_image")) if any(k.startswith(split + "/") for k in metrics)}


def _scores(probs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """accuracy and weighted F1 of the argmax of `probs` [N, C]."""
  matrix = confusion_matrix(labels, probs.argmax(1), probs.shape[1])
  out = metrics_from_confusion(matrix)
  return {"accuracy": out["accuracy"], "weighted_f1": out["weighted_f1"]}


class Benchmark:
  """Runs rows under `root` with `variants` appended to every config (e.g. 'tiny')."""

  def __init__(self, root: str, variants: str = "", config_file: str = CONFIG_FILE,
               pnao_rounds: int = 5, self_training_rounds: int = 10, folds: int = 5,
               gblend_steps: int = 200):
    self.root, self.variants, self.config_file = root, variants, config_file
    self.pnao_rounds, self.self_training_rounds = pnao_rounds, self_training_rounds
    self.folds, self.gblend_steps = folds, gblend_steps

  def config(self, *variants: str):
    names = [v for v in variants if v] + ([self.variants] if self.variants else [])
    return load_config(",".join(names), self.config_file)

  def train(self, name: str, config) -> Dict[str, float]:
    return train_and_evaluate(config, os.path.join(self.root, name))

  # One method per row; each returns a JSON-able record.

  def unimodal_or_fused(self, row: str) -> dict:
    return _record(self.train(row, self.config("" if row == "fused" else row)))

  def gblend_online(self) -> dict:
    metrics = self.train("gblend_online", self.config("gblend"))
    return {**_record(metrics),
            "weights": _logged_weights(os.path.join(self.root, "gblend_online"))}

  def gblend_offline(self) -> dict:
    base = self.config("gblend")
    heads = ("audio", "image", "fused")
    weights_file = multirun.offline_gblend(base, os.path.join(self.root, "gblend_offline_runs"),
                                           heads, steps=self.gblend_steps)
    config = multirun.with_values(self.config(), **{"loss.gblend.mode": "offline",
                                                    "loss.gblend.weights_file": weights_file})
    metrics = self.train("gblend_offline", config)
    with open(weights_file) as f:
      weights = json.load(f)["weights"]
    return {**_record(metrics), "weights": weights}

  def mdrop(self) -> dict:
    return _record(self.train("mdrop", self.config("mdrop")))

  def imbalanced(self, loss: str) -> dict:
    variants = ("imbalanced", "focal") if loss == "focal" else ("imbalanced",)
    return _record(self.train(f"imbalanced_{loss}", self.config(*variants)))

  def pnao(self) -> dict:
    config = self.config("l1")
    return multirun.pnao(
        config, os.path.join(self.root, "pnao"), rounds=self.pnao_rounds, k=0.05,
        consumers=lambda widths: avmodel.consumers(widths, config.model.modalities),
        metric="eval/accuracy", keep=r"head.*", report=("test/accuracy",))

  def kfold(self) -> dict:
    result = multirun.k_fold(self.config(), os.path.join(self.root, "kfold"), folds=self.folds)
    probs, labels = result["fold_probs"], result["labels"]
    return {"folds": [_scores(p, labels) for p in probs],
            "mean": _scores(fusion.weighted_average(probs), labels),
            "entropy": _scores(fusion.entropy_fusion(probs), labels),
            "majority_vote": _scores(np.eye(probs.shape[2])[fusion.majority_vote(probs)],
                                     labels)}

  def ensembles(self) -> dict:
    probs, labels = {}, {}
    for split in ("validation", "test"):
      workdirs = [os.path.join(self.root, m) for m in ENSEMBLE_MODELS]
      outputs = [multirun.predict(snapshot.read(w), w, split, head="fused") for w in workdirs]
      probs[split] = np.stack([p for p, _ in outputs])
      labels[split] = outputs[0][1]
    subset = fusion.best_vote_subset(probs["validation"], labels["validation"])
    record = {"models": list(ENSEMBLE_MODELS), "subset": [ENSEMBLE_MODELS[i] for i in
                                                          subset.models]}
    for split in ("validation", "test"):
      p, y = probs[split], labels[split]
      one_hot = np.eye(p.shape[2])
      record[split] = {
          "models": [_scores(q, y) for q in p],
          "mean": _scores(fusion.weighted_average(p), y),
          "entropy": _scores(fusion.entropy_fusion(p), y),
          "majority_vote": _scores(one_hot[fusion.majority_vote(p)], y),
          "best_subset_vote": _scores(one_hot[fusion.apply_vote_subset(p, subset)], y)}
    return record

  def self_training(self) -> dict:
    return {"rounds": multirun.self_training(
        self.config(), os.path.join(self.root, "self_training"),
        rounds=self.self_training_rounds, top_k=10, labelled_fraction=0.1)}

  def run(self, row: str) -> dict:
    """One row's record (module docstring)."""
    if row in ("image", "audio", "fused"):
      return self.unimodal_or_fused(row)
    if row in ("imbalanced_ce", "imbalanced_focal"):
      return self.imbalanced(row.split("_")[1])
    if row not in ROWS:
      raise ValueError(f"unknown row {row!r}; rows are {ROWS}")
    return getattr(self, row)()


def _logged_weights(workdir: str) -> list:
  """The G-Blend weights [audio, image, fused] in the final checkpoint's task state."""
  task_state = multirun.final_state(workdir, "task_state")
  return np.asarray(task_state["gblend"]["weights"]).round(4).tolist()


def run_rows(root: str, rows: Sequence[str] = ROWS, variants: str = "", **kwargs) -> dict:
  """Runs `rows` (resuming), writes <root>/results.json and results.md; returns the records."""
  os.makedirs(root, exist_ok=True)
  bench = Benchmark(root, variants, **kwargs)
  path = os.path.join(root, "results.json")
  results = multirun.read_json(path, {})
  for row in rows:
    start = time.time()
    record = bench.run(row)
    # The first run's time (with training); running a finished row again only re-evaluates.
    record["wall_s"] = results.get(row, {}).get("wall_s", round(time.time() - start, 1))
    results[row] = record
    multirun.write_json(path, results)
    print(f"{row}: done in {record['wall_s']:.0f}s", flush=True)
  results["_hardware"] = hardware()
  multirun.write_json(path, results)
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(markdown(results))
  return results


def hardware() -> str:
  """The machine the rows ran on."""
  return (f"{benchmarking.hardware_description()}, {platform.python_implementation()} "
          f"{platform.python_version()}")


def _wall(record: dict) -> str:
  seconds = record.get("wall_s")
  return "-" if seconds is None else f"{seconds:.0f} s"


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def markdown(results: dict) -> str:
  """The README tables from `run_rows`' records (rows that did not run are left out)."""
  lines = [f"Measured on {results.get('_hardware', 'unknown hardware')}.", ""]
  acc = lambda row, split="test": _pct(results[row][split]["accuracy"]) if row in results else "-"
  lines += ["| model | test acc. % | weighted F1 % | audio missing % | image missing % | "
            "validation speaker acc. % | wall time |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  for row, name in (("image", "image only"), ("audio", "audio only"), ("fused", "fused"),
                    ("gblend_online", "fused + G-Blend (online)"),
                    ("gblend_offline", "fused + G-Blend (offline)"),
                    ("mdrop", "fused + modality dropout 0.3")):
    if row not in results:
      continue
    rec = results[row]
    missing = [acc(row, s) if s in rec else "-" for s in ("test_no_audio", "test_no_image")]
    lines.append(f"| {name} | {acc(row)} | {_pct(rec['test']['weighted_f1'])} | "
                 f"{missing[0]} | {missing[1]} | {acc(row, 'validation')} | {_wall(rec)} |")
  if "imbalanced_ce" in results and "imbalanced_focal" in results:
    lines += ["", "| long-tailed training set | test acc. % | macro F1 % | "
              "validation speaker acc. % |", "| --- | --- | --- | --- |"]
    for row, name in (("imbalanced_ce", "cross-entropy"), ("imbalanced_focal", "focal, gamma 2")):
      lines.append(f"| {name} | {acc(row)} | {_pct(results[row]['test']['macro_f1'])} | "
                   f"{acc(row, 'validation')} |")
  if "pnao" in results:
    pnao = results["pnao"]
    lines += ["", "| PNAO round | parameters | validation acc. % | test acc. % |",
              "| --- | --- | --- | --- |"]
    for rec in pnao["rounds"]:
      best = " (best)" if rec["round"] == pnao["best_round"] else ""
      lines.append(f"| {rec['round']}{best} | {rec['params']:,} | {_pct(rec['eval/accuracy'])} | "
                   f"{_pct(rec['test/accuracy'])} |")
  if "kfold" in results:
    kf = results["kfold"]
    folds = [f["accuracy"] for f in kf["folds"]]
    lines += ["", "| 5 fold models fused by | test acc. % | weighted F1 % |", "| --- | --- | --- |",
              f"| (single folds) | {_pct(min(folds))}-{_pct(max(folds))} | |"]
    for key, name in (("mean", "plain average"), ("entropy", "entropy weights (seed 004)"),
                      ("majority_vote", "majority vote")):
      lines.append(f"| {name} | {_pct(kf[key]['accuracy'])} | {_pct(kf[key]['weighted_f1'])} |")
  if "ensembles" in results:
    ens = results["ensembles"]
    lines += ["", "| fusing the six models above | validation speaker acc. % | "
              "test speaker acc. % |", "| --- | --- | --- |",
              "| (single models) | " + " | ".join(
                  f"{_pct(min(m['accuracy'] for m in ens[s]['models']))}-"
                  f"{_pct(max(m['accuracy'] for m in ens[s]['models']))}"
                  for s in ("validation", "test")) + " |"]
    for key, name in (("mean", "plain average"), ("entropy", "entropy weights (seed 004)"),
                      ("majority_vote", "majority vote, all six"),
                      ("best_subset_vote", "majority vote, subset best on validation: "
                                           + "+".join(ens["subset"]))):
      lines.append(f"| {name} | {_pct(ens['validation'][key]['accuracy'])} | "
                   f"{_pct(ens['test'][key]['accuracy'])} |")
  if "self_training" in results:
    lines += ["", "| self-training round | training rows | pseudo-labels right % | test acc. % |",
              "| --- | --- | --- | --- |"]
    for rec in results["self_training"]["rounds"]:
      lines.append(f"| {rec['round']} | {rec['train_rows']} | {_pct(rec['pseudo_accuracy'])} | "
                   f"{_pct(rec.get('accuracy'))} |")
  return "\n".join(lines) + "\n"
