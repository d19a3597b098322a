"""Seed 000 end to end: the training stages of section 4, the hyperparameter search, the
majority-vote ensembles of section 5 and Table 4 (`launch/memotion3.py` is its command line).

Every run is an ordinary `train_and_evaluate(config, <root>/<name>)` in its own workdir, so a
pipeline started again resumes: finished runs are only evaluated again.

  corpora/        the stage lists (`pretrain_corpora.write_stage_lists`): Facebook Hateful
                  Memes and MAMI as given, or synthetic stand-ins in their formats, plus the
                  Memotion training and validation memes for stage (a)
  clip_pre/       stage (a): contrastive CLIP pretraining on pretrainCLIP (eq. 2-3)
  uni_text/, uni_image/
                  stage (b): CLIP-text / CLIP-image on hateful vs. not (pretrainuni), their CLIP
                  towers from clip_pre
  <target>/<model>/trial_<k>/
                  stage (c): the search, per target (task_a, humour, sarcasm, offensive,
                  motivational) and model: CLIP-text from uni_text ('text_model', 'lstm'),
                  CLIP-image from uni_image ('vision_model'), CLIP-multi from the target's
                  best CLIP-text and CLIP-image ('text', 'image'), OSCAR from
                  config.model.bert_checkpoint; each trial one run with
                  hyperparameters from SEARCH_SPACE; the two best by validation weighted F1
                  are the model's '0' and '1' (paper section 4)
  <target>/multi0_no_gb/   CLIP-multi0's set-up without gradient blending (Table 4)
  <target>/predictions.npz validation and test probabilities of every kept model
  jax_cache/       JAX's persistent compilation cache (identical train steps compile once)
  table4.md, table4.json, test_predictions.csv
                  weighted F1 on the validation split in Table 4's layout, with Ensemble-1
                  (majority vote over the best subset of text0, image0, multi0, oscar0)
                  and Ensemble-2 (of all eight), Task B derived from Task C's predictions; the
                  ensembles' subsets chosen on validation, then applied to the test memes
The search runs its trials with Ray Tune (`backend='ray'`, the paper's tool: a local Ray
instance by default, a cluster's when `ray.init` finds one running) or one after another in this
process ('local'); 'auto' (the default) is Ray Tune when `ray` is installed
(`pip install -e ".[tune]"`), else local.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import itertools
import logging
import os
from typing import Callable, Dict, List, Sequence

import numpy as np

from mmjax import fusion
from mmjax.data import cache
from mmjax.projects.memotion3 import meme_data, memotion_table, pretrain_corpora, task
from mmjax.projects.memotion3.models import PREDICTION_HEAD
from mmjax.train import multirun

log = logging.getLogger("mmjax")

__all__ = ["BACKENDS", "SEARCH_SPACE", "TABLE4_COLUMNS", "TARGETS", "Trial", "ensembles",
           "run_pipeline", "search", "stage_lists", "table4", "task_b_score"]

TARGETS = ("task_a",) + memotion_table.TASK_C_LABELS
TABLE4_COLUMNS = (("task_a", "Overall"), ("humour", "Humorous"), ("motivational", "Motivation"),
                  ("offensive", "Offensive"), ("sarcasm", "Sarcastic"))
SEARCH_SPACE = {"optimizer.learning_rate": (1e-4, 3e-4, 1e-3),
                "model.dropout_rate": (0.1, 0.2, 0.3)}
BACKENDS = ("auto", "local", "ray")
MODELS = ("text", "image", "multi", "oscar")
METRIC = "weighted_f1"


@dataclasses.dataclass(frozen=True)
class Trial:
  """One search trial: its overrides (dotted config keys), workdir and best validation score."""
  overrides: dict
  workdir: str
  score: float


def _init(source: str, source_subtree: str, target_subtree: str) -> dict:
  return dict(source=source, step="best", source_subtree=source_subtree,
              target_subtree=target_subtree, frozen=False)


def _with(config, **values):
  """A copy of `config` with dotted keys set (init_from entries as plain dicts)."""
  return multirun.with_values(config, **values)


def best_score(workdir: str, split: str = "eval") -> float:
  """The best validation weighted F1 over the run's evaluations (metrics.jsonl)."""
  scores = [record[METRIC] for record in multirun.evaluations(workdir, split)
            if METRIC in record]
  if not scores:
    raise ValueError(f"{workdir}: no {split}/{METRIC} in metrics.jsonl")
  return float(max(scores))


