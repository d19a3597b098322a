"""CLIP image-tower benchmark (`launch/benchmark.py --suite=clip`): the vision backbone that
contrastive pretraining (task 'clip_pretrain', `pretrain_task.py`) trains.

Random weights and random pixels: nothing is downloaded, read or written. `run_suite` returns
the results dict that `report` prints as a table and `records` turns into JSON records (shared
helpers: `mmjax.benchmarking`). What is timed:

* `image_tower_benchmark`: the CLIP image tower (`Clip.encode_image` -> embeds) jit-compiled
  on its own, as a forward pass and as forward + backward (the gradient of sum(embeds^2) with
  respect to every vision parameter): compile time, then steady-state seconds per call ->
  images/s, and XLA's FLOPs per image.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import benchmarking
from mmjax.benchmarking import fmt
from mmjax.models import clip

_MODES = (("forward", "forward"), ("forward_backward", "forward + backward"))

# Units of this suite's results keys (None: a setting), see `mmjax.benchmarking.to_records`.
UNITS: dict[str, str | None] = {
    "image_size": None, "first_call_s": "s", "call_s": "s", "call_min_s": "s",
    "images_per_s": "images/s", "gflops_per_image": "GFLOP/image",
}


def _vision_functions(module: clip.Clip):
  """(forward, loss) of the image tower, both (vision, rest, pixel_values [B, S, S, 3]):
  `vision` the parameters that are differentiated, `rest` the others (logit_scale); forward
  returns the embeds [B, P], loss the scalar sum(embeds^2)."""
  def forward(vision, rest, pixel_values):
    return module.apply({"params": {**rest, **vision}}, pixel_values,
                        method=clip.Clip.encode_image)["embeds"]

  def loss(vision, rest, pixel_values):
    return jnp.sum(jnp.square(forward(vision, rest, pixel_values)))

  return forward, loss


def _time_call(jitted, args, *, images_per_call: int, steps: int, warmup: int
               ) -> dict[str, float]:
  """Compile time and steady-state seconds per call of `jitted(*args)`, -> images/s."""
  compiled, compile_s = benchmarking.compile_timed(jitted, *args)
  _, _, first_s, times = benchmarking.time_steps(
      lambda carry, inputs: (carry, compiled(*inputs)), None, [args], steps=steps,
      warmup=warmup)
  call_s = float(np.mean(times))
  out = {"compile_s": compile_s, "first_call_s": first_s, "call_s": call_s,
         "call_min_s": float(np.min(times)), "images_per_s": images_per_call / call_s}
  cost = benchmarking.compiled_cost(compiled)
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
  pixels = jax.device_put(benchmarking.random_pixels((batch_size, size, size, 3),
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
# The suite, its table and its records.


def run_suite(*, preset: str = "ViT-B/32", batch_size: int = 64, steps: int = 3,
              warmup: int = 1) -> dict[str, Any]:
  """The image-tower benchmark; progress goes to stderr.

  Args:
    preset: CLIP preset of the image tower.
    batch_size: images per call.
    steps: timed calls of each of forward and forward + backward.
    warmup: untimed calls after the first, for each.

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'image_tower' (`image_tower_benchmark` and its phase's 'peak_rss_mb'), 'memory',
    'load_average_end'.
  """
  results = benchmarking.start_suite({"preset": preset, "batch_size": batch_size,
                                      "steps": steps, "warmup": warmup})
  benchmarking.log(f"image tower: {preset}, batch {batch_size}")
  results["image_tower"] = benchmarking.run_phase(image_tower_benchmark, preset,
                                                  batch_size=batch_size, steps=steps,
                                                  warmup=warmup)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the human-readable table of `run_suite`'s results."""
  rows = []
  t = results["image_tower"]
  for mode, label in _MODES:
    r = t[mode]
    rows += [(f"CLIP {t['preset']} image tower {label} (B={t['batch_size']}, "
              f"{t['image_size']} px)", "parameters", fmt(t["params"])),
             *benchmarking.timing_rows(r["compile_s"], r["first_call_s"], r["call_s"],
                                       r["call_min_s"], what="call"),
             ("", "throughput", fmt(r["images_per_s"], " images/s"))]
    if "gflops_per_image" in r:
      rows.append(("", "XLA GFLOPs/image; achieved",
                   f"{r['gflops_per_image']:.3g} GFLOP; {r['tflops_per_s']:.3g} TFLOP/s"))
  rows.append(("", "process peak RSS in phase", fmt(t["peak_rss_mb"], " MB")))
  return benchmarking.report("mmjax CLIP benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'clip/image_tower/forward/images_per_sec' (`mmjax.benchmarking.to_records`; kwargs: its
  `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
