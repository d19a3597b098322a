"""Smoke test of launch/benchmark.py at tiny shapes (no speed assertions: those never go in
tests)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive_numbers(record: dict, keys) -> None:
  for key in keys:
    assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record[key])


def test_benchmark_tiny_prints_table_and_json(tmp_path):
  command = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"),
             "--config=configs/ytb8m.py:tiny", "--batch_size=4", "--frames=8", "--steps=2",
             "--pipeline_batches=3", "--metric_videos=500", "--metric_classes=50",
             "--metric_batch=128", "--skip_tf"]
  env = dict(os.environ, MMJAX_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = result.stdout.strip().splitlines()
  assert any("throughput" in line for line in lines)  # the table
  results = json.loads(lines[-1])

  assert {"hardware", "settings", "train", "pipeline", "tf_starter", "metrics",
          "memory"} <= set(results)
  assert "jax" in results["hardware"]
  assert results["tf_starter"] is None  # --skip_tf
  assert set(results["train"]) == {"transformer", "netvlad"}
  for name, train in results["train"].items():
    assert train["model"] == name and train["batch_size"] == 4 and train["frames"] == 8
    _positive_numbers(train, ["params", "compile_s", "first_step_s", "step_s", "step_min_s",
                              "examples_per_s", "peak_rss_mb"])
  _positive_numbers(results["pipeline"], ["records", "records_per_s", "startup_s", "mean_frames",
                                          "num_records_in_files", "peak_rss_mb"])
  assert results["pipeline"]["records"] == 12
  _positive_numbers(results["metrics"], ["update_s", "compute_s", "total_s", "videos_per_s"])
  assert results["metrics"]["num_videos"] == 500 and results["metrics"]["num_classes"] == 50
  assert 0.0 <= results["metrics"]["gap"] <= 1.0
  _positive_numbers(results["memory"], ["process_peak_rss_mb", "peak_rss_mb"])
