"""The collectives in a compiled sharded step: which kinds, how many, how many bytes.

`compiled_collectives(compiled)` reads the optimized HLO of a compiled jax function
(`jax.jit(f).lower(...).compile().as_text()`: the program after XLA's SPMD partitioner and its
combiners) and sums its collective instructions per kind; `collectives_table` prints them. A
parameter that a sharding rule leaves replicated shows up as a bigger gradient all-reduce, one
that is resharded as a new all-gather or all-to-all, so a test that pins the table catches both
(tests/test_collectives.py).

What the numbers mean:

* count: collective instructions in the program text (after XLA's combiners, which merge many
  small all-reduces into one with a tuple result: that is one). An asynchronous pair
  (`all-gather-start` / `all-gather-done`, or a collective wrapped in `async-start` /
  `async-done`) counts once. An instruction inside a loop body counts once, not once per
  iteration.
* bytes: the size of each instruction's result buffer on one device (tuple results summed),
  from its HLO shape and element type. That is the gathered tensor for an all-gather, the
  reduced tensor (= its input) for an all-reduce, the output shard for a reduce-scatter. It is
  not the traffic on the wire: a ring all-reduce of N bytes over G devices sends about
  2 N (G - 1) / G bytes per device, an all-gather N (G - 1) / G.
* group_sizes: how many devices take part in each instruction (the replica group size; e.g.
  4 for the 'data' axis and 2 for the 'model' axis of a 4 x 2 mesh, 8 for both).

The second part compiles (never runs) the sharded train step of `mmjax.train.steps` for the
task a config names (`compile_train_step`); the third is the benchmark suite
`launch/benchmark.py --suite=collectives`, which prints the collectives of the YouTube-8M and
CLIP train steps on a 4 x 2 mesh (re-running itself with 8 fake CPU devices where fewer exist).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np

from mmjax import benchmarking, parallel
from mmjax.config_files import load_sibling
from mmjax.models import clip
from mmjax.tasks import get_task
from mmjax.train.steps import abstract_train_state, make_train_step
from mmjax.train.trainer import build_optimizer_for, check_batch_size

# XLA's collective opcodes; an asynchronous form adds '-start' / '-done' to the name.
KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "ragged-all-to-all",
         "collective-permute", "collective-broadcast")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_OPERAND = re.compile(r"%?([\w.\-]+)")
_OPCODE = re.compile(r"\s*([\w\-]+)\(")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_COMMENT = re.compile(r"/\*.*?\*/")
_EXPLICIT_GROUPS = re.compile(r"replica_groups=\{\{([^}]*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}")


def element_bits(dtype: str) -> int:
  """Bits of one element of an HLO element type ('f32' 32, 'bf16' 16, 'pred' 8 as stored,
  'f8e4m3fn' 8, 'c64' 64, 'token' 0, ...); ValueError for an unknown type."""
  if dtype == "pred":
    return 8
  if dtype in ("token", "opaque"):
    return 0
  match = re.fullmatch(r"(?:[suf]|bf|c)(\d+)|f(\d+)e\d+m\d+\w*", dtype)
  if not match:
    raise ValueError(f"unknown HLO element type {dtype!r}")
  return int(match.group(1) or match.group(2))


def shape_arrays(shape: str) -> list[tuple[str, int]]:
  """The arrays of an HLO shape with their bytes, e.g. 'f32[32,16]{1,0}' -> [('f32[32,16]',
  2048)]; a tuple '(f32[8]{0}, /*index=1*/bf16[2,3]{1,0})' -> [('f32[8]', 32), ('bf16[2,3]',
  12)]. Dynamic dimensions ('<=8') count at their bound."""
  arrays = []
  for dtype, dims in _ARRAY.findall(_COMMENT.sub("", shape)):
    sizes = [int(d.replace("<=", "")) for d in dims.split(",") if d.strip()]
    arrays.append((f"{dtype}[{dims}]", math.ceil(element_bits(dtype) * math.prod(sizes) / 8)))
  return arrays


def _split_shape(rest: str) -> tuple[str, str]:
  """(result shape, the text after it) of an instruction's right-hand side."""
  if not rest.startswith("("):
    shape, _, after = rest.partition(" ")
    return shape, after
  depth = 0
  for i, char in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0:
      return rest[:i + 1], rest[i + 1:]
  return rest, ""


