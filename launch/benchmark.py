"""Benchmarks at the paper's shapes: train step, input pipeline (vs. the TF starter), metrics.

  python launch/benchmark.py --config=configs/ytb8m.py          # batch 128, 300 frames
  python launch/benchmark.py --config=configs/ytb8m.py:tiny --batch_size=4 --frames=8 \
      --steps=2 --metric_videos=500 --metric_classes=50 --skip_tf  # seconds

Prints a table, then one JSON line with every number and the hardware description. The input
pipeline reads the config's data (the synthetic set, written once to $MMJAX_CACHE, when
data.train_pattern is empty). The TensorFlow comparison needs `pip install tensorflow-cpu`
(or `pip install -e .[bench]`); TensorFlow is imported last, after the JAX measurements. What
each number times: see mmjax/benchmarks.py.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                lock_config=True)
flags.DEFINE_integer("batch_size", 128, "Global batch for the train step and the pipeline.")
flags.DEFINE_integer("frames", 300, "Frames per video (data.max_frames).")
flags.DEFINE_integer("steps", 5, "Timed train steps per model.")
flags.DEFINE_integer("warmup", 1, "Untimed train steps after the first (compiled) one.")
flags.DEFINE_integer("pipeline_batches", 40, "Timed batches of the grain input pipeline.")
flags.DEFINE_integer("tf_records", 0, "Records read by the TF starter reader (0: "
                     "pipeline_batches * batch_size).")
flags.DEFINE_integer("metric_videos", 128000, "Videos fed to the metrics.")
flags.DEFINE_integer("metric_classes", 3862, "Classes of the metrics' scores.")
flags.DEFINE_integer("metric_batch", 1024, "Videos per metrics update.")
flags.DEFINE_string("models", "transformer,netvlad", "Comma-separated late-fusion models.")
flags.DEFINE_bool("skip_tf", False, "Skip the TensorFlow starter-code comparison.")
flags.mark_flag_as_required("config")


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _fmt(value, unit: str = "") -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, int):
    return f"{value:,}{unit}"
  if isinstance(value, float):
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return text + unit
  return str(value) + unit


def _table(rows) -> str:
  widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
  lines = []
  for row in rows:
    lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
  return "\n".join(lines)


def _rows(results: dict) -> list:
  rows = [("benchmark", "measure", "value"), ("---", "---", "---")]
  for name, r in results["train"].items():
    section = f"train step: {name} (late, B={r['batch_size']}, T={r['frames']})"
    rows += [(section, "parameters", _fmt(r["params"])),
             ("", "compile (lower+compile)", _fmt(r["compile_s"], " s")),
             ("", "first step", _fmt(r["first_step_s"], " s")),
             ("", "step (mean / min)",
              f"{_fmt(r['step_s'], ' s')} / {_fmt(r['step_min_s'], ' s')}"),
             ("", "throughput", _fmt(r["examples_per_s"], " examples/s"))]
    if "flops_per_step" in r:
      rows.append(("", "XLA FLOPs/step; achieved",
                   f"{r['flops_per_step'] / 1e12:.3g} TFLOP; {r['tflops_per_s']:.3g} TFLOP/s"))
    rows.append(("", "process peak RSS in phase", _fmt(r["peak_rss_mb"], " MB")))
  for key in ("pipeline", "pipeline_1_thread"):
    if key not in results:
      continue
    p = results[key]
    threads = f"{p['num_threads']} thread" + ("s" if p["num_threads"] != 1 else "")
    rows += [(f"input: mmjax grain ({threads})", "throughput",
              _fmt(p["records_per_s"], " records/s")),
             ("", "records (mean real frames)", f"{p['records']} ({p['mean_frames']:.0f})"),
             ("", "startup (index + 1st batch)", _fmt(p["startup_s"], " s")),
             ("", "process peak RSS in phase", _fmt(p["peak_rss_mb"], " MB"))]
  t = results["tf_starter"]
  if t is None:
    rows.append(("input: TF starter code", "throughput", "skipped"))
  else:
    rows += [(f"input: TF starter code (tf {t['tf_version']}, eager)", "throughput",
              _fmt(t["records_per_s"], " records/s")),
             ("", "records", _fmt(t["records"])),
             ("", "graph-mode tf.data.map (context)", _fmt(t["graph_records_per_s"],
                                                          " records/s")),
             ("", "same values as mmjax", f"{t.get('tf_matches')} (max |diff| "
              f"{t.get('tf_max_abs_diff', float('nan')):.2g})"),
             ("", "process peak RSS in phase", _fmt(t["peak_rss_mb"], " MB"))]
  m = results["metrics"]
  rows += [(f"metrics: {m['num_videos']:,} x {m['num_classes']:,}", "update + compute",
            f"{_fmt(m['update_s'], ' s')} + {_fmt(m['compute_s'], ' s')} = "
            f"{_fmt(m['total_s'], ' s')}"),
           ("", "throughput", _fmt(m["videos_per_s"], " videos/s")),
           ("", "process peak RSS in phase", _fmt(m["peak_rss_mb"], " MB"))]
  mem = results["memory"]
  rows.append(("process", "peak RSS (whole run)", _fmt(mem["process_peak_rss_mb"], " MB")))
  if "device_peak_mb" in mem:
    rows.append(("", "device peak", _fmt(mem["device_peak_mb"], " MB")))
  return rows


def main(argv):
  del argv
  from mmjax import benchmarks  # pylint: disable=import-outside-toplevel
  from mmjax.data import pipeline  # pylint: disable=import-outside-toplevel

  config = FLAGS.config.copy_and_resolve_references()
  with config.unlocked():
    config.data.max_frames = FLAGS.frames
  results = {"hardware": benchmarks.hardware_description(),
             "load_average_start": list(os.getloadavg()),
             "settings": {"batch_size": FLAGS.batch_size, "frames": FLAGS.frames,
                          "steps": FLAGS.steps, "warmup": FLAGS.warmup,
                          "pipeline_batches": FLAGS.pipeline_batches,
                          "metric_videos": FLAGS.metric_videos,
                          "metric_classes": FLAGS.metric_classes,
                          "metric_batch": FLAGS.metric_batch}}
  _log(f"hardware: {results['hardware']}")

  def phase(fn, *args, **kwargs):
    benchmarks.reset_peak_rss()
    out = fn(*args, **kwargs)
    if out is not None:
      out["peak_rss_mb"] = benchmarks.peak_memory()["peak_rss_mb"]
    return out

  start = time.perf_counter()
  pattern = pipeline.resolve_data_patterns(config.data, log=_log).train_pattern
  _log(f"data: {pattern} ({time.perf_counter() - start:.1f} s)")

  _log(f"metrics: {FLAGS.metric_videos} x {FLAGS.metric_classes}")
  results["metrics"] = phase(benchmarks.metrics_benchmark, FLAGS.metric_videos,
                             FLAGS.metric_classes, FLAGS.metric_batch)
  _log(f"input pipeline: {FLAGS.pipeline_batches} batches of {FLAGS.batch_size}")
  results["pipeline"] = phase(benchmarks.input_pipeline_benchmark, config, pattern,
                              batch_size=FLAGS.batch_size, num_batches=FLAGS.pipeline_batches)
  if int(config.data.num_threads) != 1:
    _log("input pipeline: the same with 1 thread")
    results["pipeline_1_thread"] = phase(
        benchmarks.input_pipeline_benchmark, config, pattern, batch_size=FLAGS.batch_size,
        num_batches=FLAGS.pipeline_batches, num_threads=1)
  results["train"] = {}
  for model in [m.strip() for m in FLAGS.models.split(",") if m.strip()]:
    _log(f"train step: {model} (late fusion), batch {FLAGS.batch_size}, {FLAGS.frames} frames")
    results["train"][model] = phase(
        benchmarks.train_step_benchmark, config, model, batch_size=FLAGS.batch_size,
        frames=FLAGS.frames, steps=FLAGS.steps, warmup=FLAGS.warmup)
  results["tf_starter"] = None
  if not FLAGS.skip_tf:
    num = FLAGS.tf_records or FLAGS.pipeline_batches * FLAGS.batch_size
    _log(f"TF starter reader: {num} records")
    results["tf_starter"] = phase(
        benchmarks.tf_starter_benchmark, pattern, num_records=num,
        feature_sizes=tuple(config.data.feature_sizes), id_key=config.data.id_key,
        labels_key=config.data.labels_key, max_frames=FLAGS.frames)
  results["memory"] = benchmarks.peak_memory()
  results["load_average_end"] = list(os.getloadavg())

  print(f"mmjax benchmark | {results['hardware']} | load average "
        f"{results['load_average_start'][0]:.2f} -> {results['load_average_end'][0]:.2f}")
  print(_table(_rows(results)))
  print(json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
