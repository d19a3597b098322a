"""CLIP measurements behind `launch/benchmark.py --suite=clip`: image tower and prompt tuning.

Like `mmjax.benchmarks` (whose compile / timing / memory helpers these reuse), each benchmark
returns a flat dict of numbers (plus a few strings) for a table and one JSON line. Random
weights and random pixels throughout: nothing is downloaded, read or written. What is timed:

* `image_tower_benchmark`: the CLIP image tower (`Clip.encode_image` -> embeds) jit-compiled
  on its own, as a forward pass and as forward + backward (the gradient of sum(embeds^2) with
  respect to every vision parameter): compile time, then steady-state seconds per call ->
  images/s, and XLA's FLOPs per image.
* `prompt_tuning_benchmark`: the real train step of the EmoVCLIP task (configs/emovclip.py:
  prompted CLIP, frames mean-pooled, class-name prompts through the text tower, cross-entropy,
  the config's optimizer with its frozen backbone) -> clips/s and frames/s.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import benchmarks
from mmjax import parallel
from mmjax.data import images
from mmjax.models import clip

_MODES = (("forward", "forward"), ("forward_backward", "forward + backward"))


def random_pixels(shape, rng: np.random.Generator) -> np.ndarray:
  """CLIP-normalized float32 pixels of `shape` [..., S, S, 3] from uniform random uint8 RGB."""
  return images.normalize(rng.integers(0, 256, shape, dtype=np.uint8))


# -------------------------------------------------------------------------------------------
# Image tower.


def _vision_functions(module: clip.Clip):
  """(forward, loss) of the image tower, both (vision, rest, pixel_values): `vision` the
  parameters that are differentiated, `rest` the others (logit_scale)."""
  def forward(vision, rest, pixel_values):
    return module.apply({"params": {**rest, **vision}}, pixel_values,
                        method=clip.Clip.encode_image)["embeds"]

  def loss(vision, rest, pixel_values):
    return jnp.sum(jnp.square(forward(vision, rest, pixel_values)))

  return forward, loss


def _time_call(jitted, args, *, images_per_call: int, steps: int, warmup: int
               ) -> dict[str, float]:
  """Compile time and steady-state seconds per call of `jitted(*args)`, -> images/s."""
  compiled, compile_s = benchmarks.compile_timed(jitted, *args)
  _, _, first_s, times = benchmarks.time_steps(
      lambda carry, inputs: (carry, compiled(*inputs)), None, [args], steps=steps,
      warmup=warmup)
  call_s = float(np.mean(times))
  out = {"compile_s": compile_s, "first_call_s": first_s, "call_s": call_s,
         "call_min_s": float(np.min(times)), "images_per_s": images_per_call / call_s}
  cost = benchmarks.compiled_cost(compiled)
  if "flops_per_step" in cost:
    out["gflops_per_image"] = cost["flops_per_step"] / images_per_call / 1e9
    out["tflops_per_s"] = cost["flops_per_step"] / call_s / 1e12
  if "compiled_temp_mb" in cost:
    out["compiled_temp_mb"] = cost["compiled_temp_mb"]
  return out


def image_tower_benchmark(preset: str = "ViT-B/32", *, batch_size: int = 64, steps: int = 3,
                          warmup: int = 1, seed: int = 0) -> dict[str, Any]:
  """Images/s of the CLIP image tower, forward and forward + backward, on one device.

  The tower (`Clip.encode_image`: patch embedding, pre-LayerNorm, encoder, post-LayerNorm of
  the class token, visual projection -> embeds [B, P]; no prompts) gets random weights
  (transformers' init) and one batch of random CLIP-normalized NHWC pixels
  [batch_size, S, S, 3], placed on the default device beforehand.

  Timed, for each mode ('forward': jit(embeds); 'forward_backward': jit(value_and_grad) of
  sum(embeds^2) with respect to the vision parameters):
    compile_s: `lower(...).compile()` (tracing, lowering, XLA compile).
    first_call_s: the first call of the compiled function (incl. block_until_ready).
    then `warmup` untimed calls, then `steps` calls each followed by `block_until_ready`;
    call_s is their mean, call_min_s the fastest; images_per_s = batch_size / call_s.

  Args:
    preset: a `mmjax.models.clip.PRESETS` name ('ViT-B/32', 'ViT-B/16', 'tiny').
    batch_size: images per call.
    steps: timed calls per mode (>= 1).
    warmup: untimed calls after the first.
    seed: weights and pixels.

  Returns:
    {'preset', 'batch_size', 'image_size', 'params' (vision tower incl. its projection),
    'init_s', 'forward': {...}, 'forward_backward': {...}}, each mode's dict holding
    'compile_s', 'first_call_s', 'call_s', 'call_min_s', 'images_per_s' and, where XLA
    reports them, 'gflops_per_image', 'tflops_per_s' (achieved), 'compiled_temp_mb'.
  """
  module = clip.Clip(clip.get_config(preset))
  size = module.config.vision.image_size
  pixels = jax.device_put(random_pixels((batch_size, size, size, 3),
                                        np.random.default_rng(seed)))
  start = time.perf_counter()
  params = jax.jit(lambda key: module.init(key, pixels[:1], method=clip.Clip.encode_image))(
      jax.random.PRNGKey(seed))["params"]
  jax.block_until_ready(params)
  init_s = time.perf_counter() - start
  rest = {"logit_scale": params["logit_scale"]}
  vision = {k: v for k, v in params.items() if k not in rest}
  result = {"preset": preset, "batch_size": int(batch_size), "image_size": int(size),
            "params": int(sum(x.size for x in jax.tree.leaves(vision))), "init_s": init_s}
  forward, loss = _vision_functions(module)
  for (mode, _), fn in zip(_MODES, (forward, jax.value_and_grad(loss))):
    result[mode] = _time_call(jax.jit(fn), (vision, rest, pixels), images_per_call=batch_size,
                              steps=steps, warmup=warmup)
  return result


# -------------------------------------------------------------------------------------------
# Prompt tuning.


def random_clip_batch(task, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch of `task.example_batch`'s shapes: random normalized pixels [B, T, S, S, 3],
  uniform random labels over the task's classes, weight 1."""
  batch = dict(task.example_batch(batch_size))
  batch["pixel_values"] = random_pixels(batch["pixel_values"].shape, rng)
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
  `mmjax.benchmarks.task_train_step_benchmark`.

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
  result, state = benchmarks.task_train_step_benchmark(
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
# The suite and its report.


def run_clip(prompt_config, *, preset: str = "ViT-B/32", batch_size: int = 64, steps: int = 3,
             warmup: int = 1, prompt_batch: int = 8, prompt_frames: int | None = None
             ) -> dict[str, Any]:
  """The image tower, then the prompt-tuning step; returns the results dict that
  `report_clip` formats. Progress goes to stderr.

  Args:
    prompt_config: the prompt-tuning task config (e.g. configs/emovclip.py:paper).
    preset: CLIP preset of the image-tower benchmark.
    batch_size: images per image-tower call.
    steps: timed calls of each of forward, forward + backward and the train step.
    warmup: untimed calls after the first, for each.
    prompt_batch: clips per train step.
    prompt_frames: frames per clip (None: the config's data.num_frames).
  """
  results = {"hardware": benchmarks.hardware_description(),
             "load_average_start": list(os.getloadavg()),
             "settings": {"preset": preset, "batch_size": batch_size, "steps": steps,
                          "warmup": warmup, "prompt_batch": prompt_batch,
                          "prompt_frames": prompt_frames}}
  benchmarks.log(f"hardware: {results['hardware']}")
  benchmarks.log(f"image tower: {preset}, batch {batch_size}")
  results["image_tower"] = benchmarks.run_phase(image_tower_benchmark, preset,
                                                batch_size=batch_size, steps=steps,
                                                warmup=warmup)
  benchmarks.log(f"prompt tuning: {prompt_config.task}, {prompt_batch} clips")
  results["prompt_tuning"] = benchmarks.run_phase(
      prompt_tuning_benchmark, prompt_config, batch_size=prompt_batch, steps=steps,
      warmup=warmup, frames=prompt_frames)
  results["memory"] = benchmarks.peak_memory()
  results["load_average_end"] = list(os.getloadavg())
  return results


def report_clip(results: dict) -> str:
  """A header line and the human-readable table of `run_clip`'s results."""
  header = (f"mmjax CLIP benchmark | {results['hardware']} | load average "
            f"{results['load_average_start'][0]:.2f} -> {results['load_average_end'][0]:.2f}")
  return header + "\n" + benchmarks.table(_rows(results))


def _rows(results: dict) -> list:
  fmt = benchmarks.fmt
  rows = [("benchmark", "measure", "value"), ("---", "---", "---")]
  t = results["image_tower"]
  for mode, label in _MODES:
    r = t[mode]
    rows += [(f"CLIP {t['preset']} image tower {label} (B={t['batch_size']}, "
              f"{t['image_size']} px)", "parameters", fmt(t["params"])),
             *benchmarks.timing_rows(r["compile_s"], r["first_call_s"], r["call_s"],
                                     r["call_min_s"], what="call"),
             ("", "throughput", fmt(r["images_per_s"], " images/s"))]
    if "gflops_per_image" in r:
      rows.append(("", "XLA GFLOPs/image; achieved",
                   f"{r['gflops_per_image']:.3g} GFLOP; {r['tflops_per_s']:.3g} TFLOP/s"))
  rows.append(("", "process peak RSS in phase", fmt(t["peak_rss_mb"], " MB")))
  p = results["prompt_tuning"]
  rows += [(f"prompt-tuning step: {p['preset']}, N={p['num_prompts']} prompts x "
            f"D={p['prompt_depth']} layers (B={p['batch_size']} clips, T={p['frames']})",
            "parameters (trainable / all)", f"{fmt(p['trainable_params'])} / {fmt(p['params'])}"),
           *benchmarks.timing_rows(p["compile_s"], p["first_step_s"], p["step_s"],
                                   p["step_min_s"]),
           ("", "throughput", f"{fmt(p['clips_per_s'], ' clips/s')} = "
            f"{fmt(p['frames_per_s'], ' frames/s')}")]
  if "tflops_per_s" in p:
    rows.append(("", "XLA FLOPs/step; achieved",
                 f"{p['flops_per_step'] / 1e12:.3g} TFLOP; {p['tflops_per_s']:.3g} TFLOP/s"))
  rows += [("", "process peak RSS in phase", fmt(p["peak_rss_mb"], " MB")),
           ("process", "peak RSS (whole run)",
            fmt(results["memory"]["process_peak_rss_mb"], " MB"))]
  if "device_peak_mb" in results["memory"]:
    rows.append(("", "device peak", fmt(results["memory"]["device_peak_mb"], " MB")))
  return rows
