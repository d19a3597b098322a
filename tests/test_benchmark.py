"""Smoke test of launch/benchmark.py at tiny shapes (no speed assertions: those never go in
tests)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive_numbers(record: dict, keys) -> None:
  for key in keys:
    assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record[key])


def _run_benchmark(tmp_path, *flags) -> dict:
  """Runs launch/benchmark.py on the CPU; checks the table; returns its last (JSON) line."""
  command = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"), *flags]
  env = dict(os.environ, MMJAX_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = result.stdout.strip().splitlines()
  assert any("throughput" in line for line in lines)  # the table
  return json.loads(lines[-1])


def test_benchmark_tiny_prints_table_and_json(tmp_path):
  results = _run_benchmark(tmp_path, "--config=configs/ytb8m.py:tiny", "--batch_size=4",
                           "--frames=8", "--steps=2", "--pipeline_batches=3",
                           "--metric_videos=500", "--metric_classes=50", "--metric_batch=128",
                           "--skip_tf")

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


def test_benchmark_clip_suite_tiny(tmp_path):
  results = _run_benchmark(tmp_path, "--suite=clip", "--clip_preset=tiny", "--clip_batch=4",
                           "--clip_steps=1", "--clip_warmup=0",
                           "--prompt_config=configs/emovclip.py:tiny", "--prompt_batch=2",
                           "--prompt_frames=2")
  assert {"hardware", "settings", "image_tower", "prompt_tuning", "memory"} <= set(results)
  assert "jax" in results["hardware"]
  assert not os.listdir(tmp_path)  # random batches: no synthetic dataset written

  tower = results["image_tower"]
  assert tower["preset"] == "tiny" and tower["batch_size"] == 4 and tower["image_size"] == 32
  _positive_numbers(tower, ["params", "init_s", "peak_rss_mb"])
  for mode in ("forward", "forward_backward"):
    _positive_numbers(tower[mode], ["compile_s", "first_call_s", "call_s", "call_min_s",
                                    "images_per_s"])

  prompt = results["prompt_tuning"]
  assert prompt["batch_size"] == 2 and prompt["frames"] == 2 and prompt["num_prompts"] == 4
  _positive_numbers(prompt, ["params", "trainable_params", "init_s", "compile_s",
                             "first_step_s", "step_s", "step_min_s", "clips_per_s",
                             "frames_per_s", "peak_rss_mb"])
  # Only the prompts train: N=4 prompts x D=2 layers x width 64, in the text and vision towers.
  assert prompt["trainable_params"] == 2 * 4 * 2 * 64 < prompt["params"]
  assert prompt["frames_per_s"] == pytest.approx(2 * prompt["clips_per_s"])
