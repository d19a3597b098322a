"""The MER2024 system of seed 003 measured: the attention fusion network over MERTools features
(configs/mer2024.py) with and without modality dropout and with and without self-training,
each under MERTools' 5-fold protocol, and its accuracy when a modality is missing at test time.

Rows (each under <root>/<row>; `parse_row`):
  fusion                 5-fold cross-validation (mmjax.train.multirun.k_fold): one model per
                         fold, test probabilities averaged over the folds;
  mdrop, mdrop<P>        the same with modality dropout p = 0.3, or P (e.g. mdrop0.15);
  self_training          self-training rounds (multirun.self_training: top-k per class from the
                         unlabelled pool, data split 'unlabelled', up to N rounds, one run per
                         round), then the 5-fold protocol on the final round's training set;
  mdrop[P]_self_training both (the paper's Table 2 rows: p = 0, 0.15, 0.3, 0.5 with
                         self-training).
Per row: the fold-averaged test accuracy and WAF, the same with each modality blanked in every
fold model (data.missing_modalities), the folds' mean validation WAF, and for the
self-training rows the pseudo-labels added per round. Results: <root>/results.json and
results.md; a killed run resumes.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from mmjax.config_files import load_checkout_config
from mmjax.metrics.emotion import mer_scores
from mmjax.train import multirun, snapshot

__all__ = ["ROWS", "markdown", "parse_row", "row_name", "run_row", "run_rows"]

ROWS = ("fusion", "mdrop", "self_training", "mdrop_self_training", "mdrop0.15_self_training",
        "mdrop0.5_self_training")
DEFAULT_DROPOUT = 0.3  # 'mdrop' without a number: the paper's best p
_ROW = re.compile(r"(?:(?P<fusion>fusion)|mdrop(?P<p>0\.\d+)?)?(?P<st>_?self_training)?")


def parse_row(row: str) -> Tuple[float, bool]:
  """(modality dropout p, self-training) of a row name: 'fusion' (0, no), 'mdrop' (0.3, no),
  'self_training' (0, yes), 'mdrop0.15_self_training' (0.15, yes), ..."""
  match = _ROW.fullmatch(row)
  if not row or match is None or (match["fusion"] and match["st"]):
    raise ValueError(f"row {row!r}: expected 'fusion', 'mdrop[P]', 'self_training' or "
                     f"'mdrop[P]_self_training' (P e.g. 0.15), as in {list(ROWS)}")
  dropout = 0.0 if match["fusion"] or not row.startswith("mdrop") else float(
      match["p"] or DEFAULT_DROPOUT)
  return dropout, bool(match["st"])


def row_name(row: str) -> str:
  """The row's label in the README table."""
  dropout, self_training = parse_row(row)
  parts = ["attention fusion"] + ([f"modality dropout {dropout:g}"] if dropout else []) + (
      ["self-training"] if self_training else [])
  return " + ".join(parts)


def _scores(probs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  out = mer_scores(labels, probs)
  return {"accuracy": out["accuracy"], "weighted_f1": out["weighted_f1"]}


def _fold_workdirs(root: str, folds: int) -> list:
  return [os.path.join(root, f"fold_{f}") for f in range(folds)]


def _missing_scores(root: str, folds: int, fields: Sequence[str], labels: np.ndarray) -> dict:
  """{field: scores of the fold-averaged test probabilities with that field blanked}."""
  out = {}
  for field in fields:
    probs = [multirun.predict(snapshot.read(w), w, "test", head="emotion",
                              missing_modalities=(field,))[0]
             for w in _fold_workdirs(root, folds)]
    out[field] = _scores(np.mean(probs, axis=0), labels)
  return out


def run_row(row: str, root: str, variants: str = "", overrides: Mapping[str, Any] = ()) -> dict:
  """One row's record (module docstring); `overrides` {dotted config key: value} are set on
  the row's config (e.g. the real data's data.mertools keys)."""
  dropout, self_training = parse_row(row)
  config = multirun.with_values(load_checkout_config("mer2024", variants),
                                **{"model.modality_dropout": dropout, **dict(overrides)})
  folds = int(config.protocol.folds)
  record = {}
  if self_training:
    rounds = multirun.self_training(
        config, os.path.join(root, "rounds"), rounds=int(config.protocol.self_training_rounds),
        top_k=int(config.protocol.top_k), eval_split="eval", pool_split="unlabelled")
    record["rounds"] = [{k: r[k] for k in ("round", "train_rows", "added", "accuracy",
                                           "weighted_f1")} for r in rounds]
    config = multirun.with_values(config, **{"data.directory": rounds[-1]["data"]})
  result = multirun.k_fold(config, os.path.join(root, "kfold"), folds=folds)
  labels = result["labels"]
  record.update({
      "test": _scores(result["mean_probs"], labels),
      "folds": [_scores(p, labels) for p in result["fold_probs"]],
      "validation_weighted_f1": float(np.mean([m["weighted_f1"]
                                               for m in result["fold_metrics"]])),
      "missing": _missing_scores(os.path.join(root, "kfold"), folds,
                                 tuple(config.data.modalities), labels)})
  return record


def run_rows(root: str, rows: Sequence[str] = ROWS, variants: str = "",
             overrides: Mapping[str, Any] = (), log: Callable[[str], None] = print) -> dict:
  """Runs `rows` under `root` (`run_row`); returns {row: record}, also written to
  results.json/.md."""
  for row in rows:
    parse_row(row)
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, "results.json")
  results = multirun.read_json(path, {})
  for row in rows:
    start = time.time()
    results[row] = {**run_row(row, os.path.join(root, row), variants, overrides),
                    "wall_s": round(time.time() - start, 1)}
    multirun.write_json(path, results)
    log(f"MER2024 {row}: test {results[row]['test']}, missing {results[row]['missing']}")
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(markdown(results) + "\n")
  return results


def _pct(value: float) -> str:
  return f"{100 * value:.1f}"


def markdown(results: Dict[str, dict]) -> str:
  """One line per row: test accuracy and WAF (%), accuracy with each modality missing, mean
  validation WAF, pseudo-labels added, wall time."""
  fields = sorted({f for r in results.values() for f in r["missing"]})
  head = ["system", "test acc.", "test WAF", *[f"acc., no {f}" for f in fields],
          "val. WAF (folds)", "pseudo-labels", "wall time"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row, r in results.items():
    added = sum(x["added"] for x in r.get("rounds", [])) if "rounds" in r else "-"
    cells = [row_name(row), _pct(r["test"]["accuracy"]), _pct(r["test"]["weighted_f1"]),
             *[_pct(r["missing"][f]["accuracy"]) for f in fields],
             _pct(r["validation_weighted_f1"]), str(added), f"{r['wall_s']:.0f} s"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
