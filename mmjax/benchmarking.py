"""What every benchmark suite shares: hardware, memory, compile / step timing, tables, records.

The suites live in the projects (`mmjax/projects/<system>/benchmark.py`) and `launch/benchmark.py`
runs them; this module imports no project. A suite returns a results dict made by
`start_suite` ... `finish_suite`: {'hardware', 'load_average_start', 'settings', <benchmark>:
{numbers and a few strings, possibly nested}, ..., 'memory', 'load_average_end'}; `report`
formats it as a table, `to_records` as JSON records (one per measurement).

What the shared pieces time:

* `compile_timed`: `jitted.lower(*args).compile()` (tracing, lowering, XLA compile).
* `time_steps`: the first call, `warmup` untimed calls, then `steps` calls each ended by
  `block_until_ready` (steady-state seconds per call).
* `task_train_step_benchmark`: the sharded train step of `mmjax.train.steps` for the task a
  config names, on random batches: init, compile, first step, steady steps -> examples/s, and
  XLA's FLOPs per step (`compiled_cost`).
* `run_phase`: the peak RSS of one benchmark (`reset_peak_rss` before, `peak_memory` after).

Memory is in MiB (2**20 bytes) throughout: the results' '*_mb' keys, the tables' 'MB' and the
records' 'MiB'.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from mmjax import parallel
from mmjax.data import images
from mmjax.tasks import get_task
from mmjax.train.steps import create_train_state, make_train_step, step_compiler_options
from mmjax.train.trainer import build_optimizer_for, check_batch_size

MB = 2.0**20

# Unit of each results key the shared pieces produce (None: a setting or a sanity value, not a
# measurement). Suites add their own keys' units (`to_records(..., units=...)`).
UNITS: dict[str, str | None] = {
    # task_train_step_benchmark
    "batch_size": None, "num_devices": None, "final_loss": None, "params": "parameters",
    "init_s": "s", "compile_s": "s", "first_step_s": "s", "step_s": "s", "step_min_s": "s",
    "examples_per_s": "examples/s", "tflops_per_s": "TFLOP/s",
    # compiled_cost
    "flops_per_step": "FLOP", "bytes_accessed_per_step": "bytes", "compiled_temp_mb": "MiB",
    "compiled_argument_mb": "MiB", "compiled_output_mb": "MiB", "compiled_alias_mb": "MiB",
    # run_phase, peak_memory
    "peak_rss_mb": "MiB", "process_peak_rss_mb": "MiB", "device_peak_mb": "MiB",
    # resource_usage
    "user_cpu_s": "s", "sys_cpu_s": "s", "minor_page_faults": "faults",
    "major_page_faults": "faults", "voluntary_context_switches": "switches",
    "involuntary_context_switches": "switches",
}
_NOT_MEASURED = ("hardware", "settings", "load_average_start", "load_average_end")
LOAD_AVERAGE_UNIT = "processes"  # the 1-minute load average: mean runnable processes


def log(message: str) -> None:
  """Progress line on stderr (stdout holds the table and the JSON line)."""
  print(message, file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------
# Hardware and memory.


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def _total_ram_gib() -> float | None:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2.0**30
  except (ValueError, OSError, AttributeError):
    return None


def hardware_description() -> str:
  """One line describing the machine the numbers were measured on.

  Returns:
    e.g. 'cpu (cpu) x1 | CPU: AMD EPYC, 2 cores, 23.4 GiB RAM | jax 0.10.2': the JAX platform,
    device kind and device count, the CPU model (from /proc/cpuinfo), the cores available to
    this process, the RAM and the jax version.
  """
  devices = jax.devices()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  ram = _total_ram_gib()
  ram_text = f", {ram:.1f} GiB RAM" if ram else ""
  return (f"{devices[0].platform} ({devices[0].device_kind}) x{len(devices)} | CPU: "
          f"{_cpu_model()}, {cores} cores{ram_text} | jax {jax.__version__}")


_USAGE_FIELDS = {"user_cpu_s": "ru_utime", "sys_cpu_s": "ru_stime",
                 "minor_page_faults": "ru_minflt", "major_page_faults": "ru_majflt",
                 "voluntary_context_switches": "ru_nvcsw",
                 "involuntary_context_switches": "ru_nivcsw"}


def resource_usage() -> dict[str, float]:
  """This process's resource use so far, all threads (getrusage): 'user_cpu_s', 'sys_cpu_s',
  'minor_page_faults', 'major_page_faults', 'voluntary_context_switches',
  'involuntary_context_switches'."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return {key: float(getattr(usage, field)) for key, field in _USAGE_FIELDS.items()}