def _group_size(attributes: str) -> int | None:
  """Devices per replica group: from 'replica_groups={{0,2,4,6},...}', the iota form
  '[2,4]<=[8]' or the mesh form "mesh['axis_0'=4,'axis_1'=2] {'axis_0'}"; None when absent
  (collective-permute) or empty (all devices)."""
  match = _EXPLICIT_GROUPS.search(attributes)
  if match:
    return len(match.group(1).split(","))
  match = _IOTA_GROUPS.search(attributes)
  if match:
    return int(match.group(2))
  match = _MESH_GROUPS.search(attributes)
  if match:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", match.group(1)))
    return math.prod(int(sizes[name]) for name in re.findall(r"'([^']+)'", match.group(2)))
  return None


def collective_ops(hlo_text: str) -> list[dict[str, Any]]:
  """Every collective instruction of an HLO module's text, in program order.

  Synchronous instructions and the '-done' half of asynchronous pairs are listed: the result
  is the '-done' one's (the collective's output), the replica groups the '-start' one's, so a
  pair counts once.

  Returns:
    [{'kind' (e.g. 'all-gather', without '-done'), 'arrays' (`shape_arrays` of the result:
    [(array shape, bytes on one device), ...], one per tuple element), 'bytes' (their sum),
    'group_size' (see `_group_size`)}, ...].
  """
  ops, started = [], {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    shape, after = _split_shape(line[match.end():])
    opcode = _OPCODE.match(after)
    if not opcode:
      continue
    kind = opcode.group(1)
    if kind.endswith("-start"):
      started[match.group(1)] = _group_size(after)
      continue
    group_size = _group_size(after)
    if kind.endswith("-done"):
      kind = kind.removesuffix("-done")
      operand = _OPERAND.match(after[opcode.end():])
      group_size = started.get(operand.group(1)) if operand else None
    if kind in KINDS:
      arrays = shape_arrays(shape)
      ops.append({"kind": kind, "arrays": arrays, "bytes": sum(b for _, b in arrays),
                  "group_size": group_size})
  return ops


def summarize(ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per-kind totals of `collective_ops`, in `KINDS` order (kinds that do not occur are left
  out): [{'kind', 'count' (instructions), 'bytes' (their results summed), 'largest_shape' and
  'largest_bytes' (the biggest single array in those results, e.g. 'f32[8192,16]'),
  'group_sizes' (sorted distinct sizes; None, listed last, for instructions without
  groups)}, ...]."""
  out = []
  for kind in KINDS:
    mine = [op for op in ops if op["kind"] == kind]
    if not mine:
      continue
    largest = max((array for op in mine for array in op["arrays"]), key=lambda a: a[1],
                  default=("", 0))
    sizes = {op["group_size"] for op in mine}
    out.append({"kind": kind, "count": len(mine), "bytes": sum(op["bytes"] for op in mine),
                "largest_shape": largest[0], "largest_bytes": largest[1],
                "group_sizes": sorted(sizes - {None}) + ([None] if None in sizes else [])})
  return out


def compiled_collectives(compiled) -> list[dict[str, Any]]:
  """Per-kind collectives of a compiled jax function (`jax.jit(f).lower(...).compile()`, or
  anything whose `as_text()` is an optimized HLO module): `summarize(collective_ops(text))`.
  See the module docstring for what count and bytes mean."""
  text = compiled.as_text()
  if not text:
    raise ValueError(f"{type(compiled).__name__}.as_text() returned no HLO text")
  return summarize(collective_ops(text))


def format_bytes(num_bytes: int) -> str:
  """'512 B', '2 KiB', '1.5 MiB', '0.977 GiB': binary units, 3 significant digits, the value
  below 1000."""
  value, unit = float(num_bytes), "B"
  for larger in ("KiB", "MiB", "GiB", "TiB"):
    if value < 1000:
      break
    value, unit = value / 1024, larger
  return f"{num_bytes} B" if unit == "B" else f"{value:.3g} {unit}"


def collectives_table(entries: Sequence[dict[str, Any]]) -> str:
  """`compiled_collectives`' entries as aligned text columns: kind, count, bytes (per device,
  summed), the largest single array and its bytes, the group sizes ('-': none, as for a
  collective-permute's source-target pairs). No collectives: one row '-'."""
  rows = [("kind", "count", "bytes/device", "largest", "group sizes")]
  for e in entries:
    rows.append((e["kind"], str(e["count"]), format_bytes(e["bytes"]),
                 f"{e['largest_shape']} ({format_bytes(e['largest_bytes'])})",
                 ", ".join("-" if s is None else str(s) for s in e["group_sizes"])))
  if len(rows) == 1:
    rows.append(("-", "0", "0 B", "", ""))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                   for row in rows)


# -------------------------------------------------------------------------------------------
# A config's sharded train step, compiled.


def compile_train_step(config, mesh_axes: Sequence[tuple[str, int]] | None = None, *,
                       compiler_options: dict[str, Any] | None = None
                       ) -> tuple[Any, dict[str, Any]]:
  """Compiles, without running it, the sharded train step of the task `config` names.

  The step is `mmjax.train.steps.make_train_step` for `get_task(config)` (its `prepare()` is not
  called: nothing is read or written) with the config's optimizer and `config.sharding_rules`,
  lowered for abstract inputs (the state's and `task.example_batch(config.batch_size)`'s
  shapes and dtypes, so nothing is allocated) and compiled.

  Args:
    config: the experiment config; not modified.
    mesh_axes: ((axis, size), ...) of the mesh; default `config.mesh`.
    compiler_options: XLA options for this compile (`Lowered.compile`), e.g.
      {'xla_backend_optimization_level': 0} for a faster CPU code generation.

  Returns:
    (compiled step, info): info is {'params': {'/'-joined path: (shape, PartitionSpec
    string)}, 'num_params', 'param_bytes' (all parameters), 'param_bytes_per_device' (their
    shards on one device), 'batch_size', 'num_devices', 'compile_s' (lower + compile)}.
  """
  mesh = parallel.make_mesh(mesh_axes or config.mesh)
  check_batch_size("batch_size", config.batch_size, mesh)
  task = get_task(config)
  tx = build_optimizer_for(config, task)
  state, shardings = abstract_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                       task.example_batch(config.batch_size))
  step = make_train_step(task, tx, mesh, shardings)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile(compiler_options)
  compile_s = time.perf_counter() - start
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  specs = jax.tree.leaves(shardings.params)
  return compiled, {
      "params": {parallel.path_to_str(path): (tuple(x.shape), str(sharding.spec))
                 for (path, x), sharding in zip(leaves, specs)},
      "num_params": int(sum(x.size for _, x in leaves)),
      "param_bytes": int(sum(x.size * x.dtype.itemsize for _, x in leaves)),
      "param_bytes_per_device": int(sum(
          math.prod(sharding.shard_shape(x.shape)) * x.dtype.itemsize
          for (_, x), sharding in zip(leaves, specs))),
      "batch_size": int(config.batch_size), "num_devices": int(mesh.size),
      "compile_s": compile_s}


