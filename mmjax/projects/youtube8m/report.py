"""Seed 001's analysis of the correlation tower and of cross-modal attention (Figs. 1, 8, 9;
Tables 1-3), written as PNGs (matplotlib, Agg) and a text report.

* Fig. 8 (`sweep_negative_weight`, `plot_weight_sweep`): the tower trained at several
  negative-class weights lambda (config.correlation.negative_weight); its error, FPR and FNR on
  the evaluation pairs against lambda.
* Fig. 9 (`tower_pairs`, `plot_positive_outputs`): the distribution of the tower's output
  p = sigmoid(logit) on positive (same-video) evaluation pairs.
* Tables 1-3 (`mistake_tables`): the tower's most confident mistakes in both directions:
  same-video pairs judged uncorrelated (lowest p) and cross-video pairs judged correlated
  (highest p), with the labels of both videos.
* Fig. 1 (`attention_maps`, `plot_attention`): for one evaluation video, the attention weights
  of both modalities over time in a cross-modal attention-RNN run: each stream's own attention
  alpha_m and the cross term F_other(alpha_other) added to it (mean over attention units).
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Dict, List, Mapping, Sequence

import flax
import jax
import matplotlib
import numpy as np

from mmjax.nn.crossmodal import STREAMS, AttentionClusters, AttentionTransform
from mmjax.projects.youtube8m.compare import (
  captioned_tables,
  class_names,
  first_eval_chunks,
  markdown_table,
  restore_and_read_videos,
)
from mmjax.projects.youtube8m.correlation import pair_batch
from mmjax.train.trainer import restore_for_eval, train_and_evaluate

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position


def sweep_negative_weight(tower_config, root: str, weights: Sequence[float],
                          log: Callable[[str], None] = print) -> Dict[float, Dict[str, float]]:
  """Trains the tower at each negative-class weight into <root>/weight_<w> (resumable); returns
  {weight: final eval metrics (accuracy, fpr, fnr, ...)}."""
  results = {}
  for weight in weights:
    config = copy.deepcopy(tower_config)
    with config.unlocked():
      config.correlation.negative_weight = float(weight)
    workdir = os.path.join(root, f"weight_{weight:g}")
    log(f"== correlation tower, negative-class weight {weight:g}: {workdir}")
    metrics = train_and_evaluate(config, workdir)
    results[float(weight)] = {k.split("/", 1)[1]: v for k, v in metrics.items()
                              if k.startswith("eval/")}
  return results


def plot_weight_sweep(results: Mapping[float, Mapping[str, float]], path: str) -> None:
  """Fig. 8: error (1 - accuracy), FPR and FNR in % against the negative-class weight."""
  weights = sorted(results)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for key, label in (("error", "error"), ("fpr", "FPR"), ("fnr", "FNR")):
    values = [100 * (1 - results[w]["accuracy"]) if key == "error" else 100 * results[w][key]
              for w in weights]
    ax.plot(weights, values, marker="o", label=label)
  ax.set_xlabel("negative-class weight λ")
  ax.set_ylabel("%")
  ax.set_title("Correlation tower against λ (Fig. 8)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def tower_pairs(config, workdir: str, num_videos: int) -> Dict[str, object]:
  """The tower of `workdir` (latest checkpoint) on the pairs of the first `num_videos` eval
  videos, paired chunk by chunk (config.eval_batch_size) as in evaluation
  (`CorrelationTask.partners`).

  Returns:
    'rgb_id', 'audio_id' (lists of str), 'correlated' [N] (1: same video), 'p' [N] (the tower's
    output), 'rgb_labels', 'audio_labels' (lists of class-index arrays) and 'taxonomy'.
  """
  task, chunks, ids, run = restore_and_read_videos(config, workdir, num_videos)
  out = {k: [] for k in ("rgb_id", "audio_id", "correlated", "p", "rgb_labels", "audio_labels")}
  size = config.eval_batch_size
  for number, chunk in enumerate(chunks):
    partner = task.partners(chunk)
    p, evaluated, _, _ = run(pair_batch(chunk, partner))
    chunk_ids = ids[number * size:(number + 1) * size]
    for i in np.flatnonzero(np.asarray(evaluated["weight"]) > 0):
      out["rgb_id"].append(chunk_ids[i])
      out["audio_id"].append(chunk_ids[partner[i]])
      out["correlated"].append(float(evaluated["correlated"][i]))
      out["p"].append(float(p[i]))
      out["rgb_labels"].append(np.flatnonzero(chunk["labels"][i]))
      out["audio_labels"].append(np.flatnonzero(chunk["labels"][partner[i]]))
  out["correlated"], out["p"] = np.asarray(out["correlated"]), np.asarray(out["p"])
  out["taxonomy"] = task.taxonomy
  return out


def plot_positive_outputs(p: np.ndarray, correlated: np.ndarray, path: str) -> None:
  """Fig. 9: histogram of the tower's output on positive pairs (negative pairs overlaid)."""
  fig, ax = plt.subplots(figsize=(5, 3.5))
  bins = np.linspace(0, 1, 21)
  ax.hist(p[correlated > 0], bins=bins, alpha=0.8, label=f"same video (n={int(correlated.sum())})")
  ax.hist(p[correlated == 0], bins=bins, alpha=0.5,
          label=f"different videos (n={int((correlated == 0).sum())})")
  ax.set_xlabel("tower output p (correlated)")
  ax.set_ylabel("pairs")
  ax.set_title("Correlation tower outputs (Fig. 9)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def mistake_tables(pairs: Mapping[str, object], num: int) -> str:
  """Tables 1-3: the `num` most confident mistakes each way, as markdown."""
  taxonomy = pairs["taxonomy"]
  p, y = pairs["p"], pairs["correlated"]

  def names(classes):
    return "; ".join(class_names(taxonomy, classes))

  def rows(indices):
    return [[pairs["rgb_id"][i], pairs["audio_id"][i], f"{p[i]:.3f}",
             names(pairs["rgb_labels"][i]), names(pairs["audio_labels"][i])] for i in indices]

  header = ["rgb of", "audio of", "p", "labels (rgb's video)", "labels (audio's video)"]
  positives, negatives = np.flatnonzero(y > 0), np.flatnonzero(y == 0)
  false_negatives = positives[np.argsort(p[positives], kind="stable")][:num]
  false_negatives = false_negatives[p[false_negatives] < 0.5]
  false_positives = negatives[np.argsort(-p[negatives], kind="stable")][:num]
  false_positives = false_positives[p[false_positives] >= 0.5]
  return captioned_tables(header, [
      (f"Same-video pairs judged uncorrelated (p < 0.5), most confident first: "
       f"{int((p[positives] < 0.5).sum())} of {len(positives)}.", rows(false_negatives)),
      (f"Cross-video pairs judged correlated (p >= 0.5), most confident first: "
       f"{int((p[negatives] >= 0.5).sum())} of {len(negatives)}.", rows(false_positives))])


def _find(tree: Mapping, name: str) -> np.ndarray:
  """The captured output of the submodule called `name` (any depth) in an intermediates tree."""
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items():
    if len(path) >= 2 and path[-2] == name and path[-1] == "__call__":
      return np.asarray(value[0])
  raise KeyError(f"no captured output of a module named {name!r}: is this a cross-modal "
                 "attention-RNN run (configs/ytb8m.py:attention_rnn_cmg or _cmc)?")


def attention_maps(config, workdir: str, video: int = 0) -> Dict[str, object]:
  """For eval video number `video` (file order) under the latest checkpoint of a cross-modal
  attention-RNN run: {'id', 'length', '<m>_attention' [T] (alpha_m, mean over units),
  '<m>_cross' [T] (F_other(alpha_other) before the gate, mean over units)} for m in rgb, audio."""
  if config.model.name != "attention_rnn" or config.model.fusion not in ("cmg", "cmc"):
    raise ValueError(f"{workdir}: Fig. 1 needs a cross-modal attention-RNN run (model.name "
                     f"'attention_rnn', fusion 'cmg' or 'cmc'), not {config.model.name!r} / "
                     f"{config.model.fusion!r}")
  task, state, _, _, _ = restore_for_eval(config, workdir)
  chunks, ids = first_eval_chunks(config, task, video + 1)
  row = video % config.eval_batch_size
  one = {k: v[row:row + 1] for k, v in chunks[-1].items()}
  variables = jax.tree.map(np.asarray, {"params": state.params, **state.model_state})
  _, captured = task.model.apply(
      variables, one, train=False, mutable=["intermediates"],
      capture_intermediates=lambda module, _: isinstance(module, (AttentionClusters,
                                                                  AttentionTransform)))
  length = int(one["mask"].sum())
  maps = {"id": ids[video], "length": length}
  for m, other in zip(STREAMS, reversed(STREAMS)):
    maps[f"{m}_attention"] = _find(captured, f"{m}_attention")[0, :length].mean(-1)
    maps[f"{m}_cross"] = _find(captured, f"F_{other}")[0, :length].mean(-1)
  return maps


def plot_attention(maps: Mapping[str, object], path: str) -> None:
  """Fig. 1: attention weights of the video and the audio stream over time for one video."""
  fig, axes = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
  frames = np.arange(maps["length"])
  for ax, m, title, symbol in zip(axes, STREAMS, ("video (rgb)", "audio"), ("α_v", "α_a")):
    ax.plot(frames, maps[f"{m}_attention"], label=f"own attention {symbol}")
    ax.plot(frames, maps[f"{m}_cross"], label="cross term F(α of the other stream)")
    ax.set_ylabel(title)
    ax.legend(fontsize=8)
  axes[-1].set_xlabel("frame (1 per second)")
  axes[0].set_title(f"Attention over time, video {maps['id']} (Fig. 1)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def weight_sweep_table(results: Mapping[float, Mapping[str, float]]) -> str:
  rows = [[f"{w:g}", f"{100 * (1 - r['accuracy']):.1f}", f"{100 * r['fpr']:.1f}",
           f"{100 * r['fnr']:.1f}"] for w, r in sorted(results.items())]
  return markdown_table(["negative-class weight", "error %", "FPR %", "FNR %"], rows)


def write_report(root: str, sweep: Mapping[float, Mapping[str, float]],
                 pairs: Mapping[str, object], maps: Mapping[str, object] | None,
                 num_mistakes: int, header: str) -> List[str]:
  """Writes fig8_negative_weight.png, fig9_positive_outputs.png, fig1_attention.png (when
  `maps`) and report.md under `root`; returns the paths written."""
  os.makedirs(root, exist_ok=True)
  paths = [os.path.join(root, "fig8_negative_weight.png"),
           os.path.join(root, "fig9_positive_outputs.png")]
  plot_weight_sweep(sweep, paths[0])
  plot_positive_outputs(pairs["p"], pairs["correlated"], paths[1])
  if maps is not None:
    paths.append(os.path.join(root, "fig1_attention.png"))
    plot_attention(maps, paths[-1])
  text = "\n\n".join([header, "Fig. 8: the tower at each negative-class weight (final evaluation).",
                      weight_sweep_table(sweep), "Tables 1-3: the tower's most confident mistakes.",
                      mistake_tables(pairs, num_mistakes)])
  paths.append(os.path.join(root, "report.md"))
  with open(paths[-1], "w", encoding="utf-8") as f:
    f.write(text + "\n")
  return paths
