"""Seed 002's Tables 1-3 and Figure 2 from trained cells (launch/cremad.py).

Each cell '<encoder>_<modality>' trains as `configs/cremad.py:<cell>[,variants]` in
`<root>/<cell>` (a finished run is not trained again). Its row: the last evaluation's mean
cross-entropy and accuracy on the training split ('train_split') and the test split ('eval').
A multimodal cell is also evaluated with one half of its input blanked (eval splits
'ablated_vision', 'ablated_audio'): Table 1 lists 'Ablated <encoder>' = the multimodal model
with the vision half blanked (audio only), Table 2 the one with the audio half blanked, as the
paper does for I3D. Each row also says how its cell was trained (`setup`, read from the cell's
config snapshot: input size, frames, batch, learning rate, steps), so cells trained with different
budgets can share one table. The tables hold every finished cell under the root, so invocations
with different --set or --steps for different cells add up. Each table is printed next to the
paper's numbers and the human accuracy of its modality; Figure 2 is the test accuracies as bars,
one panel per modality, with the human accuracy as a line.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Sequence

from mmjax.config_files import load_checkout_config
from mmjax.projects.cremad import cells
from mmjax.train import multirun, snapshot

__all__ = ["ABLATION_SPLITS", "cell_config", "collect", "collect_finished", "format_tables",
           "plot_figure2", "run_cells", "setup", "write_outputs"]

log = logging.getLogger("mmjax")

# Eval split -> the modality that remains (the Table it belongs to).
ABLATION_SPLITS = {"ablated_vision": "audio", "ablated_audio": "vision"}
_TITLES = {"audio": "Table 1: unimodal audio", "vision": "Table 2: unimodal vision",
           "multimodal": "Table 3: multimodal"}


def cell_config(cell: str, variants: Sequence[str] = (), overrides: Optional[dict] = None):
  """configs/cremad.py:<cell>[,variants] with dotted-key `overrides`; a multimodal cell gets
  the ablation eval splits."""
  _, modality = cells.split_cell(cell)
  config = load_checkout_config("cremad", ",".join([cell, *variants]))
  if modality == "multimodal":
    with config.unlocked():
      for split in ABLATION_SPLITS:
        config.evals[split] = {"data": {"ablate": split.removeprefix("ablated_")}}
  return multirun.with_values(config, **(overrides or {}))


def _last(workdir: str, split: str) -> Optional[tuple]:
  records = multirun.evaluations(workdir, split)
  if not records:
    return None
  last = records[-1]
  return last["loss_emotion"], last["accuracy"]


def setup(config) -> str:
  """How a cell was trained, from its config (the run's snapshot), e.g. '64 px,
  60 frames, batch 16, lr 0.001, 200 steps' (frames for 3D encoders only)."""
  data = config["data"]
  parts = [f"{data['image_size']} px"]
  if data["family"] == "3d":
    frames = data["num_frames"] if data["layout"] == "videomae" else data["max_frames"]
    parts.append(f"{frames} frames")
  if config["model"]["size"] != "paper":
    parts.append(f"{config['model']['size']} model")
  parts += [f"batch {config['batch_size']}", f"lr {config['optimizer']['learning_rate']:g}",
            f"{config['total_steps']} steps"]
  return ", ".join(parts)


def collect(workdir: str, cell: str) -> dict:
  """{'train': (loss, accuracy), 'test': (...), ['ablated_vision': ..., 'ablated_audio': ...],
  'step': int, 'setup': str} of a finished cell's last evaluation."""
  _, modality = cells.split_cell(cell)
  result = {"train": _last(workdir, "train_split"), "test": _last(workdir, "eval"),
            "step": multirun.evaluations(workdir, "eval")[-1]["step"],
            "setup": setup(snapshot.read(workdir))}
  if modality == "multimodal":
    result.update({split: _last(workdir, split) for split in ABLATION_SPLITS})
  return result


def collect_finished(root: str, log_fn: Callable[[str], None] = log.info) -> Dict[str, dict]:
  """{cell: collect(...)} of every cell directory under `root` whose last test evaluation is
  at its total_steps (a cell still training is left out, and said so)."""
  results = {}
  for cell in cells.CELLS:
    workdir = os.path.join(root, cell)
    if not (os.path.isfile(snapshot.path(workdir))
            and os.path.isfile(os.path.join(workdir, "metrics.jsonl"))):
      continue
    config = snapshot.read(workdir)
    records = multirun.evaluations(workdir, "eval")
    if not records or records[-1]["step"] != config["total_steps"]:
      log_fn(f"{workdir}: not finished (no test evaluation at step {config['total_steps']}); "
             "left out of the tables")
      continue
    results[cell] = collect(workdir, cell)
  return results


def run_cells(root: str, cell_names: Sequence[str], *, variants: Sequence[str] = (),
              overrides: Optional[dict] = None,
              log_fn: Callable[[str], None] = log.info) -> Dict[str, dict]:
  """Trains (or finds finished) every cell of `cell_names` under `root`; returns
  collect_finished(root) (these cells and any trained there earlier) and writes it to
  <root>/results.json."""
  for k, cell in enumerate(cell_names):
    log_fn(f"cell {k + 1}/{len(cell_names)}: {cell}")
    multirun.train_unless_finished(cell_config(cell, variants, overrides),
                                   os.path.join(root, cell))
  results = collect_finished(root, log_fn)
  multirun.write_json(os.path.join(root, "results.json"), results)
  return results


def _number(value, digits: int = 4) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def _rows(results: Dict[str, dict], modality: str):
  """(name, ours (train loss, train acc, test loss, test acc), paper's, setup) per encoder."""
  paper = cells.PAPER_RESULTS[modality]
  for encoder in cells.ENCODERS:
    cell = f"{encoder}_{modality}"
    if cell in results:
      train, test = results[cell]["train"] or (None, None), results[cell]["test"]
      yield encoder, (*train, *test), paper.get(encoder), results[cell].get("setup", "")
  for split, remaining in ABLATION_SPLITS.items():
    if remaining != modality:
      continue
    for encoder in cells.ENCODERS:
      multimodal = results.get(f"{encoder}_multimodal", {})
      if multimodal.get(split):
        yield (f"ablated {encoder}", (None, None, *multimodal[split]),
               paper.get(f"ablated_{encoder}"), multimodal.get("setup", ""))


def format_tables(results: Dict[str, dict], hardware: str = "") -> str:
  """Markdown Tables 1-3: ours next to the paper's, and the human accuracy of the modality."""
  lines = []
  for modality in cells.MODALITIES:
    rows = list(_rows(results, modality))
    if not rows:
      continue
    lines += [f"### {_TITLES[modality]} (human accuracy {cells.HUMAN_ACCURACY[modality]:.3f})",
              "", "| encoder | train loss | train acc | test loss | test acc | paper: train "
              "loss / acc, test loss / acc | setup |", "|---|---|---|---|---|---|---|"]
    for name, ours, paper, how in rows:
      theirs = " / ".join(_number(v) for v in paper) if paper else "-"
      lines.append(f"| {name} | " + " | ".join(_number(v) for v in ours)
                   + f" | {theirs} | {how or '-'} |")
    lines.append("")
  if hardware:
    lines.append(f"Measured on {hardware}.")
  return "\n".join(lines)


def plot_figure2(results: Dict[str, dict], path: str) -> None:
  """Figure 2: test accuracy per encoder, one panel per modality, human accuracy as a line."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figure, axes = plt.subplots(1, len(cells.MODALITIES), figsize=(16, 5), sharey=True)
  for axis, modality in zip(axes, cells.MODALITIES):
    rows = list(_rows(results, modality))
    axis.bar([row[0] for row in rows], [row[1][3] for row in rows], color="tab:blue",
             label="test accuracy")
    axis.axhline(cells.HUMAN_ACCURACY[modality], color="tab:red", linestyle="--",
                 label="human")
    axis.set_title(_TITLES[modality].split(": ")[1])
    axis.set_ylim(0, 1)
    plt.setp(axis.get_xticklabels(), rotation=45, horizontalalignment="right")
  axes[0].set_ylabel("test accuracy")
  axes[0].legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_outputs(root: str, results: Dict[str, dict], hardware: str = "") -> str:
  """<root>/tables.md and <root>/figure2.png; returns the tables' text."""
  text = format_tables(results, hardware)
  with open(os.path.join(root, "tables.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  plot_figure2(results, os.path.join(root, "figure2.png"))
  return text
