"""Gradient blending (Wang, Tran and Feiszli, CVPR 2020; used by seed 000): per-head loss
weights from each head's overfitting-to-generalization ratio.

A multi-head model gives logits per head k (e.g. 'image', 'audio', 'fused'); the training loss
is sum_k w_k CE_k (`mmjax.losses.blended_loss`); predictions come from the fused head only.
The weights are estimated from train (T) and held-out (V) losses of every head at the start
(step N) and end (step N + n) of a "super-epoch":

  dG_k = L^V_N - L^V_{N+n}                                    (generalization gained)
  dO_k = (L^V_{N+n} - L^T_{N+n}) - (L^V_N - L^T_N)            (overfitting gained)
  w_k  = max(dG_k, 0) / max(dO_k^2, eps),   normalized to sum 1.

Safe behaviour (never a NaN weight): when no head's held-out loss improved (every dG_k <= 0)
the raw weights are all 0 and cannot be normalized; `estimate_weights` then returns the
fallback (the previous weights, or uniform) with `reason` saying why. A non-finite input loss
raises ValueError naming the head and the measurement.

Two ways to get the weights, chosen by config:
  offline: estimated once from short runs (mmjax.train.multirun.offline_gblend), written to a
    JSON file (`write_weights_file`) that config.loss.gblend.weights_file names;
  online: `OnlineGBlend` re-estimates them after every evaluation (a super-epoch = the steps
    between two evaluations, config.eval_every_steps) from two eval splits of the training
    file, one over the rows training reads and one over a held-out slice it never reads
    (mmjax.data.modality_arrays data.subset / data.holdout_fraction); the weights and the
    previous evaluation's losses live in the train state's task state, so a restart keeps them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["GBlendEstimate", "OnlineGBlend", "estimate_weights", "read_weights_file",
           "write_weights_file"]

EPS = 1e-4  # floor of dO^2: a head that does not overfit at all gets a large, finite weight


@dataclasses.dataclass(frozen=True)
class GBlendEstimate:
  """weights [K] (sum 1), raw [K] (before normalization; 0 where dG <= 0), generalization dG
  [K], overfitting dO [K]; reason: '' when estimated, else why the fallback was kept."""
  weights: np.ndarray
  raw: np.ndarray
  generalization: np.ndarray
  overfitting: np.ndarray
  reason: str = ""


def _losses(values, heads: Sequence[str], what: str) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.shape != (len(heads),):
    raise ValueError(f"G-Blend: {what} must have one loss per head {list(heads)}, got shape "
                     f"{values.shape}")
  bad = [h for h, v in zip(heads, values) if not math.isfinite(v)]
  if bad:
    raise ValueError(f"G-Blend: {what} of head(s) {bad} is not finite ({values.tolist()}); "
                     "cannot estimate blending weights")
  return values


def estimate_weights(heads: Sequence[str], train_start, holdout_start, train_end, holdout_end,
                     fallback: Optional[Sequence[float]] = None, eps: float = EPS
                     ) -> GBlendEstimate:
  """The G-Blend weights (module docstring) from per-head losses, each [K] in `heads` order.

  Args:
    heads: the K head names (for messages).
    train_start, holdout_start: L^T_N, L^V_N; train_end, holdout_end: L^T_{N+n}, L^V_{N+n}.
    fallback: [K] weights kept when no head generalized better (default uniform).
    eps: floor of dO_k^2.
  """
  heads = tuple(heads)
  t0 = _losses(train_start, heads, "train loss at the start")
  v0 = _losses(holdout_start, heads, "held-out loss at the start")
  t1 = _losses(train_end, heads, "train loss at the end")
  v1 = _losses(holdout_end, heads, "held-out loss at the end")
  generalization = v0 - v1
  overfitting = (v1 - t1) - (v0 - t0)
  raw = np.maximum(generalization, 0.0) / np.maximum(overfitting ** 2, eps)
  total = raw.sum()
  if not total > 0 or not math.isfinite(total):
    kept = (np.full(len(heads), 1.0 / len(heads)) if fallback is None
            else np.asarray(fallback, np.float64))
    return GBlendEstimate(kept, raw, generalization, overfitting,
                          reason="no head's held-out loss improved over the super-epoch "
                                 f"(dG = {np.round(generalization, 6).tolist()}); weights kept")
  return GBlendEstimate(raw / total, raw, generalization, overfitting)


def write_weights_file(path: str, heads: Sequence[str], estimate: GBlendEstimate,
                       **provenance) -> None:
  """Writes {'weights': {head: w}, 'generalization', 'overfitting', 'reason', ...provenance}
  as JSON (through a temporary file and a rename)."""
  record = {"weights": dict(zip(heads, map(float, estimate.weights))),
            "generalization": dict(zip(heads, map(float, estimate.generalization))),
            "overfitting": dict(zip(heads, map(float, estimate.overfitting))),
            "reason": estimate.reason, **provenance}
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, path)


def read_weights_file(path: str, heads: Sequence[str]) -> np.ndarray:
  """The weights [K] of `heads` from a `write_weights_file` JSON; errors name the file and the
  config key config.loss.gblend.weights_file."""
  try:
    with open(os.path.expanduser(path)) as f:
      weights = json.load(f)["weights"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"config.loss.gblend.weights_file={path!r}: cannot read G-Blend weights "
                     f"({e})") from e
  missing = [h for h in heads if h not in weights]
  if missing:
    raise ValueError(f"config.loss.gblend.weights_file={path!r} has no weight for head(s) "
                     f"{missing} (it has {sorted(weights)})")
  values = np.array([weights[h] for h in heads], np.float64)
  if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
    raise ValueError(f"config.loss.gblend.weights_file={path!r}: weights {values.tolist()} "
                     "must be finite, >= 0 and not all 0")
  return (values / values.sum()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OnlineGBlend:
  """Online G-Blend through the Task hooks (module docstring).

  heads: the K heads, in the order of the weight vector. train_split / holdout_split: names of
  the config.evals splits whose evaluator reports 'loss_<head>' per head (train rows, held-out
  rows). Task state: {'weights': float32 [K], 'reference': float32 [2, K] (train, held-out
  losses at the super-epoch's start), 'has_reference': bool []}.
  """
  heads: tuple
  train_split: str = "gblend_train"
  holdout_split: str = "gblend_holdout"

  def init_state(self, weights) -> dict:
    """The task state before the first evaluation: the given starting weights [K]."""
    k = len(self.heads)
    return {"weights": np.asarray(weights, np.float32).reshape(k),
            "reference": np.zeros((2, k), np.float32), "has_reference": np.array(False)}

  def measured(self, metrics: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """[2, K] (train, held-out) per-head losses of this evaluation; KeyError naming the split
    and metric when an eval split is missing."""
    rows = []
    for split in (self.train_split, self.holdout_split):
      if split not in metrics:
        raise KeyError(f"online G-Blend needs the eval split config.evals.{split} (have "
                       f"{sorted(metrics)})")
      rows.append([metrics[split][f"loss_{h}"] for h in self.heads])
    return np.array(rows, np.float64)

  def update(self, state: Mapping[str, np.ndarray],
             metrics: Mapping[str, Mapping[str, float]]) -> tuple[dict, GBlendEstimate | None]:
    """(new task state, the estimate or None at the first evaluation): the weights from the
    previous evaluation's losses to this one's; this evaluation becomes the new reference."""
    now = self.measured(metrics)
    estimate = None
    weights = np.asarray(state["weights"], np.float64)
    if bool(state["has_reference"]):
      ref = np.asarray(state["reference"], np.float64)
      estimate = estimate_weights(self.heads, ref[0], ref[1], now[0], now[1], fallback=weights)
      weights = estimate.weights
    return ({"weights": weights.astype(np.float32), "reference": now.astype(np.float32),
             "has_reference": np.array(True)}, estimate)