def usage_since(start: Mapping[str, float], per: int = 1) -> dict[str, float]:
  """`resource_usage()` minus `start` (an earlier `resource_usage()`), divided by `per` (e.g.
  the steps in between)."""
  return {key: (value - start[key]) / per for key, value in resource_usage().items()}


def children_cpu_seconds() -> dict[int, tuple[float, float]]:
  """{pid: (user, system) CPU seconds so far} of this process's live multiprocessing children
  (e.g. input reader workers), from /proc/<pid>/stat; {} where that cannot be read (not
  Linux). getrusage counts children only once they have exited and been waited for."""
  ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
  out = {}
  for child in multiprocessing.active_children():
    try:
      with open(f"/proc/{child.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      out[child.pid] = (int(fields[11]) / ticks, int(fields[12]) / ticks)  # utime, stime
    except (OSError, ValueError, IndexError):
      continue
  return out


def children_usage_since(start: Mapping[int, tuple[float, float]]) -> dict[str, float]:
  """'user_cpu_s' and 'sys_cpu_s' of the children in `start` (a `children_cpu_seconds()`)
  since then, summed over those still alive."""
  now = children_cpu_seconds()
  pids = [pid for pid in start if pid in now]
  return {"user_cpu_s": sum(now[p][0] - start[p][0] for p in pids),
          "sys_cpu_s": sum(now[p][1] - start[p][1] for p in pids)}


_peak_before_reset = 0  # bytes: the largest peak RSS seen by `reset_peak_rss`


def _ru_maxrss_bytes() -> int:
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return maxrss * (1 if platform.system() == "Darwin" else 1024)  # bytes on macOS, else KiB


def _vm_hwm_bytes() -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS counter of this process (VmHWM), where Linux allows it.

  The peak so far is remembered, so `peak_memory()['process_peak_rss_mb']` stays the
  lifetime peak (on Linux the reset also lowers `ru_maxrss`).

  Returns:
    True if it was reset (then `peak_memory()['peak_rss_mb']` covers only what ran since).
  """
  global _peak_before_reset
  _peak_before_reset = max(_peak_before_reset, _ru_maxrss_bytes(), _vm_hwm_bytes() or 0)
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_memory() -> dict[str, float]:
  """Peak host and device memory of this process, in MiB.

  Returns:
    'process_peak_rss_mb': the peak over the whole process lifetime
      (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, and the peaks seen before any
      `reset_peak_rss()`);
    'peak_rss_mb': the kernel's VmHWM, i.e. the peak since the last `reset_peak_rss()` (equal
      to the lifetime peak where it cannot be reset or read);
    'device_peak_mb': on GPU/TPU, the largest `device.memory_stats()['peak_bytes_in_use']`
      over the local devices (absent where the backend has no memory stats, e.g. CPU).
  """
  maxrss = _ru_maxrss_bytes()
  hwm = _vm_hwm_bytes()
  lifetime = max(maxrss, hwm or 0, _peak_before_reset)
  out = {"process_peak_rss_mb": lifetime / MB, "peak_rss_mb": (hwm if hwm else maxrss) / MB}
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(stats["peak_bytes_in_use"])
  if peaks:
    out["device_peak_mb"] = max(peaks) / MB
  return out


def run_phase(fn: Callable, *args, **kwargs):
  """`fn(*args, **kwargs)` with the peak RSS reset before; adds 'peak_rss_mb' (the process
  peak during the call, see `peak_memory`) to its result dict (None passes through)."""
  reset_peak_rss()
  out = fn(*args, **kwargs)
  if out is not None:
    out["peak_rss_mb"] = peak_memory()["peak_rss_mb"]
  return out


# -------------------------------------------------------------------------------------------
# Compile and step timing.


def compiled_cost(compiled) -> dict[str, float]:
  """XLA's cost and memory analysis of a compiled function, where the backend reports them.

  Returns:
    'flops_per_step' and 'bytes_accessed_per_step' (per call of `compiled`),
    'compiled_temp_mb', 'compiled_argument_mb', 'compiled_output_mb' and 'compiled_alias_mb'
    (MiB: XLA's temporaries, arguments, outputs, and the outputs that reuse donated argument
    buffers); keys the backend does not report are absent.
  """
  out = {}
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost:
      if cost.get("flops", 0) > 0:
        out["flops_per_step"] = float(cost["flops"])
      if cost.get("bytes accessed", 0) > 0:
        out["bytes_accessed_per_step"] = float(cost["bytes accessed"])
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    mem = compiled.memory_analysis()
    if mem is not None:
      out["compiled_temp_mb"] = mem.temp_size_in_bytes / MB
      out["compiled_argument_mb"] = mem.argument_size_in_bytes / MB
      out["compiled_output_mb"] = mem.output_size_in_bytes / MB
      out["compiled_alias_mb"] = mem.alias_size_in_bytes / MB
  except Exception:  # pylint: disable=broad-except
    pass
  return out


def compile_timed(jitted, *args) -> tuple[Any, float]:
  """`jitted.lower(*args).compile()` (tracing, lowering, XLA compile) and its seconds."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_steps(step, carry, inputs: Sequence, *, steps: int, warmup: int
               ) -> tuple[Any, Any, float, list[float]]:
  """Runs `carry, outputs = step(carry, inputs[k % len(inputs)])` for k = 0, 1, ...

  Call 0 is timed on its own (first_s), then `warmup` untimed calls, then `steps` calls each
  timed to its `block_until_ready` on (carry, outputs).

  Args:
    step: (carry, input) -> (carry, outputs), e.g. a compiled train step (state, batch) ->
      (state, metrics); a stateless function can pass its carry through unchanged.
    carry: the initial carry (e.g. the train state; donated steps consume it).
    inputs: inputs cycled through (already on the devices: transfers are not timed).
    steps: timed calls (>= 1).
    warmup: untimed calls after the first.

  Returns:
    (final carry, last outputs, first_s, the `steps` timed seconds).
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  start = time.perf_counter()
  carry, outputs = step(carry, inputs[0])
  jax.block_until_ready((carry, outputs))
  first_s = time.perf_counter() - start
  for i in range(warmup):
    carry, outputs = step(carry, inputs[(i + 1) % len(inputs)])
  jax.block_until_ready((carry, outputs))
  times = []
  for i in range(steps):
    start = time.perf_counter()
    carry, outputs = step(carry, inputs[(warmup + 1 + i) % len(inputs)])
    jax.block_until_ready((carry, outputs))
    times.append(time.perf_counter() - start)
  return carry, outputs, first_s, times


def task_train_step_benchmark(config, make_batch, *, batch_size: int, steps: int,
                              warmup: int = 1, num_batches: int = 2
                              ) -> tuple[dict[str, Any], Any]:
  """Times the sharded train step of the task `config` names, on random batches.

  Builds the task (`get_task(config)`; its `prepare()` is not called, so no data is read or
  written), the optimizer (`build_optimizer_for(config, task)`), a mesh from `config.mesh`
  over all devices and the train state and step of `mmjax.train.steps`. `num_batches` batches
  from `make_batch` are placed on the devices beforehand and cycled.

  Timed:
    init_s: creating the sharded train state (includes compiling the initializer).
    compile_s: `train_step.lower(state, batch).compile()`: tracing, lowering, XLA compile.
    first_step_s: the first call of the compiled step (incl. block_until_ready).
    then `warmup` untimed steps, then `steps` steps each followed by `block_until_ready` on
    the new state; step_s is their mean, step_min_s the fastest; examples_per_s is
    batch_size / step_s. Host-to-device transfer of batches is not timed.

  Args:
    config: the experiment config, with config.batch_size = `batch_size`; not modified.
    make_batch: (task, local batch size, np.random.Generator) -> numpy batch in the task's
      format, e.g. {'pixel_values': [B, T, S, S, 3], 'label': [B], 'weight': [B]}.
    batch_size: global batch B (divisible by the mesh's data axis).
    steps: timed steps (>= 1).
    warmup: untimed steps after the first one.
    num_batches: distinct random batches cycled through.

  Returns:
    (result, final train state): result is {'batch_size', 'num_devices', 'params', 'init_s',
    'compile_s', 'first_step_s', 'step_s', 'step_min_s', 'examples_per_s', 'final_loss',
    'compiler_options' (text: the task's XLA options the step was compiled with)} plus,
    where XLA reports them, 'flops_per_step', 'bytes_accessed_per_step', 'compiled_temp_mb',
    'compiled_argument_mb', and 'tflops_per_s' (flops_per_step / step_s / 1e12).
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  mesh = parallel.make_mesh(config.mesh)
  check_batch_size("batch_size", batch_size, mesh)
  task = get_task(config)
  tx = build_optimizer_for(config, task)

  start = time.perf_counter()
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - start
  num_params = int(sum(x.size for x in jax.tree.leaves(state.params)))

  rng = np.random.default_rng(config.seed)
  local = batch_size // jax.process_count()
  batches = [parallel.global_batch(make_batch(task, local, rng), mesh)
             for _ in range(max(1, num_batches))]
  jax.block_until_ready(batches)

  train_step = make_train_step(task, tx, mesh, shardings)
  compiled, compile_s = compile_timed(train_step, state, batches[0])
  state, step_metrics, first_step_s, times = time_steps(compiled, state, batches, steps=steps,
                                                        warmup=warmup)
  step_s = float(np.mean(times))
  result = {
      "batch_size": int(batch_size), "num_devices": jax.device_count(), "params": num_params,
      "init_s": init_s, "compile_s": compile_s, "first_step_s": first_step_s, "step_s": step_s,
      "step_min_s": float(np.min(times)), "examples_per_s": batch_size / step_s,
      "final_loss": float(step_metrics["loss"]),
      "compiler_options": ", ".join(f"{k}={v!r}" for k, v in sorted(
          step_compiler_options(task, mesh).items())) or "XLA's defaults",
  }
  result.update(compiled_cost(compiled))
  if "flops_per_step" in result:
    result["tflops_per_s"] = result["flops_per_step"] / step_s / 1e12
  return result, state


def random_pixels(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
  """CLIP-normalized float32 pixels of `shape` [..., S, S, 3] from uniform random uint8 RGB."""
  return images.normalize(rng.integers(0, 256, shape, dtype=np.uint8))


# -------------------------------------------------------------------------------------------
# Suites and their tables.


def start_suite(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The results dict a suite starts with: {'hardware', 'load_average_start', 'settings'}
  (the hardware is logged); settings gets 'glibc_tunables' (GLIBC_TUNABLES, `mmjax.hostmem`;
  '' when unset), which the report's header shows."""
  results = {"hardware": hardware_description(), "load_average_start": list(os.getloadavg()),
             "settings": {**settings, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}}
  log(f"hardware: {results['hardware']}")
  return results


def finish_suite(results: dict[str, Any]) -> dict[str, Any]:
  """Adds 'memory' (`peak_memory()`) and 'load_average_end' to a suite's results; returns
  them."""
  results["memory"] = peak_memory()
  results["load_average_end"] = list(os.getloadavg())
  return results


def fmt(value, unit: str = "") -> str:
  """A number for the table: ints with thousands separators, floats to 3 significant digits
  (below 100) or whole (from 100); anything else as str."""
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, int):
    return f"{value:,}{unit}"
  if isinstance(value, float):
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return text + unit
  return str(value) + unit


def table(rows: Sequence[Sequence[Any]]) -> str:
  """Rows of 3 cells as left-aligned columns."""
  widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
  lines = []
  for row in rows:
    lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
  return "\n".join(lines)


def timing_rows(compile_s: float, first_s: float, mean_s: float, min_s: float, *,
                what: str = "step") -> list:
  """Table rows (measure, value under an empty benchmark cell) of a compiled function:
  compile, first `what`, `what` (mean / min)."""
  return [("", "compile (lower+compile)", fmt(compile_s, " s")),
          ("", f"first {what}", fmt(first_s, " s")),
          ("", f"{what} (mean / min)", f"{fmt(mean_s, ' s')} / {fmt(min_s, ' s')}")]


def flops_rows(result: Mapping[str, Any]) -> list:
  """The 'XLA FLOPs/step; achieved' row of a `task_train_step_benchmark` result (none where
  XLA reported no FLOPs)."""
  if "tflops_per_s" not in result:
    return []
  return [("", "XLA FLOPs/step; achieved", f"{result['flops_per_step'] / 1e12:.3g} TFLOP; "
           f"{result['tflops_per_s']:.3g} TFLOP/s")]


def compiled_memory_rows(result: Mapping[str, Any]) -> list:
  """The 'XLA memory' row of a `task_train_step_benchmark` result: arguments, outputs (of which
  aliased to donated arguments) and temporaries; none where XLA reported no memory analysis."""
  if "compiled_temp_mb" not in result:
    return []
  return [("", "XLA memory: args / outputs (aliased) / temps",
           f"{fmt(result['compiled_argument_mb'], ' MB')} / "
           f"{fmt(result['compiled_output_mb'], ' MB')} "
           f"({fmt(result['compiled_alias_mb'], ' MB')}) / "
           f"{fmt(result['compiled_temp_mb'], ' MB')}")]


def report(title: str, results: Mapping[str, Any], rows: Sequence) -> str:
  """A header line (title, hardware, load average at start -> end) and the table: column
  titles, the suite's `rows`, then the whole run's memory (from `finish_suite`)."""
  tunables = results["settings"].get("glibc_tunables")
  tunables_text = f" | GLIBC_TUNABLES={tunables}" if tunables else ""
  header = (f"{title} | {results['hardware']}{tunables_text} | load average "
            f"{results['load_average_start'][0]:.2f} -> {results['load_average_end'][0]:.2f}")
  memory = results["memory"]
  rows = [("benchmark", "measure", "value"), ("---", "---", "---"), *rows,
          ("process", "peak RSS (whole run)", fmt(memory["process_peak_rss_mb"], " MB"))]
  if "device_peak_mb" in memory:
    rows.append(("", "device peak", fmt(memory["device_peak_mb"], " MB")))
  return header + "\n" + table(rows)


# -------------------------------------------------------------------------------------------
# JSON records.


def versions() -> dict[str, str]:
  """Versions of Python and the libraries behind the numbers: jax, jaxlib, flax, optax, numpy,
  and tensorflow / torch only where this process has imported them."""
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow", "torch"):
    module = sys.modules.get(name)
    if name in ("tensorflow", "torch") and module is None:
      continue
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
      try:
        version = importlib.metadata.version(name)
      except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    out[name] = version
  return out


def git_commit(directory: str | None = None) -> str:
  """`git rev-parse HEAD` of the checkout whose top level is `directory` (default: the folder
  holding the mmjax package); 'unknown' when it is not one or git fails (never raises)."""
  directory = directory or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    result = subprocess.run(["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"],
                            capture_output=True, text=True, timeout=10, check=False)
    top, commit = result.stdout.splitlines()
    if result.returncode == 0 and os.path.samefile(top, directory):
      return commit
  except Exception:  # pylint: disable=broad-except
    pass
  return "unknown"


def utc_timestamp() -> str:
  """Now, e.g. '2025-01-31T12:00:00+00:00' (ISO 8601, UTC, whole seconds)."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _measure_name(key: str) -> str:
  """Results key -> record name part: a trailing '_s' (seconds) becomes '_sec'."""
  return key[:-2] + "_sec" if key.endswith("_s") else key


def to_records(suite: str, results: Mapping[str, Any],
               units: Mapping[str, str | None] | None = None, *,
               sections: Mapping[str, str] | None = None,
               timestamp: str | None = None) -> list[dict[str, Any]]:
  """One JSON record per measurement in a suite's results.

  Every int or float (not bool) under the results, outside 'hardware' and 'settings', is
  looked up by its key in `units` (then `UNITS`): a unit makes it a record; None marks a
  setting or sanity value (no record). The 1-minute load averages at start and end are records
  too. Non-finite values are left out (logged).

  Record: {'name': '<suite>/<section>/.../<measure>', e.g.
  'youtube8m/train_step/transformer/examples_per_sec' (the results path, with sections renamed
  by `sections` and a measure key's trailing '_s' written '_sec'), 'unit' (e.g. 'examples/s',
  's', 'MiB', 'FLOP'), 'value' (int or float), 'hardware' (`hardware_description`),
  'versions' (`versions()`), 'commit' (`git_commit()`), 'suite', 'timestamp' (`utc_timestamp`
  unless given: pass one per run so that a run's records share it)}.

  Args:
    suite: the suite's name (the first part of every name).
    results: the suite's results (`start_suite` ... `finish_suite`).
    units: units of the suite's own keys, over `UNITS`.
    sections: record names of results sections (e.g. {'train': 'train_step'}).
    timestamp: the records' timestamp.

  Returns:
    The records, in the results' order; names are unique.

  Raises:
    ValueError: a numeric key with no entry in `units` or `UNITS` (declare its unit, or None).
  """
  units = {**UNITS, **(units or {})}
  sections = sections or {}
  context = {"hardware": results["hardware"], "versions": versions(), "commit": git_commit(),
             "suite": suite, "timestamp": timestamp or utc_timestamp()}
  records = []

  def add(path: Sequence[str], unit: str, value) -> None:
    if not math.isfinite(value):
      log(f"records: {'/'.join(path)} = {value} left out (not finite)")
      return
    records.append({"name": "/".join([suite, *path]), "unit": unit, "value": value, **context})

  def walk(tree: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for key, value in tree.items():
      if isinstance(value, Mapping):
        walk(value, path + (sections.get(key, key),))
      elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if key not in units:
          raise ValueError(f"results key {'/'.join(path + (key,))!r} of suite {suite!r} has no "
                           "unit: add it to the suite's units (None: not a measurement)")
        if units[key] is not None:
          add(path + (_measure_name(key),), units[key], value)

  walk({k: v for k, v in results.items() if k not in _NOT_MEASURED}, ())
  for key in ("load_average_start", "load_average_end"):
    if results.get(key):
      add((key,), LOAD_AVERAGE_UNIT, float(results[key][0]))
  names = [record["name"] for record in records]
  if len(set(names)) != len(names):
    raise ValueError(f"record names repeat in suite {suite!r}: {sorted(names)}")
  return records


def append_json_lines(path: str, records: Sequence[Mapping[str, Any]]) -> None:
  """Appends `records` to the file `path`, one JSON object per line (JSON Lines), creating
  the file and its parent folders if needed."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, sort_keys=True) + "\n")
