"""Seed 004's Table 1 and Figures 2-4, measured: baseline (attention fusion of the three
structures), EnF (entropy-based decision fusion), PNAO (the baseline pruned) and EnF + PNAO.

Every row trains configs/mer2023.py (with `variants` appended, e.g. 'tiny' or 'avdigits') under
<root>/<row>:
  baseline, enf       one run; its final metrics;
  pnao, enf_pnao      PNAO (mmjax.train.multirun.pnao): round 0 trains with the L1 penalty
                      (eq. 8), each later round removes the nodes below k * max importance of
                      the hidden layers (eq. 10-11), rewinds the learning rate and retrains;
                      the row is the round with the best validation Com.
Columns: validation ('eval', the held-out 20 % of the training labels) Com, test WAF ("Dis"),
MSE ("Dim") and Com, and the parameter count. Figures (PNG, in <root>):
  figure2.png   the test confusion matrices of EnF and the baseline (seed 004 Fig. 2);
  figure3.png   validation Com and parameters per PNAO round of EnF + PNAO (Fig. 3);
  figure4.png   the distribution of the hidden layers' weight values per round (Fig. 4).
Results go to <root>/table1.json and table1.md. A killed run resumes (finished runs are not
trained again).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Mapping, Sequence

from mmjax.config_files import load_checkout_config
from mmjax.metrics.classification import confusion_matrix
from mmjax.models.mer_fusion import consumers
from mmjax.train import multirun, snapshot
from mmjax.train.trainer import train_and_evaluate
from mmjax.transforms import pruning

__all__ = ["ROWS", "markdown", "confusion_on_test", "run_table"]

ROWS = ("baseline", "enf", "pnao", "enf_pnao")
ROW_NAMES = {"baseline": "Baseline (attention fusion)", "enf": "EnF", "pnao": "PNAO",
             "enf_pnao": "EnF + PNAO"}
REPORTED = ("eval/weighted_f1", "eval/mse", "eval/com", "test/accuracy", "test/weighted_f1",
            "test/mse", "test/com")


def _row_config(row: str, variants: str, overrides: Mapping[str, Any]):
  """configs/mer2023.py with the row's variants ('baseline' for the attention decision, 'l1'
  for PNAO's sparse training) after `variants`, then `overrides` {dotted key: value}."""
  names = [v for v in (variants, "baseline" if row in ("baseline", "pnao") else "",
                       "l1" if row.endswith("pnao") else "") if v]
  return multirun.with_values(load_checkout_config("mer2023", ",".join(names)),
                              **dict(overrides))


def _pnao_row(config, root: str, rounds: int, k: float) -> dict:
  structures = [tuple(s) for s in config.model.structures]
  result = multirun.pnao(config, root, rounds=rounds, k=k or float(config.pnao.k),
                         consumers=lambda widths: consumers(structures, config.model.decision),
                         metric="eval/com", prunable=config.pnao.prunable,
                         report=tuple(m for m in REPORTED if m != "eval/com"))
  best = result["rounds"][result["best_round"]]
  return {"metrics": {m: best[m] for m in REPORTED}, "params": best["params"],
          "best_round": result["best_round"], "rounds": result["rounds"],
          "prunable": config.pnao.prunable,
          "workdir": os.path.join(root, f"round_{result['best_round']}")}


def confusion_on_test(workdir: str) -> list:
  """The test confusion matrix of the run in `workdir`, restored with its own config snapshot
  (a PNAO round's model has the round's widths)."""
  probs, labels = multirun.predict(snapshot.read(workdir), workdir, "test", head="emotion")
  return confusion_matrix(labels, probs.argmax(1), probs.shape[1]).astype(int).tolist()


def run_table(root: str, variants: str = "", rows: Sequence[str] = ROWS, rounds: int = 0,
              k: float = 0.0, overrides: Mapping[str, Any] = (),
              log: Callable[[str], None] = print) -> dict:
  """Runs `rows` (module docstring); rounds = PNAO rounds (0: config.pnao.rounds), k = the
  NAOR (0: config.pnao.k), overrides = {dotted config key: value} for every row (e.g. the real
  data's data.mertools keys). Returns
  {row: record} and writes table1.json / table1.md / the figures under `root`."""
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ValueError(f"unknown Table 1 row(s) {unknown}; rows are {list(ROWS)}")
  os.makedirs(root, exist_ok=True)
  results_file = os.path.join(root, "table1.json")
  results = multirun.read_json(results_file, {})
  for row in rows:
    config = _row_config(row, variants, overrides)
    start = time.time()
    workdir = os.path.join(root, row)
    if row.endswith("pnao"):
      record = _pnao_row(config, workdir, rounds or int(config.pnao.rounds), k)
    else:
      metrics = train_and_evaluate(config, workdir)
      record = {"metrics": {m: metrics[m] for m in REPORTED},
                "params": pruning.parameter_count(multirun.final_state(workdir)),
                "workdir": workdir}
    record["test_confusion"] = confusion_on_test(record["workdir"])
    record["class_names"] = list(config.data.class_names)
    record["wall_s"] = round(time.time() - start, 1)
    results[row] = record
    multirun.write_json(results_file, results)
    log(f"Table 1 {row}: {json.dumps(record['metrics'])} ({record['params']} parameters)")
  from mmjax.projects.mer2023 import figures  # pylint: disable=import-outside-toplevel
  figures.write_all(results, root)
  multirun.write_json(results_file, results)
  with open(os.path.join(root, "table1.md"), "w") as f:
    f.write(markdown(results) + "\n")
  return results


def _cell(value) -> str:
  return "-" if value is None else f"{value:.4f}"


def markdown(results: Dict[str, dict]) -> str:
  """Table 1's layout: row, validation Com, test WAF / MSE / Com, accuracy, parameters."""
  lines = ["| model | val. Com | test WAF (Dis) | test MSE (Dim) | test Com | test acc. | "
           "parameters | wall time |", "|---|---|---|---|---|---|---|---|"]
  for row in ROWS:
    if row not in results:
      continue
    r = results[row]
    m = r["metrics"]
    name = ROW_NAMES[row] + (f" (round {r['best_round']})" if "best_round" in r else "")
    lines.append(f"| {name} | {_cell(m['eval/com'])} | {_cell(m['test/weighted_f1'])} | "
                 f"{_cell(m['test/mse'])} | {_cell(m['test/com'])} | "
                 f"{_cell(m['test/accuracy'])} | {r['params']:,} | {r['wall_s']:.0f} s |")
  return "\n".join(lines)
