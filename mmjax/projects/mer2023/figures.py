"""Seed 004's Figures 2-4 from the Table 1 results (mmjax.projects.mer2023.table1).

  figure2.png  row-normalized test confusion matrices, EnF next to the attention baseline;
  figure3.png  validation Com and parameter count per PNAO round (EnF + PNAO, else PNAO);
  figure4.png  the distribution of the hidden layers' weight values (the kernels PNAO prunes,
               config.pnao.prunable) after each round: one histogram line per round.
Needs matplotlib (pip install "mmjax[report]"). A figure whose rows are missing is skipped.
"""

from __future__ import annotations

import os
import re
from typing import Dict

import jax
import numpy as np

from mmjax.parallel import path_to_str
from mmjax.train import multirun

__all__ = ["pruned_weights", "write_all"]


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def confusion_figure(results: Dict[str, dict], path: str) -> None:
  """Figure 2: the test confusion matrices of 'enf' and 'baseline', rows normalized."""
  plt = _pyplot()
  rows = [r for r in ("enf", "baseline") if r in results]
  fig, axes = plt.subplots(1, len(rows), figsize=(4.6 * len(rows), 4.2), squeeze=False)
  for ax, row in zip(axes[0], rows):
    matrix = np.asarray(results[row]["test_confusion"], np.float64)
    normalized = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    names = results[row]["class_names"]
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
      for j in range(len(names)):
        ax.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if normalized[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title({"enf": "(a) entropy-based fusion", "baseline": "(b) attention-based fusion"}[row])
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def pruned_weights(workdir: str, prunable: str) -> np.ndarray:
  """Every value of the kernels matching `prunable` in the final params of `workdir`."""
  pattern = re.compile(prunable)
  leaves = jax.tree_util.tree_leaves_with_path(multirun.final_state(workdir))
  values = [np.ravel(leaf) for path, leaf in leaves if pattern.fullmatch(path_to_str(path))]
  return np.concatenate(values) if values else np.zeros(0)


def weights_figure(rounds_root: str, num_rounds: int, prunable: str, path: str) -> None:
  """Figure 4: a histogram line of the weight values of the kernels matching `prunable` (the
  ones PNAO prunes) after each round."""
  plt = _pyplot()
  values = [pruned_weights(os.path.join(rounds_root, f"round_{r}"), prunable)
            for r in range(num_rounds)]
  limit = max(float(np.abs(v).max()) for v in values if v.size) or 1.0
  bins = np.linspace(-limit, limit, 81)
  fig, ax = plt.subplots(figsize=(5.2, 3.4))
  colors = plt.cm.viridis(np.linspace(0, 1, num_rounds))
  for r, (v, color) in enumerate(zip(values, colors)):
    counts, _ = np.histogram(v, bins=bins)
    ax.step(bins[:-1], counts, where="post", color=color, label=f"round {r} ({v.size:,})")
  ax.set_yscale("log")
  ax.set_xlabel("weight value (hidden layers)")
  ax.set_ylabel("count")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_all(results: Dict[str, dict], root: str) -> None:
  """Writes the figures that `results` has rows for into `root` (module docstring)."""
  if "enf" in results or "baseline" in results:
    confusion_figure(results, os.path.join(root, "figure2.png"))
  row = next((r for r in ("enf_pnao", "pnao") if r in results), None)
  if row is not None:
    records = results[row]["rounds"]
    multirun.plot_rounds(records, "eval/com", os.path.join(root, "figure3.png"))
    weights_figure(os.path.join(root, row), len(records), results[row]["prunable"],
                   os.path.join(root, "figure4.png"))
