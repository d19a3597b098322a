"""Memotion 3 train steps (`launch/benchmark.py --suite=memotion3`): CLIP-text, CLIP-image,
CLIP-multi and OSCAR as the pipeline trains them (configs/memotion3.py, Table 3's loss: gradient
blending over three heads for CLIP-multi).

Random weights, random pixels and regions, random OCR-length token sequences: nothing is read
(OSCAR's BERT: config.model.bert_checkpoint's architecture, or the small random one written
once to the cache). For each model, the real train step of the `memotion3` task
(`mmjax.benchmarking.task_train_step_benchmark`) -> memes/s, XLA's FLOPs and memory, peak RSS.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax import benchmarking
from mmjax.benchmarking import fmt
from mmjax.projects.memotion3 import task as memotion_task
from mmjax.train import multirun

UNITS: dict[str, str | None] = {"memes_per_s": "memes/s", "tokens": None}
MODELS = ("text", "image", "multi", "oscar")
NAMES = {"text": "CLIP-text", "image": "CLIP-image", "multi": "CLIP-multi", "oscar": "OSCAR"}
MEAN_TOKENS = 24  # OCR captions are short: about this many tokens on average


def _random_tokens(rng, batch_size: int, length: int, start: int, end: int, pad: int,
                   vocab: int) -> tuple[np.ndarray, np.ndarray]:
  """Token ids [B, L] with random lengths around MEAN_TOKENS: start, random ids, end, padding."""
  ids = np.full((batch_size, length), pad, np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  for row in range(batch_size):
    n = int(np.clip(rng.poisson(MEAN_TOKENS), 1, length - 2))
    ids[row, :n + 2] = [start, *rng.integers(min(300, vocab - 1), vocab, n), end]
    mask[row, :n + 2] = 1
  return ids, mask


def random_meme_batch(task, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """`task.example_batch` shapes: random normalized pixels and CLIP tokens, or (OSCAR) random
  BERT tokens and region features with all regions present; random labels."""
  batch = dict(task.example_batch(batch_size))
  tokenizer = task.tokenizer
  if "pixel_values" in batch:
    batch["pixel_values"] = benchmarking.random_pixels(batch["pixel_values"].shape, rng)
    batch["input_ids"], batch["attention_mask"] = _random_tokens(
        rng, batch_size, batch["input_ids"].shape[1], tokenizer.sot_token_id,
        tokenizer.eot_token_id, tokenizer.pad_token_id, 40_000)
  else:
    batch["bert_input_ids"], batch["bert_attention_mask"] = _random_tokens(
        rng, batch_size, batch["bert_input_ids"].shape[1], tokenizer.cls_token_id,
        tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.vocab_size)
    batch["region_features"] = rng.normal(size=batch["region_features"].shape).astype(np.float32)
    batch["region_boxes"] = rng.random(batch["region_boxes"].shape).astype(np.float32)
    batch["region_mask"] = np.ones_like(batch["region_mask"])
  batch["label"] = rng.integers(0, task.num_classes, batch_size).astype(np.int32)
  return batch


def model_step_benchmark(config, model: str, *, batch_size: int, steps: int,
                         warmup: int = 1) -> dict[str, Any]:
  """Memes/s of one model's train step (module docstring) with Table 3's loss for Task A."""
  config = multirun.with_values(config, **{"model.name": model, "batch_size": int(batch_size)})
  memotion_task.apply_table3(config)
  result, _ = benchmarking.task_train_step_benchmark(
      config, random_meme_batch, batch_size=batch_size, steps=steps, warmup=warmup)
  result["memes_per_s"] = result.pop("examples_per_s")
  result["preset"] = ((config.model.bert_checkpoint or "small random BERT") if model == "oscar"
                      else config.model.checkpoint or config.model.preset)
  return result


def run_suite(config, *, models: Sequence[str] = MODELS, batch_size: int = 32, steps: int = 3,
              warmup: int = 1) -> dict[str, Any]:
  """The train step of each model in `models`; progress goes to stderr.

  Returns the results dict that `report` formats: 'hardware', 'load_average_start',
  'settings', 'steps' ({model: `model_step_benchmark` and 'peak_rss_mb'}), 'memory',
  'load_average_end'.
  """
  unknown = [m for m in models if m not in MODELS]
  if unknown or not models:
    raise ValueError(f"--memotion_models {list(models)}: expected some of {MODELS}")
  results = benchmarking.start_suite({"preset": config.model.preset, "batch_size": batch_size,
                                      "steps": steps, "warmup": warmup,
                                      "image_size": int(config.data.image_size)})
  results["steps"] = {}
  for model in models:
    benchmarking.log(f"memotion3 train step: {NAMES[model]}, batch {batch_size}")
    results["steps"][model] = benchmarking.run_phase(
        model_step_benchmark, config, model, batch_size=batch_size, steps=steps, warmup=warmup)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the table of `run_suite`'s results."""
  rows = []
  for model, r in results["steps"].items():
    rows += [(f"train step: {NAMES[model]} ({r['preset']}, B={r['batch_size']})", "parameters",
              fmt(r["params"])),
             *benchmarking.timing_rows(r["compile_s"], r["first_step_s"], r["step_s"],
                                       r["step_min_s"]),
             ("", "throughput", fmt(r["memes_per_s"], " memes/s")),
             *benchmarking.flops_rows(r), *benchmarking.compiled_memory_rows(r),
             ("", "process peak RSS in phase", fmt(r["peak_rss_mb"], " MB"))]
  return benchmarking.report("mmjax Memotion 3 benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement, named '<suite>/steps/<model>/...'
  (`mmjax.benchmarking.to_records`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