# -------------------------------------------------------------------------------------------
# The suite (launch/benchmark.py --suite=collectives), its table and its records.

MESH = (("data", 4), ("model", 2))
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Units of this suite's results keys (None: a setting), see `mmjax.benchmarking.to_records`;
# batch_size, num_devices, compile_s and peak_rss_mb are in `mmjax.benchmarking.UNITS`.
UNITS: dict[str, str | None] = {
    "frames": None, "image_size": None, "num_params": "parameters", "param_bytes": "bytes",
    "param_bytes_per_device": "bytes", "count": "collectives", "bytes": "bytes",
    "largest_bytes": "bytes",
}
SECTIONS = {"steps": "train_step"}


def load_config(name: str, variants: str = ""):
  """configs/<name>.py of this checkout with `variants` (comma-separated)."""
  return load_sibling(os.path.join(CONFIGS, f"{name}.py"), name).get_config(variants)


def step_collectives(config, mesh_axes: Sequence[tuple[str, int]] = MESH) -> dict[str, Any]:
  """`compile_train_step(config, mesh_axes)` summarized: {'num_params', 'param_bytes',
  'param_bytes_per_device', 'batch_size', 'num_devices', 'compile_s', and per collective kind
  that occurs (e.g. 'all-reduce') {'count', 'bytes', 'largest_shape', 'largest_bytes',
  'group_sizes'} (`compiled_collectives`)}."""
  compiled, info = compile_train_step(config, mesh_axes)
  result = {key: value for key, value in info.items() if key != "params"}
  for entry in compiled_collectives(compiled):
    result[entry["kind"]] = {key: value for key, value in entry.items() if key != "kind"}
  return result