def trial_overrides(trials: int, seed: int) -> List[dict]:
  """`trials` distinct points of SEARCH_SPACE (its grid in a seeded random order)."""
  grid = [dict(zip(SEARCH_SPACE, values)) for values in itertools.product(*SEARCH_SPACE.values())]
  if not 1 <= trials <= len(grid):
    raise ValueError(f"trials={trials}: the search space has {len(grid)} points")
  order = np.random.default_rng(seed).permutation(len(grid))[:trials]
  return [grid[i] for i in order]


def _run_trial(config, workdir: str, overrides: dict) -> float:
  multirun.train_unless_finished(_with(config, **overrides), workdir)
  return best_score(workdir)


def search(config, root: str, *, trials: int, seed: int = 0, backend: str = "auto"
           ) -> List[Trial]:
  """The trials of `config` under `root`/trial_<k>, best first (ties: the earlier trial)."""
  if backend not in BACKENDS:
    raise ValueError(f"search backend {backend!r}; expected one of {BACKENDS}")
  if backend == "auto":
    backend = "ray" if importlib.util.find_spec("ray") else "local"
  points = trial_overrides(trials, seed)
  workdirs = [os.path.join(root, f"trial_{k}") for k in range(len(points))]
  if backend == "ray":
    scores = _ray_search(config, workdirs, points)
  else:
    scores = [_run_trial(config, w, p) for w, p in zip(workdirs, points)]
  found = [Trial(p, w, s) for p, w, s in zip(points, workdirs, scores)]
  log.info("search %s: %s", root, ", ".join(f"trial {k} {t.score:.4f} {t.overrides}"
                                             for k, t in enumerate(found)))
  return sorted(found, key=lambda t: -t.score)


def _ray_search(config, workdirs: Sequence[str], points: Sequence[dict]) -> List[float]:
  """Runs the trials as Ray Tune trials, each asking for as many CPUs as this machine has (one
  at a time here; a Ray cluster named by $RAY_ADDRESS runs one per node in parallel). Each
  trial is `_run_trial` in its own workdir."""
  import ray  # pylint: disable=import-outside-toplevel
  from ray import tune  # pylint: disable=import-outside-toplevel

  def trainable(space):
    k = space["trial"]
    return {"score": _run_trial(config, workdirs[k], points[k])}

  started = not ray.is_initialized()
  if started and os.environ.get("RAY_ADDRESS"):  # a running cluster's
    ray.init(log_to_driver=False, configure_logging=False)
  elif started:  # a local instance with this machine's cores
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
  try:
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": os.cpu_count()}),
        param_space={"trial": tune.grid_search(list(range(len(points))))},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=tune.RunConfig(name="search", storage_path=os.path.abspath(
            os.path.join(os.path.dirname(workdirs[0]), "ray_results")), verbose=0))
    results = tuner.fit()
    by_trial = {r.config["trial"]: r.metrics["score"] for r in results if r.error is None}
    failed = [r.error for r in results if r.error is not None]
    if failed:
      raise RuntimeError(f"Ray Tune: {len(failed)} trial(s) failed; the first: {failed[0]}")
  finally:
    if started:
      ray.shutdown()
  return [float(by_trial[k]) for k in range(len(points))]


# -------------------------------------------------------------------------------------------
# Stages.


def stage_lists(root: str, memotion_data, *, hateful_memes: str = "", mami: str = "",
                synthetic_size: int = 300, image_size: int = 64,
                log_fn: Callable[[str], None] = print) -> dict:
  """The stage (a) and (b) lists under root/corpora (module docstring): from the given Hateful
  Memes and MAMI folders, else from synthetic stand-ins, plus the Memotion train and validation
  memes of `memotion_data` (config.data, resolved) in pretrainCLIP. Returns {file name: path}."""
  directory = os.path.join(root, "corpora")
  if hateful_memes or mami:
    corpora = pretrain_corpora.read_corpora(hateful_memes, mami)
  else:
    synthetic = os.path.join(directory, "synthetic")
    if not cache.is_complete(synthetic, {"size": synthetic_size, "image_size": image_size}):
      pretrain_corpora.write_synthetic_corpora(synthetic, num_memes=synthetic_size,
                                               image_size=image_size, seed=0, log=log_fn)
      cache.write_marker(synthetic, {"size": synthetic_size, "image_size": image_size})
    corpora = pretrain_corpora.read_corpora(os.path.join(synthetic, "hateful_memes"),
                                            os.path.join(synthetic, "mami"))
  tables = [meme_data.read_split(memotion_data, key) for key in ("train_file", "eval_file")]
  pretrain_corpora.write_stage_lists(directory, corpora, tables, log=log_fn)
  return {name: os.path.join(directory, name)
          for name in pretrain_corpora.PAIR_FILES + pretrain_corpora.BINARY_FILES}


