"""The collectives benchmark suite (`launch/benchmark.py --suite=collectives`): the collectives
(kind, count, bytes per device; `mmjax.collectives`) that XLA puts in the sharded train steps of
the YouTube-8M models (configs/ytb8m.py) and of CLIP contrastive pretraining
(configs/clip_pretrain.py) on a 'data' 4 x 'model' 2 mesh, compiled, not run; re-run on 8 fake
CPU devices where fewer exist. What the rules imply: the top-level README's "Communication".
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any, Sequence

import jax

from mmjax import benchmarking, collectives
from mmjax.config_files import CHECKOUT_CONFIGS, load_checkout_config
from mmjax.models import clip
from mmjax.projects.youtube8m import benchmark

MESH = (("data", 4), ("model", 2))

# Units of this suite's results keys (None: a setting), see `mmjax.benchmarking.to_records`;
# batch_size, num_devices, compile_s and peak_rss_mb are in `mmjax.benchmarking.UNITS`.
UNITS: dict[str, str | None] = {
    "frames": None, "image_size": None, "num_params": "parameters", "param_bytes": "bytes",
    "param_bytes_per_device": "bytes", "count": "collectives", "bytes": "bytes",
    "largest_bytes": "bytes",
}
SECTIONS = {"steps": "train_step"}


def youtube8m_config(model: str, *, batch_size: int, frames: int):
  """configs/ytb8m.py for one model ('transformer', 'netvlad', 'attention_rnn': late fusion;
  or a row '<family>_<fusion>'; `benchmark.model_config`), with `batch_size` and
  data.max_frames = `frames`. A cm row's frozen correlation tower is only compiled."""
  return benchmark.model_config(load_checkout_config("ytb8m"), model, batch_size=batch_size,
                                frames=frames)


def clip_config(preset: str | None, *, batch_size: int):
  """configs/clip_pretrain.py (the contrastive train step) with `batch_size` and the CLIP
  `preset` and its image size (None: the config's, 'tiny')."""
  config = load_checkout_config("clip_pretrain")
  if preset is not None:
    config.model.preset = preset
    config.data.image_size = clip.get_config(preset).vision.image_size
  config.batch_size = int(batch_size)
  return config


def run_suite(*, models: Sequence[str] = ("transformer", "netvlad"), batch_size: int = 128,
              frames: int = 300, clip_preset: str | None = None, clip_batch: int = 64,
              mesh: Sequence[tuple[str, int]] = MESH) -> dict[str, Any]:
  """The collectives of the YouTube-8M `models`' train steps (configs/ytb8m.py, default sizes)
  and of the CLIP contrastive train step (configs/clip_pretrain.py; `clip_preset` None: the
  config's 'tiny' CLIP, whose real 49,408-token vocabulary keeps the embedding large), each
  compiled (not run) on `mesh` (default 'data' 4 x 'model' 2); progress on stderr. (ViT-B/32's
  step had not compiled after 30 minutes on 2 cores, in the XLA CPU compiler's fusion pass.)

  With fewer devices than the mesh needs, the suite runs in a subprocess on that many fake
  CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, JAX_PLATFORMS=cpu), so it
  works as written on a laptop; otherwise on this process's devices (a GPU or TPU's compiler
  places collectives differently from the CPU's).

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'steps' ({'ytb8m_<family>_<fusion>' or 'clip_contrastive': `step_collectives` plus the
    phase's 'peak_rss_mb' and 'frames' / 'image_size'}), 'memory', 'load_average_end'.
  """
  settings = {"models": list(models), "batch_size": int(batch_size), "frames": int(frames),
              "clip_preset": clip_preset, "clip_batch": int(clip_batch),
              "mesh": [list(axis) for axis in mesh]}
  devices = math.prod(size for _, size in mesh)
  if jax.device_count() < devices:
    return _run_on_fake_devices(settings, devices)
  return _run_here(settings)


def _run_here(settings: dict[str, Any]) -> dict[str, Any]:
  """`run_suite` on this process's devices (`settings`: its arguments, as a dict)."""
  results = benchmarking.start_suite(settings)
  batch_size, frames, mesh = settings["batch_size"], settings["frames"], settings["mesh"]
  results["steps"] = {}
  for model in settings["models"]:
    config = youtube8m_config(model, batch_size=batch_size, frames=frames)
    name = f"ytb8m_{config.model.name}_{config.model.fusion}"
    benchmarking.log(f"collectives: {name}, batch {batch_size}, {frames} frames")
    results["steps"][name] = {"frames": int(frames), **benchmarking.run_phase(
        collectives.step_collectives, config, mesh)}
  config = clip_config(settings["clip_preset"], batch_size=settings["clip_batch"])
  benchmarking.log(f"collectives: CLIP {config.model.preset} contrastive, batch "
                   f"{config.batch_size}")
  results["steps"]["clip_contrastive"] = {
      "preset": config.model.preset, "image_size": int(config.data.image_size),
      **benchmarking.run_phase(collectives.step_collectives, config, mesh)}
  return benchmarking.finish_suite(results)


def _run_on_fake_devices(settings: dict[str, Any], devices: int) -> dict[str, Any]:
  """`_run_here(settings)` in `python -m mmjax.projects.youtube8m.collectives_benchmark
  SETTINGS_JSON`, run from this checkout's root, with `devices` fake CPU devices (stderr passes
  through); returns its results (the last line of its stdout)."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
  benchmarking.log(f"collectives: {jax.device_count()} device(s) here; running on {devices} "
                   "fake CPU devices in a subprocess")
  result = subprocess.run([sys.executable, "-m", __spec__.name, json.dumps(settings)],
                          env=env, cwd=os.path.dirname(CHECKOUT_CONFIGS),
                          stdout=subprocess.PIPE, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"the collectives suite on {devices} fake CPU devices failed (exit "
                       f"status {result.returncode}; its error is above)")
  return json.loads(result.stdout.strip().splitlines()[-1])


def report(results: dict) -> str:
  """A header line and the human-readable table of `run_suite`'s results."""
  rows = []
  for name, r in results["steps"].items():
    shape = (f"T={r['frames']}" if "frames" in r else
             f"{r['preset']}, {r['image_size']} px")
    rows += [(f"{name} (B={r['batch_size']}, {shape}, {r['num_devices']} devices)",
              "parameters (bytes; per device)",
              f"{benchmarking.fmt(r['num_params'])} ({collectives.format_bytes(r['param_bytes'])}; "
              f"{collectives.format_bytes(r['param_bytes_per_device'])})"),
             ("", "compile (lower+compile)", benchmarking.fmt(r["compile_s"], " s"))]
    for kind in collectives.KINDS:
      if kind in r:
        c = r[kind]
        groups = ", ".join("-" if s is None else str(s) for s in c["group_sizes"])
        size, largest = (collectives.format_bytes(c[key]) for key in ("bytes", "largest_bytes"))
        rows.append(("", kind, f"{c['count']} ops, {size}/device; largest "
                     f"{c['largest_shape']} ({largest}); group sizes {groups}"))
  mesh = " x ".join(f"{axis} {size}" for axis, size in results["settings"]["mesh"])
  return benchmarking.report(f"mmjax collectives per train step ({mesh} mesh)", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'collectives/train_step/ytb8m_netvlad_late/all-gather/bytes'
  (`mmjax.benchmarking.to_records`; kwargs: its `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, sections=SECTIONS, **kwargs)


if __name__ == "__main__":
  print(json.dumps(_run_here(json.loads(sys.argv[1]))), flush=True)
