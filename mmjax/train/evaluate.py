"""Evaluation over the named splits of `config.evals`, with progress output.

Each split is one pass over Task.eval_dataset(split) feeding a fresh Task.new_evaluator(split);
its metrics (plus 'loss', the task loss averaged over the real examples) are logged as
'<split>/<metric>' and returned flat in that form, e.g. {'val/gap': ..., 'test/gap': ...}.
"""

import logging
import time
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit

log = logging.getLogger("mmjax")
RESERVED_SPLIT_NAMES = ("train",)  # metrics.jsonl records of training steps use split 'train'



def eval_splits(config) -> List[EvalSplit]:
  """config.evals as EvalSplits (sorted by name); one split 'eval' with no overrides when the
  config has none."""
  evals = config.get("evals", None)
  if not evals:
    return [DEFAULT_SPLIT]
  splits = []
  for name in sorted(evals.keys()):
    if name in RESERVED_SPLIT_NAMES or "/" in name:
      raise ValueError(f"config.evals.{name}: {name!r} cannot name an eval split (reserved: "
                       f"{RESERVED_SPLIT_NAMES}; no '/')")
    entry = evals[name] or {}
    overrides = entry.get("data", {}) or {}
    splits.append(EvalSplit(str(name), dict(overrides.items())))
  return splits


def check_metric_name(key: str, name: str, splits: List[EvalSplit]) -> None:
  """`name` ('<split>/<metric>', or '' for none) must name one of `splits` (ValueError naming
  config.<key> otherwise)."""
  if not name:
    return
  split = name.split("/", 1)[0]
  if "/" not in name or split not in [s.name for s in splits]:
    raise ValueError(f"config.{key}={name!r}: expected '<split>/<metric>' with a split of "
                     f"config.evals: {[s.name for s in splits]}")


def metric_value(metrics: Dict[str, float], name: str, key: str) -> float:
  """metrics[name]; KeyError naming config.<key> and the available metrics when absent."""
  if name not in metrics:
    raise KeyError(f"config.{key}={name!r} is not among the evaluation metrics: "
                   f"{sorted(metrics)}")
  return float(metrics[name])


class EmptySplitError(ValueError):
  """An eval split without a single real example (its files missing, empty or filtered out)."""


def describe_split(task, split: EvalSplit) -> str:
  """The split's eval file keys, e.g. "config.data.eval_pattern='/data/val*.tfrecord'"."""
  data_config = split.data_config(getattr(task, "data_config", None) or task.config.data)
  keys = [k for k in sorted(data_config.keys())
          if k.startswith("eval") and isinstance(data_config[k], str)]
  return ", ".join(f"config.data.{k}={data_config[k]!r}" for k in keys) or "no eval file keys"


def check_eval_splits(task, splits: List[EvalSplit], mesh, batch_size: int) -> None:
  """Fails at start, before any training, when a split's files are missing (the data layer's
  error names the pattern) or when its first global batch holds no real example
  (EmptySplitError naming the split's file keys). Reads one batch per split."""
  local_batch = batch_size // jax.process_count()
  for split in splits:
    dataset = task.eval_dataset(local_batch, jax.process_index(), jax.process_count(),
                                split=split)
    first = next(iter(dataset), None)
    real = 0.0
    if first is not None:
      weight = parallel.global_batch({"weight": first["weight"]}, mesh)["weight"]
      real = float(jax.jit(jnp.sum, out_shardings=parallel.replicated(mesh))(weight))
    if real <= 0:
      raise EmptySplitError(f"eval split {split.name!r} has no examples "
                            f"({describe_split(task, split)})")
    log.info("eval split %r: data found", split.name)


def evaluate(task, eval_step, state, mesh, *, batch_size: int, split: EvalSplit = DEFAULT_SPLIT,
             log_every_batches: int = 20,
             after_batch: Optional[Callable[[], None]] = None) -> Dict[str, float]:
  """Runs `eval_step` over task.eval_dataset(split); returns evaluator.compute() plus 'loss',
  the task loss averaged over all real (weight 1) eval examples.

  `batch_size` is global; each process reads batch_size / process_count examples per step.
  `after_batch` is called after every batch (the trainer's preemption check; it may raise to
  abandon the evaluation).
  """
  local_batch = batch_size // jax.process_count()
  dataset = task.eval_dataset(local_batch, jax.process_index(), jax.process_count(), split=split)
  evaluator = task.new_evaluator(split=split)
  start = time.time()
  num_batches, loss_sum, weight_sum = 0, 0.0, 0.0
  for num_batches, local in enumerate(dataset, start=1):
    predictions, batch, batch_loss, batch_weight = eval_step(state,
                                                             parallel.global_batch(local, mesh))
    evaluator.update(jax.tree.map(np.asarray, predictions), jax.tree.map(np.asarray, batch))
    loss_sum, weight_sum = loss_sum + float(batch_loss), weight_sum + float(batch_weight)
    if after_batch is not None:
      after_batch()
    if num_batches % log_every_batches == 0:
      log.info("eval split %r: %d batches (%.1f examples/s)", split.name, num_batches,
               num_batches * batch_size / (time.time() - start))
  if weight_sum <= 0:
    raise EmptySplitError(f"eval split {split.name!r} had no examples: no metrics from an empty "
                          f"evaluation ({describe_split(task, split)})")
  metrics = {"loss": loss_sum / weight_sum, **evaluator.compute()}
  log.info("eval split %r: done, %d batches in %.1fs", split.name, num_batches, time.time() - start)
  return metrics


def format_metrics(metrics: Dict[str, float]) -> str:
  """'name=value ...' with floats to 4 decimals."""
  return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in metrics.items())


def evaluate_splits(task, eval_step, state, mesh, splits: List[EvalSplit], writer, step: int,
                    batch_size: int, after_batch: Optional[Callable[[], None]] = None
                    ) -> Dict[str, float]:
  """evaluate() on every split; each split's metrics are logged and written (metrics.jsonl
  record {"step", "split": name, ...}; TensorBoard '<name>/<metric>'). Returns them flat."""
  flat = {}
  for split in splits:
    metrics = evaluate(task, eval_step, state, mesh, batch_size=batch_size, split=split,
                       after_batch=after_batch)
    log.info("eval split %r, step %d: %s", split.name, step, format_metrics(metrics))
    writer.write(step, split.name, metrics)
    flat.update({f"{split.name}/{k}": v for k, v in metrics.items()})
  return flat
