"""CREMA-D benchmark (`launch/benchmark.py --suite=cremad`): the shared encoders' train steps at
the paper's 3D input and the preprocessing that produces it (seed 002, sections 5.2 and 5.6).

Train steps: for each cell (default: I3D and Simple3D on the multimodal 3D input, 135 frames of
224 x 448 x 3, the face frame | the spectrogram chunk; VideoMAE on its 32 x 224 x 224 x 3
input), the real train step of the `cremad` task built from configs/cremad.py:<cell>,<variants>
(`mmjax.benchmarking.task_train_step_benchmark`: random inputs in [0, 1) and random labels,
Adam, Table 4's dropout) -> clips/s, compile time, and memory two ways:
  'compiled_peak_mb': XLA's memory analysis of the compiled step (`compiled.memory_analysis()`):
    arguments + outputs - outputs aliased to donated arguments + temporaries, i.e. the buffers
    live at the step's peak on one device (exact for XLA's allocation, on any backend);
  'peak_rss_mb': the process's peak resident memory during the phase (VmHWM reset before it:
    the state, the batches, XLA's buffers and the compiler's own memory).

Preprocessing: `write_synthetic_cremad` writes clips in CREMA-D's layout (VideoFlash/*.flv,
AudioWAV/*.wav; 30 fps, 96 x 72, 1-2.5 s) into a temporary folder, then
`preprocess.preprocess` turns the first `clips` of them into a fresh cache, 2D (middle-frame face
crop and the whole mel spectrogram) and 3D (24 fps frames and spectrogram chunks) at the
config's sizes with `workers` processes -> clips/s (writing the clips is not timed).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from mmjax import benchmarking
from mmjax.benchmarking import fmt
from mmjax.config_files import load_sibling, set_keys
from mmjax.projects.cremad import cells, clips, data, preprocess, synthetic_clips

__all__ = ["CELLS", "load_cell_config", "preprocess_benchmark", "random_clip_batch", "records",
           "report", "run_suite", "step_benchmark"]

CELLS = ("i3d_multimodal", "simple3d_multimodal", "videomae_multimodal")
UNITS: dict[str, str | None] = {"clips_per_s": "clips/s", "compiled_peak_mb": "MiB",
                                "clips": None, "workers": None, "image_size": None,
                                "preprocess_s": "s"}


def load_cell_config(config_spec: str, cell: str, batch_size: int):
  """configs/cremad.py's config of `cell` with the variants after ':' in `config_spec` (e.g.
  'configs/cremad.py:paper' or 'configs/cremad.py:tiny') and config.batch_size = batch_size."""
  path, _, variants = config_spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  config = load_sibling(path, name).get_config(",".join(v for v in (cell, variants) if v))
  set_keys(config, batch_size=int(batch_size))
  return config


def random_clip_batch(task, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """`task.example_batch` shapes: inputs uniform in [0, 1) [B, F, S, W, C] (or [B, S, W, C] in
  2D), every frame present, random labels."""
  batch = dict(task.example_batch(batch_size))
  batch["inputs"] = rng.random(batch["inputs"].shape, dtype=np.float32)
  batch["frames"] = np.full((batch_size,), batch["inputs"].shape[1] if batch["inputs"].ndim == 5
                            else 1, np.int32)
  batch["label"] = rng.integers(0, task.num_classes, batch_size).astype(np.int32)
  return batch


def step_benchmark(config, *, steps: int, warmup: int) -> dict[str, Any]:
  """Clips/s and memory of the train step of `config`'s cell (module docstring)."""
  result, _ = benchmarking.task_train_step_benchmark(
      config, random_clip_batch, batch_size=int(config.batch_size), steps=steps, warmup=warmup,
      num_batches=1)
  result["clips_per_s"] = result.pop("examples_per_s")
  if "compiled_temp_mb" in result:
    result["compiled_peak_mb"] = (result["compiled_argument_mb"] + result["compiled_output_mb"]
                                  - result["compiled_alias_mb"] + result["compiled_temp_mb"])
  result["input_shape"] = list(data.input_shape(config.data))
  result["model_size"] = config.model.size
  return result


