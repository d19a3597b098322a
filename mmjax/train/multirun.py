"""Protocols made of several ordinary training runs: offline gradient-blending weights,
self-training with pseudo-labels, k-fold cross-validation, and PNAO's prune-and-retrain rounds.

Every run is `train_and_evaluate(config, <root>/<name>)` with its own workdir, so a killed
protocol started again with the same arguments resumes: a finished run is only evaluated again,
an interrupted one resumes from its checkpoint, and the files a round or fold derives (its data,
its predictions) are written atomically before they are used and reused when present.

The data protocols work on tasks that read mmjax.data.modality_arrays (config.data.directory
of `<split>.npz` files, data.train_split / data.eval_split); the G-Blend one on tasks with the
conventions of mmjax/projects/avdigits (config.loss.head_weights, config.loss.gblend, eval
splits whose evaluator reports 'loss_<head>').
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from mmjax import parallel
from mmjax.data import cache, modality_arrays
from mmjax.tasks import EvalSplit
from mmjax.train.checkpoint import CheckpointReader
from mmjax.train.steps import make_eval_step
from mmjax.train.trainer import restore_for_eval, train_and_evaluate
from mmjax.transforms import gblend

log = logging.getLogger("mmjax")

__all__ = ["evaluations", "final_state", "k_fold", "offline_gblend", "plot_rounds", "pnao",
           "predict", "read_json", "schedule", "self_training", "train_unless_finished",
           "with_values", "write_json"]


def with_values(config, **values):
  """A deep copy of `config` with dotted keys set, e.g. with_values(c, **{'data.directory': d})."""
  config = copy.deepcopy(config)
  with config.unlocked():
    for dotted, value in values.items():
      node = config
      *parents, leaf = dotted.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return config


def schedule(steps: int) -> dict:
  """Config overrides that train `steps` steps, evaluating and checkpointing 3 times (none for
  steps <= 0: the config's own schedule)."""
  if steps <= 0:
    return {}
  every = max(1, steps // 3)
  return {"total_steps": steps, "eval_every_steps": every, "checkpoint_every_steps": every}


def train_unless_finished(config, workdir: str) -> None:
  """train_and_evaluate, skipped for a run that finished (its last checkpoint is total_steps
  and its metrics are written): a restarted protocol does not evaluate it again."""
  last = os.path.join(workdir, "checkpoints", str(config.total_steps), "commit_success.txt")
  if os.path.isfile(last) and os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
    log.info("%s: finished earlier (step %d)", workdir, config.total_steps)
    return
  train_and_evaluate(config, workdir)


def evaluations(workdir: str, split: str) -> List[dict]:
  """The metrics.jsonl records of eval split `split`, in step order (the last one per step)."""
  by_step = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if record.get("split") == split:
        by_step[record["step"]] = record
  return [by_step[s] for s in sorted(by_step)]


def predict(config, workdir: str, split: str, head: Optional[str] = None,
            checkpoint="latest", missing_modalities: Sequence[str] = ()) -> tuple:
  """(probabilities [N, C], labels [N]) of every row of data split `split` (file order) under
  checkpoint `checkpoint` ('latest', 'best' or a step) of `workdir`; `head` picks one entry of
  dict predictions; `missing_modalities` are blanked (data.missing_modalities)."""
  task, state, shardings, mesh, _ = restore_for_eval(config, workdir, checkpoint)
  eval_step = make_eval_step(task, mesh, shardings)
  overrides = {k: v for k, v in (("eval_split", split), ("eval_subset", "all"),
                                  ("missing_modalities", tuple(missing_modalities)),
                                  ("eval_max_examples", 0))
               if k in task.data_config}
  dataset = task.eval_dataset(config.eval_batch_size // jax.process_count(),
                              jax.process_index(), jax.process_count(),
                              split=EvalSplit("predict", overrides))
  probs, labels = [], []
  for local in dataset:
    predictions, batch, _, _ = eval_step(state, parallel.global_batch(local, mesh))
    if head is not None:
      predictions = predictions[head]
    real = np.asarray(batch["weight"]) > 0
    probs.append(np.asarray(predictions)[real])
    labels.append(np.asarray(batch["label"])[real])
  return np.concatenate(probs), np.concatenate(labels)


def _link_splits(source: str, target: str, names: Sequence[str]) -> None:
  """Symbolic links target/<name>.npz -> source/<name>.npz (kept when present)."""
  for name in names:
    link = os.path.join(target, f"{name}.npz")
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(os.path.join(source, f"{name}.npz")), link)


def _source_directory(config) -> str:
  """config.data.directory, resolved by the task (a default dataset is built once)."""
  from mmjax.tasks import get_task  # pylint: disable=import-outside-toplevel
  task = get_task(config)
  task.prepare(log.info)
  return task.data_config.directory


def _subset(split: modality_arrays.ModalityArrays, rows, labels=None) -> dict:
  rows = np.asarray(rows, np.int64)
  return {"labels": split.labels[rows] if labels is None else np.asarray(labels, np.int64),
          "ids": split.ids[rows], "fields": {k: v[rows] for k, v in split.fields.items()}}


# -------------------------------------------------------------------------------------------
# Offline gradient blending.


def offline_gblend(config, root: str, heads: Sequence[str], *, steps: int,
                   evaluations_per_run: int = 2) -> str:
  """Estimates G-Blend weights once (mmjax.transforms.gblend) and writes
  <root>/gblend_weights.json, the file config.loss.gblend.weights_file then names.

  For every head k a short run (`steps` steps, evaluated `evaluations_per_run` times) trains
  that head alone (config.loss.head_weights = {k: 1}) on the training rows of a held-out split
  (config.loss.gblend.{train_split, holdout_split} must be eval splits of `config`); its first
  and last evaluations give head k's L^T_N, L^V_N and L^T_{N+n}, L^V_{N+n}.
  Returns the file's path.
  """
  if evaluations_per_run < 2:
    raise ValueError("offline G-Blend needs at least 2 evaluations per run")
  train_split, holdout_split = config.loss.gblend.train_split, config.loss.gblend.holdout_split
  missing = [s for s in (train_split, holdout_split) if s not in (config.get("evals") or {})]
  if missing:
    raise ValueError(f"offline G-Blend: config.evals has no split(s) {missing} (named by "
                     "config.loss.gblend.train_split / holdout_split; configs/avdigits.py:gblend "
                     "defines them)")
  measured = np.zeros((4, len(heads)))
  for i, head in enumerate(heads):
    workdir = os.path.join(root, f"gblend_{head}")
    run_config = with_values(
        config, **{"loss.gblend.mode": "off", "loss.head_weights": {head: 1.0},
                   "total_steps": steps, "eval_every_steps": max(1, steps // evaluations_per_run),
                   "checkpoint_every_steps": max(1, steps // evaluations_per_run)})
    train_and_evaluate(run_config, workdir)
    train, held = evaluations(workdir, train_split), evaluations(workdir, holdout_split)
    key = f"loss_{head}"
    measured[:, i] = (train[0][key], held[0][key], train[-1][key], held[-1][key])
  estimate = gblend.estimate_weights(heads, *measured)
  path = os.path.join(root, "gblend_weights.json")
  gblend.write_weights_file(path, heads, estimate, steps=steps,
                            losses={"train_start": measured[0].tolist(),
                                    "holdout_start": measured[1].tolist(),
                                    "train_end": measured[2].tolist(),
                                    "holdout_end": measured[3].tolist()})
  log.info("offline G-Blend weights %s -> %s", dict(zip(heads, estimate.weights.round(4))), path)
  return path


# -------------------------------------------------------------------------------------------
# Self-training (seed 003).


def pseudo_label(probs: np.ndarray, available: np.ndarray, top_k: int) -> Dict[int, int]:
  """{pool row: class} of the top_k most confident rows predicted as each class, among the rows
  where `available` [N] is True. probs [N, C]."""
  predicted, confidence = probs.argmax(1), probs.max(1)
  chosen = {}
  for c in range(probs.shape[1]):
    rows = np.flatnonzero(available & (predicted == c))
    for row in rows[np.argsort(-confidence[rows], kind="stable")[:top_k]]:
      chosen[int(row)] = c
  return chosen


def self_training(config, root: str, *, rounds: int = 10, top_k: int = 10,
                  labelled_fraction: float = 0.1, seed: int = 0,
                  eval_split: str = "test", pool_split: str = "") -> List[dict]:
  """Self-training with pseudo-labels (seed 003, section 3.5): train on the labelled rows,
  pseudo-label the unlabelled ones, add the `top_k` most confident per class, retrain (from
  scratch), for up to `rounds` rounds after the first; stops early when nothing is added.

  The unlabelled pool is either
    pool_split given (MER2024's setting): every row of the training split is labelled and the
      pool is the split file <source>/<pool_split>.npz (its labels are not read; the pseudo-
      labels' accuracy is unknown and reported as None);
    pool_split '' (a simulation on labelled data): the training split is cut once (stratified,
      seeded) into a labelled `labelled_fraction` and a pool whose labels are hidden:
      <root>/pool/unlabelled.npz holds the pool with label 0 everywhere; the true labels go to
      pool/truth.npz, read only to report how many pseudo-labels are right.
  A pool row never gets two pseudo-labels: rows labelled in an earlier round are not
  candidates again; a name both in the training split and the pool is refused. A 'labelled'
  field (MER data) is set to 1 on pseudo-labelled rows. Round r trains in <root>/round_<r> on
  round_<r>/data/train.npz (labelled + pseudo-labelled rows; validation, test and the pool
  linked from the source).

  Returns one record per round: round, train_rows, added, pseudo_accuracy (of all pseudo-labels
  so far, None when unknown), and the round's final metrics on `eval_split` (accuracy,
  weighted_f1, ...).
  """
  source = _source_directory(config)
  train = modality_arrays.load_split(os.path.join(source, f"{config.data.train_split}.npz"))
  if pool_split:
    labelled, truth, pool_dir = np.arange(len(train)), None, source
    pool_size = len(modality_arrays.load_split(os.path.join(source, f"{pool_split}.npz")))
    _check_pool_names(train, os.path.join(source, f"{pool_split}.npz"))
  else:
    pool_dir, pool_split = os.path.join(root, "pool"), "unlabelled"
    labelled, unlabelled = _labelled_cut(train.labels, labelled_fraction, seed)
    truth = _write_pool(train, unlabelled, pool_dir)
    pool_size = len(unlabelled)
  pool = modality_arrays.load_split(os.path.join(pool_dir, f"{pool_split}.npz"))
  pseudo: Dict[int, int] = {}
  records = []
  for r in range(rounds + 1):
    workdir = os.path.join(root, f"round_{r}")
    data_dir = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(data_dir, "train.npz")):
      os.makedirs(data_dir, exist_ok=True)
      rows = sorted(pseudo)
      parts = [_subset(train, labelled), _pseudo_labelled(pool, rows, pseudo)]
      modality_arrays.write_split(os.path.join(data_dir, "train.npz"), **_concat(parts))
      _link_splits(source, data_dir, [s for s in ("validation", "test") if
                                      os.path.exists(os.path.join(source, f"{s}.npz"))])
      _link_splits(pool_dir, data_dir, [pool_split])
    run_config = with_values(config, **{"data.directory": data_dir})
    metrics = train_and_evaluate(run_config, workdir)
    right = None if truth is None else sum(truth[i] == c for i, c in pseudo.items())
    record = {"round": r, "train_rows": len(labelled) + len(pseudo), "pseudo_labels": len(pseudo),
              "pseudo_accuracy": right / len(pseudo) if pseudo and right is not None else None,
              "data": data_dir,
              **{k.split("/", 1)[1]: v for k, v in metrics.items()
                 if k.startswith(eval_split + "/")}}
    if r == rounds:
      records.append({**record, "added": 0})
      break
    added = _added_in_round(run_config, workdir, pool_split, pool_size, pseudo, top_k)
    records.append({**record, "added": len(added)})
    log.info("self-training round %d: %d train rows, %s accuracy %.4f, %d pseudo-labels added",
             r, record["train_rows"], eval_split, record.get("accuracy", float("nan")),
             len(added))
    if not added:
      break
    pseudo.update(added)
  return records


def _check_pool_names(train: modality_arrays.ModalityArrays, pool_file: str) -> None:
  """A sample in both the labelled training split and the pool would be added twice."""
  pool = modality_arrays.load_split(pool_file)
  both = sorted(set(train.ids.tolist()) & set(pool.ids.tolist()))
  if both:
    raise ValueError(f"self-training: {len(both)} sample(s) are both labelled ({train.path}) and "
                     f"in the unlabelled pool ({pool_file}), e.g. {both[:3]}: a pseudo-label "
                     "would add them twice; remove them from the unlabelled list")


def _write_pool(train: modality_arrays.ModalityArrays, unlabelled: np.ndarray,
                pool_dir: str) -> np.ndarray:
  """Writes the simulated pool (labels hidden) once; returns its true labels."""
  os.makedirs(pool_dir, exist_ok=True)
  pool_file = os.path.join(pool_dir, "unlabelled.npz")
  if not os.path.exists(pool_file):
    np.savez(os.path.join(pool_dir, "truth.npz"), label=train.labels[unlabelled])
    modality_arrays.write_split(pool_file, **_subset(train, unlabelled,
                                                     np.zeros(len(unlabelled))))
  return np.load(os.path.join(pool_dir, "truth.npz"))["label"]


def _pseudo_labelled(pool: modality_arrays.ModalityArrays, rows: Sequence[int],
                     pseudo: Dict[int, int]) -> dict:
  """The pool rows with their pseudo-labels; a 'labelled' field (MER data, where the loss reads
  it) is set to 1 on them."""
  part = _subset(pool, rows, [pseudo[i] for i in rows])
  if "labelled" in part["fields"]:
    part["fields"]["labelled"] = np.ones(len(rows), part["fields"]["labelled"].dtype)
  return part


def _concat(parts: Sequence[dict]) -> dict:
  """One split's write_split arguments from several `_subset`s (same fields)."""
  return {"labels": np.concatenate([p["labels"] for p in parts]).astype(np.int64),
          "ids": np.concatenate([p["ids"] for p in parts]),
          "fields": {k: np.concatenate([p["fields"][k] for p in parts])
                     for k in parts[0]["fields"]}}


def _added_in_round(config, workdir: str, pool_split: str, pool_size: int,
                    pseudo: Dict[int, int], top_k: int) -> Dict[int, int]:
  """The pseudo-labels round `workdir` adds ({pool row: class}), from its cached added.json or
  by predicting the pool (then cached atomically, so a resumed run adds the same rows)."""
  path = os.path.join(workdir, "added.json")
  if os.path.exists(path):
    with open(path) as f:
      return {int(k): int(v) for k, v in json.load(f).items()}
  probs, _ = predict(config, workdir, pool_split, head=_main_head(config))
  available = np.ones(pool_size, bool)
  available[list(pseudo)] = False
  added = pseudo_label(probs, available, top_k)
  write_json(path, {str(k): v for k, v in added.items()})
  return added


def _labelled_cut(labels: np.ndarray, fraction: float, seed: int) -> tuple:
  """(labelled rows, unlabelled rows), stratified: round(fraction * n_c) of every class c (at
  least 1)."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"labelled_fraction must be in (0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  keep = [rng.permutation(np.flatnonzero(labels == c))[:max(1, int(round(fraction * n)))]
          for c, n in enumerate(np.bincount(labels)) if n]
  labelled = np.sort(np.concatenate(keep))
  return labelled, np.setdiff1d(np.arange(len(labels)), labelled)


def _main_head(config) -> Optional[str]:
  """The entry of dict predictions that counts: config.loss.main_head when set (e.g. 'emotion'
  of the MER fusion task), 'fused' for the avdigits kind (config.loss.head_weights), else None
  (array predictions)."""
  if "loss" not in config:
    return None
  if config.loss.get("main_head"):
    return config.loss.main_head
  return "fused" if "head_weights" in config.loss else None


# -------------------------------------------------------------------------------------------
# k-fold cross-validation (the MER protocol).


def k_fold(config, root: str, *, folds: int = 5, seed: int = 0, test_split: str = "test",
           on_fold: Optional[Callable[[int, str], None]] = None) -> dict:
  """Trains one model per fold of the training split (fold f validates, the others train) and
  averages the test probabilities over the folds (MERTools' protocol).

  Fold f lives in <root>/fold_<f> (data/train.npz, data/validation.npz = fold f, the test split
  linked); its test probabilities are cached in fold_<f>/test_probs.npz. Folds are a seeded
  permutation of the rows dealt round-robin; a fold whose training rows would lack a class
  raises ValueError before anything trains.

  Returns {'fold_probs': [K, N, C], 'labels': [N], 'mean_probs': [N, C], 'fold_metrics':
  [each fold's final metrics on its own validation fold]}.
  """
  if folds < 2:
    raise ValueError(f"k_fold needs folds >= 2, got {folds}")
  source = _source_directory(config)
  train = modality_arrays.load_split(os.path.join(source, f"{config.data.train_split}.npz"))
  fold_of = np.empty(len(train), np.int64)
  fold_of[np.random.default_rng(seed).permutation(len(train))] = np.arange(len(train)) % folds
  _check_folds_keep_classes(train, fold_of, folds)
  fold_probs, fold_metrics, labels = [], [], None
  for f in range(folds):
    workdir = os.path.join(root, f"fold_{f}")
    data_dir = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(data_dir, "validation.npz")):
      os.makedirs(data_dir, exist_ok=True)
      modality_arrays.write_split(os.path.join(data_dir, "train.npz"),
                                  **_subset(train, np.flatnonzero(fold_of != f)))
      _link_splits(source, data_dir, [test_split])
      modality_arrays.write_split(os.path.join(data_dir, "validation.npz"),
                                  **_subset(train, np.flatnonzero(fold_of == f)))
    run_config = with_values(config, **{"data.directory": data_dir,
                                        "data.eval_split": "validation"})
    metrics = train_and_evaluate(run_config, workdir)
    fold_metrics.append({k.split("/", 1)[1]: v for k, v in metrics.items()
                         if k.startswith("eval/")})
    cache_file = os.path.join(workdir, "test_probs.npz")
    if not os.path.exists(cache_file):
      probs, labels = predict(run_config, workdir, test_split, head=_main_head(run_config))
      tmp = cache_file + f".tmp.{os.getpid()}.npz"
      np.savez(tmp, probs=probs, labels=labels)
      os.replace(tmp, cache_file)
    with np.load(cache_file) as cached:
      fold_probs.append(cached["probs"])
      labels = cached["labels"]
    if on_fold is not None:
      on_fold(f, workdir)
  fold_probs = np.stack(fold_probs)
  return {"fold_probs": fold_probs, "labels": labels, "mean_probs": fold_probs.mean(0),
          "fold_metrics": fold_metrics}


def _check_folds_keep_classes(train: modality_arrays.ModalityArrays, fold_of: np.ndarray,
                              folds: int) -> None:
  """ValueError when some fold's training rows lack a class the training split has (every
  example of that class fell into the held-out fold): its model could never predict it."""
  classes = np.unique(train.labels)
  for f in range(folds):
    missing = np.setdiff1d(classes, train.labels[fold_of != f])
    if missing.size:
      counts = {int(c): int((train.labels == c).sum()) for c in missing}
      raise ValueError(f"k-fold: fold {f}'s training rows have no example of class(es) "
                       f"{missing.tolist()} ({counts} example(s) in {train.path}, all in fold "
                       f"{f}); use fewer folds or more examples of those classes")


# -------------------------------------------------------------------------------------------
# PNAO (seed 004, Algorithm 1): prune, compact, rewind, retrain; N rounds, keep the best.


def final_state(workdir: str, key: str = "params"):
  """TrainState field `key` ('params', 'task_state', ...) of the latest checkpoint of
  `workdir`, as host numpy arrays."""
  reader = CheckpointReader(os.path.join(workdir, "checkpoints"))
  return reader.read_arrays(reader.resolve_step("latest"), keys=(key,))[key]


def pnao(config, root: str, *, rounds: int, k: float,
         consumers: Callable[[Mapping[str, int]], Mapping[str, Sequence]],
         metric: str = "eval/accuracy", retrain_steps: Optional[int] = None,
         prunable: str = r".*", keep: str = r"", report: Sequence[str] = ()) -> dict:
  """PNAO's N-round loop (seed 004 Algorithm 1; mmjax.transforms.pruning).

  Round 0 trains `config` (give it the L1 penalty, config.optimizer.gradient_transforms, for
  the sparse training of step 1) in <root>/round_0. Round r >= 1 takes the previous round's
  final params, computes one global node mask (eq. 10-11, threshold k * max importance over
  the `prunable` kernels not matching `keep`), removes the pruned nodes (`compact`, with
  `consumers(widths)` naming which kernels read each layer), writes the smaller model's params
  to <root>/round_<r>/init.npz and retrains it for `retrain_steps` (default config.total_steps)
  from those weights (config.init_from) with config.model.widths set to the new widths. Each
  round is a new run whose step counter starts at 0, so the learning-rate schedule replays
  from its start: learning-rate rewinding (Renda et al. 2020), not fine-tuning at the final
  small rate.

  Returns (and writes to <root>/pnao.json) {'rounds': [{'round', 'params', metric, *report,
  'widths'}], 'best_round': the round with the highest `metric`}; <root>/pnao.png plots the
  metric and the parameter count against the round (the paper's Fig. 3).
  """
  from mmjax.train.init_from import write_variables  # pylint: disable=import-outside-toplevel
  from mmjax.transforms import pruning  # pylint: disable=import-outside-toplevel
  if rounds < 1:
    raise ValueError(f"PNAO needs rounds >= 1, got {rounds}")
  widths = dict(config.model.widths)
  records = []
  for r in range(rounds + 1):
    workdir = os.path.join(root, f"round_{r}")
    run_config = config
    if r:
      init_file = os.path.join(workdir, "init.npz")
      widths_file = os.path.join(workdir, "widths.json")
      if not os.path.exists(widths_file):
        previous = final_state(os.path.join(root, f"round_{r - 1}"))
        masks = pruning.node_masks(previous, k, prunable=prunable, keep=keep)
        params, new_widths = pruning.compact(previous, masks, consumers(widths))
        os.makedirs(workdir, exist_ok=True)
        write_variables(init_file, {"params": jax.tree.map(np.asarray, params)})
        write_json(widths_file, {**widths, **new_widths})
      with open(widths_file) as f:
        widths = json.load(f)
      run_config = with_values(config, **{
          "model.widths": widths, "total_steps": retrain_steps or config.total_steps,
          "init_from": (_init_entry(init_file),)})
    metrics = train_and_evaluate(run_config, workdir)
    count = pruning.parameter_count(final_state(workdir))
    records.append({"round": r, "params": count, metric: metrics[metric],
                    **{name: metrics[name] for name in report}, "widths": dict(widths)})
    log.info("PNAO round %d: %d parameters, %s %.4f", r, count, metric, metrics[metric])
  best = max(records, key=lambda rec: rec[metric])["round"]
  result = {"rounds": records, "best_round": best, "metric": metric, "k": k}
  write_json(os.path.join(root, "pnao.json"), result)
  plot_rounds(records, metric, os.path.join(root, "pnao.png"))
  return result


def _init_entry(source: str):
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(source=source, step="latest", source_subtree="",
                                        target_subtree="", frozen=False))


def read_json(path: str, default=None):
  """The JSON value in `path`, or `default` when the file does not exist (a protocol's results
  written by `write_json` before it was interrupted)."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON, atomically (mmjax.data.cache.atomic_write_text)."""
  cache.atomic_write_text(path, json.dumps(value, indent=2))


def plot_rounds(records: Sequence[dict], metric: str, path: str) -> None:
  """PNG of `metric` and the parameter count against the round (two y axes; seed 004 Fig. 3).
  Needs matplotlib (pip install "mmjax[report]")."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rounds = [rec["round"] for rec in records]
  fig, left = plt.subplots(figsize=(5, 3.2))
  left.plot(rounds, [rec[metric] for rec in records], "o-", color="tab:blue")
  left.set_xlabel("PNAO round")
  left.set_ylabel(metric, color="tab:blue")
  right = left.twinx()
  right.plot(rounds, [rec["params"] for rec in records], "s--", color="tab:red")
  right.set_ylabel("parameters", color="tab:red")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