def _pretrain_clip(clip_config, root: str, lists: dict) -> str:
  workdir = os.path.join(root, "clip_pre")
  multirun.train_unless_finished(_with(clip_config, **{
      "data.train_file": lists[pretrain_corpora.PAIR_FILES[0]],
      "data.eval_file": lists[pretrain_corpora.PAIR_FILES[1]]}), workdir)
  return workdir


def _pretrain_unimodal(config, root: str, lists: dict, clip_workdir: str) -> dict:
  """Stage (b): {'text': workdir, 'image': workdir}."""
  runs = {}
  for model, tower in (("text", "text_model"), ("image", "vision_model")):
    runs[model] = os.path.join(root, f"uni_{model}")
    uni = _with(target_config(config, "hateful", model), **{
        "data.format": "binary", "data.train_file": lists[pretrain_corpora.BINARY_FILES[0]],
        "data.eval_file": lists[pretrain_corpora.BINARY_FILES[1]],
        "init_from": (_init(clip_workdir, tower, tower),)})
    multirun.train_unless_finished(uni, runs[model])
  return runs


def target_config(config, target: str, model: str, *, gradient_blending: bool = True):
  """`config` (configs/memotion3.py) for one target and model with Table 3's loss
  (`task.apply_table3`)."""
  config = _with(config, **{"model.name": model, "data.target": target,
                            "loss.gradient_blending": gradient_blending})
  task.apply_table3(config)
  return config


def _target_runs(config, root: str, target: str, uni: dict, *, trials: int, seed: int,
                 backend: str) -> dict:
  """Stage (c) for one target: {'text0': workdir, ..., 'multi1': ..., 'multi0_no_gb': ...}
  with each run's config."""
  kept = {}
  inits = {"text": (_init(uni["text"], "text_model", "text_model"),
                    _init(uni["text"], "lstm", "lstm")),
           "image": (_init(uni["image"], "vision_model", "vision_model"),),
           "oscar": ()}  # OSCAR's BERT comes from config.model.bert_checkpoint
  for model in MODELS:
    if model == "multi":
      inits["multi"] = (_init(kept["text0"][0], "", "text"), _init(kept["image0"][0], "", "image"))
    model_config = _with(target_config(config, target, model), init_from=inits[model])
    best = search(model_config, os.path.join(root, target, model), trials=trials, seed=seed,
                  backend=backend)
    for rank, trial in enumerate(best[:2]):
      kept[f"{model}{rank}"] = (trial.workdir, _with(model_config, **trial.overrides))
  no_gb = _with(target_config(config, target, "multi", gradient_blending=False),
                init_from=inits["multi"], **best_overrides(kept["multi0"][1]))
  workdir = os.path.join(root, target, "multi0_no_gb")
  multirun.train_unless_finished(no_gb, workdir)
  kept["multi0_no_gb"] = (workdir, no_gb)
  return kept


def best_overrides(config) -> dict:
  """The SEARCH_SPACE values of `config` (dotted key -> value)."""
  out = {}
  for dotted in SEARCH_SPACE:
    node = config
    for part in dotted.split("."):
      node = node[part]
    out[dotted] = node
  return out


def _predictions(kept: dict, has_test: bool) -> dict:
  """{model: {'val': probs [N, C], 'test': probs or None}} and the validation labels."""
  out, labels = {}, None
  for name, (workdir, config) in kept.items():
    head = PREDICTION_HEAD[config.model.name]
    val, val_labels = multirun.predict(config, workdir, "eval", head, checkpoint="best")
    test = (multirun.predict(config, workdir, "test", head, checkpoint="best")[0]
            if has_test else None)
    labels = val_labels if labels is None else labels
    out[name] = {"val": val, "test": test}
  return {"models": out, "labels": labels}


