"""EmoVCLIP prompt-tuning benchmark (`launch/benchmark.py --suite=emovclip`).

Random weights and random pixels: nothing is downloaded, read or written. `run_suite` returns
the results dict that `report` prints as a table and `records` turns into JSON records (shared
helpers: `mmjax.benchmarking`). What is timed:

* `prompt_tuning_benchmark`: the real train step of the EmoVCLIP task (configs/emovclip.py:
  prompted CLIP, frames mean-pooled, class-name prompts through the text tower, cross-entropy,
  the config's optimizer with its frozen backbone) -> clips/s and frames/s.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

from mmjax import benchmarking, parallel
from mmjax.benchmarking import fmt

# Units of this suite's results keys (None: a setting), see `mmjax.benchmarking.to_records`;
# the train step's keys are in `mmjax.benchmarking.UNITS`.
UNITS: dict[str, str | None] = {
    "num_prompts": None, "prompt_depth": None, "frames": None, "image_size": None,
    "trainable_params": "parameters", "clips_per_s": "clips/s", "frames_per_s": "frames/s",
}


def random_clip_batch(task, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch of `task.example_batch`'s shapes: random normalized pixels [B, T, S, S, 3],
  uniform random labels [B] over the task's classes, weight [B] of ones."""
  batch = dict(task.example_batch(batch_size))
  batch["pixel_values"] = benchmarking.random_pixels(batch["pixel_values"].shape, rng)
  batch["label"] = rng.integers(0, len(task.class_names), batch_size).astype(np.int32)
  return batch


def _count_matching(params, pattern: str) -> int:
  """Parameters whose '/'-joined path fully matches `pattern` (as the optimizer's freeze)."""
  regex = re.compile(pattern)
  return int(sum(leaf.size for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
                 if regex.fullmatch(parallel.path_to_str(path))))


def prompt_tuning_benchmark(config, *, batch_size: int, steps: int, warmup: int = 1,
                            frames: int | None = None, num_batches: int = 2) -> dict[str, Any]:
  """Clips/s of the prompt-tuning train step of a CLIP video task (e.g. configs/emovclip.py).

  The task is built from `config` (config.task, e.g. 'emovclip'; random backbone unless
  model.checkpoint is set, which is not read here either: the weights stay random) with
  config.batch_size = `batch_size` and data.num_frames = `frames`; its `prepare()` is not called,
  so no dataset is written. Batches: `random_clip_batch`. The optimizer is the config's (only
  parameters matching config.optimizer.trainable update). What is timed:
  `mmjax.benchmarking.task_train_step_benchmark`.

  Args:
    config: the task config; not modified.
    batch_size: clips per step (divisible by the mesh's data axis).
    steps: timed steps (>= 1).
    warmup: untimed steps after the first.
    frames: frames per clip (data.num_frames); None keeps the config's.
    num_batches: distinct random batches cycled through.

  Returns:
    {'preset', 'num_prompts', 'prompt_depth', 'frames', 'image_size', 'trainable_params',
    'clips_per_s', 'frames_per_s'} and the rest of `task_train_step_benchmark`'s result:
    'batch_size', 'num_devices', 'params' (all), 'init_s', 'compile_s', 'first_step_s',
    'step_s', 'step_min_s', 'final_loss' and, where XLA reports them, 'flops_per_step',
    'bytes_accessed_per_step', 'compiled_temp_mb', 'compiled_argument_mb', 'tflops_per_s'.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.batch_size = int(batch_size)
    if frames is not None:
      config.data.num_frames = int(frames)
  result, state = benchmarking.task_train_step_benchmark(
      config, random_clip_batch, batch_size=batch_size, steps=steps, warmup=warmup,
      num_batches=num_batches)
  clips_per_s = result.pop("examples_per_s")
  trainable = config.optimizer.get("trainable", "") or ""
  return {"preset": config.model.checkpoint or config.model.preset,
          "num_prompts": int(config.model.num_prompts),
          "prompt_depth": int(config.model.prompt_depth),
          "frames": int(config.data.num_frames), "image_size": int(config.data.image_size),
          "trainable_params": (_count_matching(state.params, trainable) if trainable
                               else result["params"]),
          "clips_per_s": clips_per_s, "frames_per_s": clips_per_s * config.data.num_frames,
          **result}


# -------------------------------------------------------------------------------------------
# The suite, its table and its records.


def run_suite(config, *, batch_size: int = 8, steps: int = 3, warmup: int = 1,
              frames: int | None = None) -> dict[str, Any]:
  """The prompt-tuning step benchmark; progress goes to stderr.

  Args:
    config: the prompt-tuning task config (e.g. configs/emovclip.py:paper).
    batch_size: clips per train step.
    steps: timed train steps.
    warmup: untimed steps after the first.
    frames: frames per clip (None: the config's data.num_frames).

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'prompt_tuning' (`prompt_tuning_benchmark` and its phase's 'peak_rss_mb'), 'memory',
    'load_average_end'.
  """
  results = benchmarking.start_suite({"task": config.task, "batch_size": batch_size,
                                      "steps": steps, "warmup": warmup, "frames": frames})
  benchmarking.log(f"prompt tuning: {config.task}, {batch_size} clips")
  results["prompt_tuning"] = benchmarking.run_phase(
      prompt_tuning_benchmark, config, batch_size=batch_size, steps=steps, warmup=warmup,
      frames=frames)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the human-readable table of `run_suite`'s results."""
  p = results["prompt_tuning"]
  rows = [(f"prompt-tuning step: {p['preset']}, N={p['num_prompts']} prompts x "
           f"D={p['prompt_depth']} layers (B={p['batch_size']} clips, T={p['frames']})",
           "parameters (trainable / all)", f"{fmt(p['trainable_params'])} / {fmt(p['params'])}"),
          *benchmarking.timing_rows(p["compile_s"], p["first_step_s"], p["step_s"],
                                    p["step_min_s"]),
          ("", "throughput", f"{fmt(p['clips_per_s'], ' clips/s')} = "
           f"{fmt(p['frames_per_s'], ' frames/s')}"),
          *benchmarking.flops_rows(p),
          ("", "process peak RSS in phase", fmt(p["peak_rss_mb"], " MB"))]
  return benchmarking.report("mmjax EmoVCLIP benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'emovclip/prompt_tuning/clips_per_sec' (`mmjax.benchmarking.to_records`; kwargs: its
  `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
