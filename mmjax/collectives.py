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
task a config names (`compile_train_step`) and summarizes its collectives (`step_collectives`).
The benchmark suite `launch/benchmark.py --suite=collectives`, which names the projects'
configs, is `mmjax/projects/youtube8m/collectives_benchmark.py`.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Sequence

import jax
import numpy as np

from mmjax import parallel
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


def step_collectives(config, mesh_axes: Sequence[tuple[str, int]] | None = None) -> dict[str, Any]:
  """`compile_train_step(config, mesh_axes)` summarized: {'num_params', 'param_bytes',
  'param_bytes_per_device', 'batch_size', 'num_devices', 'compile_s', and per collective kind
  that occurs (e.g. 'all-reduce') {'count', 'bytes', 'largest_shape', 'largest_bytes',
  'group_sizes'} (`compiled_collectives`)}."""
  compiled, info = compile_train_step(config, mesh_axes)
  result = {key: value for key, value in info.items() if key != "params"}
  for entry in compiled_collectives(compiled):
    result[entry["kind"]] = {key: value for key, value in entry.items() if key != "kind"}
  return result