# -------------------------------------------------------------------------------------------
# Ensembles and the table.

ENSEMBLES = {"Ensemble-1": ("text0", "image0", "multi0", "oscar0"),
             "Ensemble-2": ("text0", "text1", "image0", "image1", "multi0", "multi1", "oscar0",
                            "oscar1")}
ROWS = (("CLIP-text0", "text0"), ("CLIP-text1", "text1"), ("CLIP-image0", "image0"),
        ("CLIP-image1", "image1"), ("CLIP-multi0", "multi0"), ("CLIP-multi1", "multi1"),
        ("OSCAR0", "oscar0"), ("OSCAR1", "oscar1"), ("CLIP-multi0 without GB", "multi0_no_gb"))


def ensembles(predictions: dict) -> dict:
  """{ensemble: {'members': chosen models, 'val': predicted classes [N], 'test': [N] or None}}
  from one target's predictions: the best majority-vote subset on validation (weighted F1),
  applied to the test probabilities of the same models."""
  out, labels = {}, predictions["labels"]
  for name, members in ENSEMBLES.items():
    val = np.stack([predictions["models"][m]["val"] for m in members])
    subset = fusion.best_vote_subset(val, labels)
    tests = [predictions["models"][m]["test"] for m in members]
    out[name] = {"members": [members[i] for i in subset.models],
                 "val": fusion.apply_vote_subset(val, subset),
                 "test": (None if any(t is None for t in tests)
                          else fusion.apply_vote_subset(np.stack(tests), subset))}
  return out


def _decisions(predictions: dict, ensemble: dict) -> Dict[str, np.ndarray]:
  """{row name: validation class decisions [N]} for every Table 4 row."""
  rows = {row: predictions["models"][key]["val"].argmax(-1) for row, key in ROWS}
  rows.update({name: e["val"] for name, e in ensemble.items()})
  return rows


def task_b_score(labels_c: Dict[str, np.ndarray], decided_c: Dict[str, np.ndarray]) -> float:
  """Task B as the challenge scores it, from Task C decisions (section 4: an emotion is present
  when its intensity is above the lowest class): the weighted F1 of present / absent, averaged
  over the four labels."""
  return float(np.mean([fusion.weighted_f1(labels_c[k] > 0, decided_c[k] > 0)
                        for k in memotion_table.TASK_C_LABELS]))


def table4(results: dict) -> dict:
  """Table 4 (weighted F1 on validation) from {target: {'predictions', 'ensembles'}}: {'rows':
  {row: {column: F1}}, 'task_b': {row: F1}, 'task_c': {row: F1}}."""
  scores = {}
  decisions = {t: _decisions(r["predictions"], r["ensembles"]) for t, r in results.items()}
  labels = {t: r["predictions"]["labels"] for t, r in results.items()}
  for row in decisions[next(iter(decisions))]:
    scores[row] = {column: fusion.weighted_f1(labels[t], decisions[t][row])
                   for t, column in TABLE4_COLUMNS if t in decisions}
  out = {"rows": scores}
  if all(t in results for t in memotion_table.TASK_C_LABELS):
    columns = [c for t, c in TABLE4_COLUMNS if t != "task_a"]
    out["task_c"] = {row: float(np.mean([s[c] for c in columns])) for row, s in scores.items()}
    out["task_b"] = {row: task_b_score({t: labels[t] for t in memotion_table.TASK_C_LABELS},
                                       {t: decisions[t][row]
                                        for t in memotion_table.TASK_C_LABELS})
                     for row in scores}
  return out


def format_table4(table: dict) -> str:
  """Table 4 as Markdown (rows: models, no-GB, ensembles; columns as the paper's)."""
  present = [c for _, c in TABLE4_COLUMNS if any(c in s for s in table["rows"].values())]
  extra = [k for k in ("task_b", "task_c") if k in table]
  head = ["Models"] + present + [f"Task {k[-1].upper()}" for k in extra]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row, scores in table["rows"].items():
    cells = [f"{scores[c]:.4f}" for c in present] + [f"{table[k][row]:.4f}" for k in extra]
    lines.append("| " + " | ".join([row] + cells) + " |")
  return "\n".join(lines) + "\n"