def preprocess_benchmark(config, *, num_clips: int, workers: int) -> dict[str, Any]:
  """Clips/s of 2D and 3D preprocessing of `num_clips` synthetic clips into fresh caches at the
  sizes of `config.data` (module docstring): {'2d': {...}, '3d': {...}}."""
  actors = max(1, -(-num_clips // len(clips.EMOTIONS)))  # one sentence: 6 clips per actor
  out = {}
  with tempfile.TemporaryDirectory(prefix="cremad_bench_") as folder:
    root = os.path.join(folder, "clips")
    synthetic_clips.write_synthetic_cremad(root, actors=range(1001, 1001 + actors),
                                           sentences=clips.SENTENCES[:1], log=benchmarking.log)
    chosen = clips.list_clips(root, log=benchmarking.log)[:num_clips]
    for mode in ("2d", "3d"):
      config.data.family = mode
      settings = data.settings_of(config.data)
      start = time.perf_counter()
      manifest = preprocess.preprocess(chosen, os.path.join(folder, f"cache_{mode}"), settings,
                                       workers=workers, log=benchmarking.log)
      seconds = time.perf_counter() - start
      if manifest["failed"]:
        raise RuntimeError(f"cremad preprocessing ({mode}) failed: {manifest['failed']}")
      out[mode] = {"clips": len(chosen), "workers": int(workers), "preprocess_s": seconds,
                   "clips_per_s": len(chosen) / seconds, "image_size": settings.image_size,
                   "face_detector": manifest["face_detector"] or "-"}
  return out


def run_suite(config_spec: str, *, cell_names: Sequence[str] = CELLS, batch_size: int = 1,
              videomae_batch: int = 1, steps: int = 1, warmup: int = 0, num_clips: int = 12,
              workers: int = 2) -> dict[str, Any]:
  """The train step of each cell in `cell_names` at batch `batch_size` (VideoMAE:
  `videomae_batch`), then 2D and 3D preprocessing of `num_clips` clips (0: skipped); progress
  goes to stderr.

  Returns the results dict that `report` formats: 'hardware', 'load_average_start',
  'settings', 'steps' ({cell: `step_benchmark` and 'peak_rss_mb'}), 'preprocess' ({'2d', '3d'}
  with 'peak_rss_mb'), 'memory', 'load_average_end'.
  """
  unknown = [c for c in cell_names if c not in cells.CELLS]
  if unknown:
    raise ValueError(f"--cremad_cells {list(cell_names)}: {unknown} are not cells of "
                     f"configs/cremad.py ({', '.join(cells.CELLS)})")
  results = benchmarking.start_suite({"config": config_spec, "steps": steps, "warmup": warmup,
                                      "clips": num_clips, "workers": workers})
  results["steps"] = {}
  for cell in cell_names:
    batch = videomae_batch if cell.startswith("videomae") else batch_size
    config = load_cell_config(config_spec, cell, batch)
    benchmarking.log(f"cremad train step: {cell}, batch {batch}, input "
                     f"{data.input_shape(config.data)}")
    results["steps"][cell] = benchmarking.run_phase(step_benchmark, config, steps=steps,
                                                    warmup=warmup)
  if num_clips > 0:
    config = load_cell_config(config_spec, "i3d_multimodal", batch_size)
    benchmarking.log(f"cremad preprocessing: {num_clips} clips, {workers} worker(s)")
    results["preprocess"] = benchmarking.run_phase(preprocess_benchmark, config,
                                                   num_clips=num_clips, workers=workers)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the table of `run_suite`'s results."""
  rows = []
  for cell, r in results["steps"].items():
    shape = " x ".join(str(d) for d in r["input_shape"])
    rows += [(f"train step: {cell} ({r['model_size']}, B={r['batch_size']}, {shape})",
              "parameters", fmt(r["params"])),
             *benchmarking.timing_rows(r["compile_s"], r["first_step_s"], r["step_s"],
                                       r["step_min_s"]),
             ("", "throughput", fmt(r["clips_per_s"], " clips/s")),
             *benchmarking.flops_rows(r), *benchmarking.compiled_memory_rows(r)]
    if "compiled_peak_mb" in r:
      rows.append(("", "XLA peak (args + outputs - aliased + temps)",
                   fmt(r["compiled_peak_mb"], " MB")))
    rows.append(("", "process peak RSS in phase", fmt(r["peak_rss_mb"], " MB")))
  prep = results.get("preprocess")
  if prep:
    for mode in ("2d", "3d"):
      p = prep[mode]
      rows += [(f"preprocessing {mode.upper()} ({p['clips']} clips, {p['image_size']} px, "
                f"{p['workers']} workers, faces: {p['face_detector']})", "throughput",
                fmt(p["clips_per_s"], " clips/s"))]
    rows.append(("", "process peak RSS in phase", fmt(prep["peak_rss_mb"], " MB")))
  return benchmarking.report("mmjax CREMA-D benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement, named '<suite>/steps/<cell>/...' and
  '<suite>/preprocess/<2d|3d>/...' (`mmjax.benchmarking.to_records`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