def youtube8m_config(model: str, *, batch_size: int, frames: int):
  """configs/ytb8m.py for one model ('transformer', 'netvlad', 'attention_rnn': late fusion;
  or a row '<family>_<fusion>'), with `batch_size` and data.max_frames = `frames`. A cm row's
  frozen correlation tower is only compiled (no run is loaded)."""
  row = model if model.endswith(("_early", "_late", "_cmg", "_cmc")) else f"{model}_late"
  config = load_config("ytb8m", row)
  config.batch_size = int(batch_size)
  config.data.max_frames = int(frames)
  return config


def clip_config(preset: str | None, *, batch_size: int):
  """configs/clip_pretrain.py (the contrastive train step) with `batch_size` and the CLIP
  `preset` and its image size (None: the config's, 'tiny')."""
  config = load_config("clip_pretrain")
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
        step_collectives, config, mesh)}
  config = clip_config(settings["clip_preset"], batch_size=settings["clip_batch"])
  benchmarking.log(f"collectives: CLIP {config.model.preset} contrastive, batch "
                   f"{config.batch_size}")
  results["steps"]["clip_contrastive"] = {
      "preset": config.model.preset, "image_size": int(config.data.image_size),
      **benchmarking.run_phase(step_collectives, config, mesh)}
  return benchmarking.finish_suite(results)


def _run_on_fake_devices(settings: dict[str, Any], devices: int) -> dict[str, Any]:
  """`_run_here(settings)` in `python -m mmjax.collectives SETTINGS_JSON`, run from this
  checkout's root, with `devices` fake CPU devices (stderr passes through); returns its results
  (the last line of its stdout)."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
  benchmarking.log(f"collectives: {jax.device_count()} device(s) here; running on {devices} "
                   "fake CPU devices in a subprocess")
  result = subprocess.run([sys.executable, "-m", "mmjax.collectives", json.dumps(settings)],
                          env=env, cwd=os.path.dirname(CONFIGS), stdout=subprocess.PIPE,
                          text=True, check=False)
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
              f"{benchmarking.fmt(r['num_params'])} ({format_bytes(r['param_bytes'])}; "
              f"{format_bytes(r['param_bytes_per_device'])})"),
             ("", "compile (lower+compile)", benchmarking.fmt(r["compile_s"], " s"))]
    for kind in KINDS:
      if kind in r:
        c = r[kind]
        groups = ", ".join("-" if s is None else str(s) for s in c["group_sizes"])
        rows.append(("", kind, f"{c['count']} ops, {format_bytes(c['bytes'])}/device; "
                     f"largest {c['largest_shape']} ({format_bytes(c['largest_bytes'])}); "
                     f"group sizes {groups}"))
  mesh = " x ".join(f"{axis} {size}" for axis, size in results["settings"]["mesh"])
  return benchmarking.report(f"mmjax collectives per train step ({mesh} mesh)", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'collectives/train_step/ytb8m_netvlad_late/all-gather/bytes'
  (`mmjax.benchmarking.to_records`; kwargs: its `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, sections=SECTIONS, **kwargs)


if __name__ == "__main__":
  print(json.dumps(_run_here(json.loads(sys.argv[1]))), flush=True)