def _write_test_predictions(path: str, results: dict, class_names: dict,
                            ids: Sequence[str]) -> None:
  """Ensemble-2's test decisions, one row per meme: id, then each target's class name."""
  targets = [t for t in TARGETS if t in results]
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["id"] + targets)
    for n, meme_id in enumerate(ids):
      writer.writerow([meme_id] + [class_names[t][results[t]["ensembles"]["Ensemble-2"]["test"][n]]
                                   for t in targets])


# -------------------------------------------------------------------------------------------
# The whole pipeline.


def run_pipeline(clip_config, memotion_config, root: str, *, targets: Sequence[str] = TARGETS,
                 trials: int = 2, seed: int = 0, backend: str = "auto", hateful_memes: str = "",
                 mami: str = "", synthetic_size: int = 300,
                 log_fn: Callable[[str], None] = print) -> dict:
  """Stages (a)-(c), predictions, ensembles and Table 4 under `root` (module docstring).

  Args:
    clip_config: configs/clip_pretrain.py's config (stage a).
    memotion_config: configs/memotion3.py's config (stages b, c); its data.train_file /
      eval_file / test_file are the Memotion files ('' = the embedded synthetic memes).
    targets: TARGETS to train (Table 4's columns; all five give Tasks B and C).
    trials: search trials per model and target (>= 2: the two best are kept).
    seed, backend: the search's order of grid points and its runner (BACKENDS).
    hateful_memes, mami: the corpora's folders ('' for both: synthetic stand-ins of
      `synthetic_size` memes).

  Returns:
    The table4() dict; table4.md, table4.json and (with a test file) test_predictions.csv are
    written to `root`.
  """
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"targets {list(targets)}: expected some of {TARGETS}")
  if trials < 2:
    raise ValueError(f"trials={trials}: the paper keeps each model's two best configurations")
  os.makedirs(root, exist_ok=True)
  _share_compilations(os.path.join(root, "jax_cache"))
  data = cache.resolved_data_config(memotion_config.data, meme_data.resolve_files,
                                    meme_data.FILE_KEYS, log_fn)
  if not data.test_file:
    synthetic_test = os.path.join(os.path.dirname(data.train_file), "test.csv")
    if not memotion_config.data.train_file and os.path.isfile(synthetic_test):
      with data.unlocked():
        data.test_file = synthetic_test
  memotion_config = _with(memotion_config, data=data)
  lists = stage_lists(root, data, hateful_memes=hateful_memes, mami=mami,
                      synthetic_size=synthetic_size, log_fn=log_fn)
  clip_workdir = _pretrain_clip(clip_config, root, lists)
  uni = _pretrain_unimodal(memotion_config, root, lists, clip_workdir)
  results = {}
  for target in targets:
    kept = _target_runs(memotion_config, root, target, uni, trials=trials, seed=seed,
                        backend=backend)
    predictions = _predictions(kept, bool(data.test_file))
    np.savez(os.path.join(root, target, "predictions.npz"), labels=predictions["labels"],
             **{f"{m}_{s}": p[s] for m, p in predictions["models"].items()
                for s in ("val", "test") if p[s] is not None})
    results[target] = {"predictions": predictions, "ensembles": ensembles(predictions)}
  table = table4(results)
  table["ensemble_members"] = {t: {e: r["ensembles"][e]["members"] for e in ENSEMBLES}
                               for t, r in results.items()}
  multirun.write_json(os.path.join(root, "table4.json"), table)
  cache.atomic_write_text(os.path.join(root, "table4.md"), format_table4(table))
  if data.test_file:
    test = meme_data.read_split(data, "test_file", labelled=False)
    names = {t: meme_data.class_names(_with(data, **{"target": t})) for t in results}
    _write_test_predictions(os.path.join(root, "test_predictions.csv"), results, names,
                            test.ids)
  log_fn(format_table4(table))
  return table


def _share_compilations(directory: str) -> None:
  """JAX's persistent compilation cache in `directory`: runs whose train steps are the same
  program (the Task C targets with 4 classes, trial k of each) compile once."""
  import jax  # pylint: disable=import-outside-toplevel
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def parse_targets(spec: str) -> tuple:
  """'task_a,humour' -> ('task_a', 'humour'); 'all' -> TARGETS."""
  return TARGETS if spec == "all" else tuple(t.strip() for t in spec.split(",") if t.strip())

