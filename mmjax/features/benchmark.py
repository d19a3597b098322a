"""Feature-extraction benchmark (`launch/benchmark.py --suite=features`).

Random weights and synthetic inputs: nothing is downloaded. `run_suite` returns the results
dict that `report` prints as a table and `records` turns into JSON records (shared helpers:
`mmjax.benchmarking`). What is timed:

* `hubert_forward_benchmark`: the HuBERT forward pass (mmjax.models.hubert, random weights at a
  `hubert.PRESETS` shape: 'large' = HuBERT-large, 24 layers of width 1024, 16 heads, FFN 4096,
  LayerNorm conv stack, pre-norm encoder; 'tiny' runs in seconds) jit-compiled on one device,
  on `batch_size` random utterances of `seconds` s at 16 kHz with a full attention mask, to
  every hidden state: compile time, then steady-state seconds per call -> utterances/s, audio
  seconds per second, and XLA's FLOPs per utterance.
* `clip_extraction_benchmark`: the whole CLIP frame extraction as launch/extract_features.py
  runs it (`mmjax.features.extract` with `ClipFrameFeatures`: threads reading `.npy` frames
  and CLIP-preprocessing them, the forward pass over all local devices, writing UTT and FRA
  files) on `num_clips` synthetic clips in a temporary folder, with a random CLIP of a
  `clip.PRESETS` shape. A first extraction of one batch compiles; the timed one extracts every
  clip into a fresh feature root -> clips/s and frames/s.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import benchmarking
from mmjax.benchmarking import fmt
from mmjax.features import ClipFrameFeatures, data_mesh, extract, sample_names
from mmjax.models import clip, hubert

# Units of this suite's results keys (None: a setting), see `mmjax.benchmarking.to_records`.
UNITS: dict[str, str | None] = {
    "seconds": None, "frames": None, "num_clips": None, "image_size": None,
    "first_call_s": "s", "call_s": "s", "call_min_s": "s",
    "utterances_per_s": "utterances/s", "audio_s_per_s": "audio s/s",
    "gflops_per_utterance": "GFLOP/utterance", "warmup_s": "s", "run_s": "s",
    "clips_per_s": "clips/s", "frames_per_s": "frames/s",
}
_SOURCE_FRAMES = 16  # frames stored per synthetic clip (F of them are sampled)


def hubert_forward_benchmark(preset: str = "large", *, batch_size: int = 8,
                             seconds: float = 10.0, steps: int = 3, warmup: int = 1,
                             seed: int = 0) -> dict[str, Any]:
  """Utterances/s of the HuBERT forward pass on one device (module docstring).

  Timed: compile_s (`lower(...).compile()`), first_call_s, then `warmup` untimed calls and
  `steps` calls each followed by block_until_ready; call_s is their mean, call_min_s the
  fastest; utterances_per_s = batch_size / call_s; audio_s_per_s = batch_size * seconds /
  call_s.

  Args:
    preset: a `hubert.PRESETS` name ('large', 'base', 'tiny').
    batch_size: utterances per call.
    seconds: the length of every utterance (16 kHz).
    steps: timed calls (>= 1).
    warmup: untimed calls after the first.
    seed: weights and waveforms.

  Returns:
    {'preset', 'batch_size', 'seconds', 'frames' (hidden-state rows per utterance), 'params',
    'init_s', 'compile_s', 'first_call_s', 'call_s', 'call_min_s', 'utterances_per_s',
    'audio_s_per_s'} and, where XLA reports them, 'gflops_per_utterance', 'tflops_per_s',
    'compiled_temp_mb'.
  """
  if preset not in hubert.PRESETS:
    raise ValueError(f"--hubert_preset={preset!r}; expected one of {sorted(hubert.PRESETS)}")
  model = hubert.HubertModel(hubert.PRESETS[preset])
  samples = int(round(seconds * 16000))
  if hubert.num_frames(model.config, samples) < 1:
    raise ValueError(f"--hubert_seconds={seconds} is shorter than one HuBERT frame")
  rng = np.random.default_rng(seed)
  values = jax.device_put(rng.normal(size=(batch_size, samples)).astype(np.float32))
  mask = jax.device_put(np.ones((batch_size, samples), np.int32))
  start = time.perf_counter()
  variables = hubert.init_params(model, seed)
  init_s = time.perf_counter() - start
  forward = jax.jit(lambda v, x, m: jnp.stack(model.apply(v, x, m)["hidden_states"]))
  compiled, compile_s = benchmarking.compile_timed(forward, variables, values, mask)
  _, _, first_s, times = benchmarking.time_steps(
      lambda carry, inputs: (carry, compiled(*inputs)), None, [(variables, values, mask)],
      steps=steps, warmup=warmup)
  call_s = float(np.mean(times))
  result = {"preset": preset, "batch_size": int(batch_size), "seconds": float(seconds),
            "frames": hubert.num_frames(model.config, samples),
            "params": int(sum(x.size for x in jax.tree.leaves(variables))), "init_s": init_s,
            "compile_s": compile_s, "first_call_s": first_s, "call_s": call_s,
            "call_min_s": float(np.min(times)), "utterances_per_s": batch_size / call_s,
            "audio_s_per_s": batch_size * seconds / call_s}
  cost = benchmarking.compiled_cost(compiled)
  if "flops_per_step" in cost:
    result["gflops_per_utterance"] = cost["flops_per_step"] / batch_size / 1e9
    result["tflops_per_s"] = cost["flops_per_step"] / call_s / 1e12
  if "compiled_temp_mb" in cost:
    result["compiled_temp_mb"] = cost["compiled_temp_mb"]
  return result


def _write_clips(directory: str, num_clips: int, size: tuple[int, int], seed: int) -> None:
  """`num_clips` clips of `_SOURCE_FRAMES` random uint8 frames [H, W, 3] as <name>.npy."""
  rng = np.random.default_rng(seed)
  for i in range(num_clips):
    np.save(os.path.join(directory, f"clip_{i:05d}.npy"),
            rng.integers(0, 256, (_SOURCE_FRAMES, *size, 3), dtype=np.uint8))


def clip_extraction_benchmark(preset: str = "ViT-B/32", *, num_clips: int = 32,
                              frames: int = 8, batch_size: int = 8, workers: int = 4,
                              seed: int = 0) -> dict[str, Any]:
  """Clips/s and frames/s of the CLIP frame extraction, end to end (module docstring).

  The synthetic clips hold 16 frames of S x 4S/3 pixels (S = the tower's image size), so each
  sampled frame is resized and cropped. Timed: warmup_s, the extraction of the first batch
  (compiling); run_s, the extraction of all `num_clips` clips into an empty feature root;
  clips_per_s = num_clips / run_s, frames_per_s = clips_per_s * frames.

  Args:
    preset: a `clip.PRESETS` name.
    num_clips: clips extracted in the timed run.
    frames: F, frames sampled per clip.
    batch_size: clips per batch (a multiple of the local devices).
    workers: threads reading and preprocessing clips.
    seed: weights and pixels.

  Returns:
    {'preset', 'num_clips', 'frames', 'batch_size', 'num_devices', 'image_size',
    'source_size', 'warmup_s', 'run_s', 'clips_per_s', 'frames_per_s'}.
  """
  model = clip.Clip(clip.get_config(preset))
  size = model.config.vision.image_size
  variables = clip.init_params(model, seed)
  mesh = data_mesh()
  with tempfile.TemporaryDirectory(prefix="mmjax_features_bench_") as directory:
    inputs = os.path.join(directory, "frames")
    os.makedirs(inputs)
    _write_clips(inputs, num_clips, (size, size * 4 // 3), seed)
    extractor = ClipFrameFeatures(model, variables, inputs, name="bench", num_frames=frames)
    names = sample_names(inputs, "frames")
    kwargs = dict(batch_size=batch_size, mesh=mesh, workers=workers, log_every=num_clips)
    start = time.perf_counter()
    extract(extractor, names[:batch_size], os.path.join(directory, "warmup"), **kwargs)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    extract(extractor, names, os.path.join(directory, "features"), **kwargs)
    run_s = time.perf_counter() - start
  return {"preset": preset, "num_clips": int(num_clips), "frames": int(frames),
          "batch_size": int(batch_size), "num_devices": mesh.size, "image_size": int(size),
          "source_size": f"{size}x{size * 4 // 3}", "warmup_s": warmup_s, "run_s": run_s,
          "clips_per_s": num_clips / run_s, "frames_per_s": num_clips * frames / run_s}


# -------------------------------------------------------------------------------------------
# The suite, its table and its records.


def run_suite(*, hubert_preset: str = "large", hubert_batch: int = 8,
              hubert_seconds: float = 10.0, steps: int = 3, warmup: int = 1,
              clip_preset: str = "ViT-B/32", clip_clips: int = 32, clip_frames: int = 8,
              clip_batch: int = 8) -> dict[str, Any]:
  """Both benchmarks; progress goes to stderr.

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'hubert' (`hubert_forward_benchmark`), 'clip_extraction' (`clip_extraction_benchmark`),
    each with its phase's 'peak_rss_mb', 'memory', 'load_average_end'.
  """
  results = benchmarking.start_suite({
      "hubert_preset": hubert_preset, "hubert_batch": hubert_batch,
      "hubert_seconds": hubert_seconds, "steps": steps, "warmup": warmup,
      "clip_preset": clip_preset, "clip_clips": clip_clips, "clip_frames": clip_frames,
      "clip_batch": clip_batch})
  benchmarking.log(f"HuBERT forward: {hubert_preset}, {hubert_batch} x {hubert_seconds} s")
  results["hubert"] = benchmarking.run_phase(
      hubert_forward_benchmark, hubert_preset, batch_size=hubert_batch, seconds=hubert_seconds,
      steps=steps, warmup=warmup)
  benchmarking.log(f"CLIP frame extraction: {clip_preset}, {clip_clips} clips x {clip_frames} "
                   "frames")
  results["clip_extraction"] = benchmarking.run_phase(
      clip_extraction_benchmark, clip_preset, num_clips=clip_clips, frames=clip_frames,
      batch_size=clip_batch)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the human-readable table of `run_suite`'s results."""
  h, c = results["hubert"], results["clip_extraction"]
  rows = [(f"HuBERT {h['preset']} forward (B={h['batch_size']} x {h['seconds']:g} s, "
           f"{h['frames']} frames)", "parameters", fmt(h["params"])),
          *benchmarking.timing_rows(h["compile_s"], h["first_call_s"], h["call_s"],
                                    h["call_min_s"], what="call"),
          ("", "throughput", f"{fmt(h['utterances_per_s'], ' utterances/s')} = "
           f"{fmt(h['audio_s_per_s'], ' s of audio/s')}")]
  if "gflops_per_utterance" in h:
    rows.append(("", "XLA GFLOPs/utterance; achieved",
                 f"{h['gflops_per_utterance']:.3g} GFLOP; {h['tflops_per_s']:.3g} TFLOP/s"))
  rows += [("", "process peak RSS in phase", fmt(h["peak_rss_mb"], " MB")),
           (f"CLIP {c['preset']} frame extraction ({c['num_clips']} clips x {c['frames']} "
            f"frames, B={c['batch_size']}, {c['num_devices']} device(s))", "first batch "
            "(compiles)", fmt(c["warmup_s"], " s")),
           ("", "all clips", fmt(c["run_s"], " s")),
           ("", "throughput", f"{fmt(c['clips_per_s'], ' clips/s')} = "
            f"{fmt(c['frames_per_s'], ' frames/s')}"),
           ("", "process peak RSS in phase", fmt(c["peak_rss_mb"], " MB"))]
  return benchmarking.report("mmjax feature-extraction benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'features/hubert/utterances_per_sec' (`mmjax.benchmarking.to_records`; kwargs: its
  `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
