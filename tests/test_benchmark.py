"""Smoke test of launch/benchmark.py at tiny shapes, and of its JSON records (no speed assertions:
those never go in tests)."""

import json
import math
import os
import subprocess
import sys

import pytest

from mmjax import benchmarking
from mmjax.projects.youtube8m import benchmark as youtube8m_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_KEYS = {"name", "unit", "value", "hardware", "versions", "commit", "suite", "timestamp"}


def _positive_numbers(record: dict, keys) -> None:
  for key in keys:
    assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record[key])


def _run_benchmark(cache, *flags) -> dict:
  """Runs launch/benchmark.py on the CPU; checks the tables; returns {suite: its JSON line}."""
  command = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"), *flags]
  env = dict(os.environ, MMJAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = result.stdout.strip().splitlines()
  assert any("throughput" in line for line in lines)  # the table
  suites = [json.loads(line) for line in lines if line.startswith("{")]
  return {results["suite"]: results for results in suites}


def _read_records(path, skip: int = 0) -> list:
  """The JSON Lines of `path` after the first `skip`, each checked against the record schema."""
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f][skip:]
  for record in records:
    assert set(record) == RECORD_KEYS, record
    value = record["value"]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), record
    assert math.isfinite(value), record
    assert isinstance(record["unit"], str) and record["unit"], record
    assert record["name"].startswith(record["suite"] + "/"), record
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "python"} <= set(record["versions"])
    assert record["commit"] == "unknown" or len(record["commit"]) == 40, record
  return records


def test_benchmark_tiny_prints_table_and_json(tmp_path):
  records_path = tmp_path / "records" / "nested" / "bench.jsonl"  # parents created
  results = _run_benchmark(tmp_path, "--config=configs/ytb8m.py:tiny", "--batch_size=4",
                           "--frames=8", "--steps=2", "--pipeline_batches=3",
                           "--metric_videos=500", "--metric_classes=50", "--metric_batch=128",
                           "--skip_tf", "--models=transformer,netvlad_cmc",
                           "--end_to_end_window=1", f"--json={records_path}")["youtube8m"]

  assert {"hardware", "settings", "train", "pipeline", "tf_data", "tf_starter", "end_to_end",
          "metrics", "memory"} <= set(results)
  assert "jax" in results["hardware"]
  assert results["tf_starter"] is None and results["tf_data"] is None  # --skip_tf
  assert set(results["train"]) == {"transformer", "netvlad_cmc"}
  for name, train in results["train"].items():
    assert youtube8m_benchmark.parse_model(name) == (train["model"], train["fusion"])
    assert train["batch_size"] == 4 and train["frames"] == 8
    _positive_numbers(train, ["params", "compile_s", "first_step_s", "step_s", "step_min_s",
                              "examples_per_s", "peak_rss_mb"])
    _positive_numbers(train, ["compiled_argument_mb", "compiled_output_mb", "compiled_temp_mb"])
  assert results["train"]["transformer"]["compiler_options"] == (
      "xla_cpu_experimental_ynn_fusion_type=''")
  assert results["train"]["netvlad_cmc"]["compiler_options"] == "XLA's defaults"
  assert set(results["end_to_end"]) == {"transformer"}  # cm rows need a trained tower
  run = results["end_to_end"]["transformer"]  # a real training run of 3 one-step windows
  assert run["steps"] == 3 and run["window"] == 1
  _positive_numbers(run, ["examples_per_s", "examples_per_s_with_checkpoint",
                          "checkpoint_write_s", "wall_s"])
  assert run["checkpoint_background"] == "auto" and run["checkpoint_write_s"] < run["wall_s"]
  assert list(results["pipeline"]) == ["threads_1", "threads_2", "workers_2"]
  for (threads, workers), pipeline in zip(((1, 0), (2, 0), (2, 2)),
                                          results["pipeline"].values()):
    _positive_numbers(pipeline, ["records", "records_per_s", "startup_s", "mean_frames",
                                 "num_records_in_files", "peak_rss_mb", "batch_mb"])
    assert pipeline["records"] == 12 and pipeline["num_workers"] == workers
    assert workers or pipeline["num_threads"] == threads
    assert pipeline["user_cpu_s"] >= 0 and pipeline["sys_cpu_s"] >= 0
  _positive_numbers(results["metrics"], ["update_s", "compute_s", "total_s", "videos_per_s"])
  assert results["metrics"]["num_videos"] == 500 and results["metrics"]["num_classes"] == 50
  assert 0.0 <= results["metrics"]["gap"] <= 1.0
  _positive_numbers(results["memory"], ["process_peak_rss_mb", "peak_rss_mb"])

  records = {r["name"]: r for r in _read_records(records_path)}
  throughput = records["youtube8m/train_step/transformer/examples_per_sec"]
  assert throughput["unit"] == "examples/s" and throughput["suite"] == "youtube8m"
  assert throughput["value"] == pytest.approx(results["train"]["transformer"]["examples_per_s"])
  assert throughput["hardware"] == results["hardware"]
  assert records["youtube8m/pipeline/threads_2/records_per_sec"]["unit"] == "records/s"
  assert records["youtube8m/end_to_end/transformer/examples_per_sec"]["unit"] == "examples/s"
  assert records["youtube8m/metrics/total_sec"]["unit"] == "s"
  assert records["youtube8m/memory/process_peak_rss_mb"]["unit"] == "MiB"


@pytest.fixture(name="clip_run", scope="module")
def fixture_clip_run(tmp_path_factory):
  """One run of the clip and emovclip suites, appending to a records file that already holds a
  line: (results by suite, records path, cache folder)."""
  cache = tmp_path_factory.mktemp("cache")
  records_path = tmp_path_factory.mktemp("records") / "bench.jsonl"
  records_path.write_text(json.dumps({"name": "earlier/run"}) + "\n")
  results = _run_benchmark(cache, "--suite=clip,emovclip", "--clip_preset=tiny",
                           "--clip_batch=4", "--clip_steps=1", "--clip_warmup=0",
                           "--prompt_config=configs/emovclip.py:tiny", "--prompt_batch=2",
                           "--prompt_frames=2", f"--json={records_path}")
  return results, records_path, cache


def test_benchmark_clip_suites_tiny(clip_run):
  results_by_suite, _, cache = clip_run
  assert list(results_by_suite) == ["clip", "emovclip"]
  assert not os.listdir(cache)  # random batches: no synthetic dataset written
  for results in results_by_suite.values():
    assert {"hardware", "settings", "memory"} <= set(results)
    assert "jax" in results["hardware"]

  tower = results_by_suite["clip"]["image_tower"]
  assert tower["preset"] == "tiny" and tower["batch_size"] == 4 and tower["image_size"] == 32
  _positive_numbers(tower, ["params", "init_s", "peak_rss_mb"])
  for mode in ("forward", "forward_backward"):
    _positive_numbers(tower[mode], ["compile_s", "first_call_s", "call_s", "call_min_s",
                                    "images_per_s"])

  prompt = results_by_suite["emovclip"]["prompt_tuning"]
  assert prompt["batch_size"] == 2 and prompt["frames"] == 2 and prompt["num_prompts"] == 4
  _positive_numbers(prompt, ["params", "trainable_params", "init_s", "compile_s",
                             "first_step_s", "step_s", "step_min_s", "clips_per_s",
                             "frames_per_s", "peak_rss_mb"])
  # Only the prompts train: N=4 prompts x D=2 layers x width 64, in the text and vision towers.
  assert prompt["trainable_params"] == 2 * 4 * 2 * 64 < prompt["params"]
  assert prompt["frames_per_s"] == pytest.approx(2 * prompt["clips_per_s"])


def test_benchmark_json_records(clip_run):
  results_by_suite, records_path, _ = clip_run
  with open(records_path, encoding="utf-8") as f:
    assert json.loads(f.readline()) == {"name": "earlier/run"}  # appended, not overwritten
  records = _read_records(records_path, skip=1)

  names = [r["name"] for r in records]
  assert len(names) == len(set(names))  # unique within the run
  assert {r["suite"] for r in records} == {"clip", "emovclip"}
  assert len({(r["timestamp"], r["commit"]) for r in records}) == 1  # one run
  by_name = {r["name"]: r for r in records}
  tower = results_by_suite["clip"]["image_tower"]
  for mode in ("forward", "forward_backward"):
    images = by_name[f"clip/image_tower/{mode}/images_per_sec"]
    assert images["unit"] == "images/s"
    assert images["value"] == pytest.approx(tower[mode]["images_per_s"])
    assert by_name[f"clip/image_tower/{mode}/compile_sec"]["unit"] == "s"
  params = by_name["clip/image_tower/params"]
  assert params["unit"] == "parameters" and params["value"] == tower["params"]
  prompt = results_by_suite["emovclip"]["prompt_tuning"]
  assert by_name["emovclip/prompt_tuning/clips_per_sec"]["value"] == pytest.approx(
      prompt["clips_per_s"])
  assert by_name["emovclip/prompt_tuning/step_sec"]["unit"] == "s"
  assert by_name["emovclip/prompt_tuning/trainable_params"]["value"] == 2 * 4 * 2 * 64
  assert by_name["emovclip/memory/process_peak_rss_mb"]["unit"] == "MiB"
  if "flops_per_step" in prompt:
    assert by_name["emovclip/prompt_tuning/flops_per_step"]["unit"] == "FLOP"


def test_benchmark_memotion3_suite_tiny(tmp_path):
  """The Memotion train steps (here CLIP-image and OSCAR, the two that compile in seconds)."""
  records_path = tmp_path / "bench.jsonl"
  results = _run_benchmark(tmp_path / "cache", "--suite=memotion3",
                           "--memotion_config=configs/memotion3.py:tiny", "--memotion_batch=2",
                           "--memotion_models=image,oscar", "--clip_steps=1", "--clip_warmup=0",
                           f"--json={records_path}")["memotion3"]
  assert list(results["steps"]) == ["image", "oscar"]
  for model, step in results["steps"].items():
    assert step["batch_size"] == 2, model
    _positive_numbers(step, ["params", "compile_s", "step_s", "memes_per_s", "peak_rss_mb"])
  assert results["steps"]["oscar"]["preset"] == "small random BERT"
  by_name = {r["name"]: r for r in _read_records(records_path)}
  assert by_name["memotion3/steps/oscar/memes_per_sec"]["unit"] == "memes/s"
  assert by_name["memotion3/steps/image/memes_per_sec"]["value"] == pytest.approx(
      results["steps"]["image"]["memes_per_s"])


def test_benchmark_cremad_suite_tiny(tmp_path):
  """The CREMA-D suite at tiny sizes: Simple3D's train step on the multimodal 3D input (the
  cell that compiles in seconds; I3D's takes minutes on a CPU) and 2D and 3D preprocessing of
  two synthetic clips."""
  records_path = tmp_path / "bench.jsonl"
  results = _run_benchmark(tmp_path / "cache", "--suite=cremad",
                           "--cremad_config=configs/cremad.py:tiny",
                           "--cremad_cells=simple3d_multimodal", "--cremad_batch=2",
                           "--cremad_steps=1", "--cremad_clips=2", "--cremad_workers=1",
                           f"--json={records_path}")["cremad"]
  step = results["steps"]["simple3d_multimodal"]
  assert list(results["steps"]) == ["simple3d_multimodal"]
  assert step["batch_size"] == 2 and step["input_shape"] == [8, 32, 64, 3]  # tiny: 8 x 32 x 2*32
  _positive_numbers(step, ["params", "compile_s", "step_s", "clips_per_s", "peak_rss_mb",
                           "compiled_peak_mb"])
  assert step["compiled_peak_mb"] >= step["compiled_temp_mb"]
  for mode in ("2d", "3d"):
    assert results["preprocess"][mode]["clips"] == 2, mode
    _positive_numbers(results["preprocess"][mode], ["clips_per_s", "preprocess_s"])
  by_name = {r["name"]: r for r in _read_records(records_path)}
  assert by_name["cremad/steps/simple3d_multimodal/clips_per_sec"]["unit"] == "clips/s"
  assert by_name["cremad/steps/simple3d_multimodal/clips_per_sec"]["value"] == pytest.approx(
      step["clips_per_s"])
  assert by_name["cremad/steps/simple3d_multimodal/compiled_peak_mb"]["unit"] == "MiB"
  for mode in ("2d", "3d"):
    record = by_name[f"cremad/preprocess/{mode}/clips_per_sec"]
    assert record["unit"] == "clips/s" and record["value"] > 0, record


def test_records_of_every_youtube8m_measurement():
  """Every key the YouTube-8M suite can report (incl. the TensorFlow comparison, not installed
  in CI) has a unit or is marked as a setting; sections are renamed; non-finite values are left
  out; an unknown numeric key raises."""
  tf_starter = {"records": 8, "startup_s": 0.1, "seconds": 0.2, "records_per_s": 40.0,
                "tf_version": "2.21.0", "tf_max_abs_diff": 0.0, "tf_matches": True,
                "peak_rss_mb": 100.0}
  tf_data = {"threads_1": {"records": 8, "batches": 2, "batch_size": 4, "num_threads": 1,
                           "seconds": 0.1, "records_per_s": 80.0, "user_cpu_s": 0.1,
                           "sys_cpu_s": 0.0, "batch_mb": 1.0, "tf_version": "2.21.0"}}
  torch = {"netvlad": {"params": 10, "step_s": 1.0, "examples_per_s": 4.0, "num_threads": 2,
                       "user_cpu_s": 1.5, "jax_over_torch": 2.0, "jax_peak_fraction": 0.5}}
  results = {"hardware": "cpu", "settings": {"batch_size": 4}, "load_average_start": [0.5],
             "load_average_end": [0.7], "tf_starter": tf_starter, "tf_data": tf_data,
             "torch": torch, "matmul_peak": {"matmul_n": 64, "jax_matmul_tflops_per_s": 1.0},
             "train": {"netvlad": {"model": "netvlad", "frames": 8, "batch_size": 4,
                                   "examples_per_s": float("nan")}}}
  records = youtube8m_benchmark.records(results, "youtube8m", timestamp="t")
  names = {r["name"]: r["unit"] for r in records}
  assert names == {
      "youtube8m/tf_starter/records": "records", "youtube8m/tf_starter/startup_sec": "s",
      "youtube8m/tf_starter/seconds": "s", "youtube8m/tf_starter/records_per_sec": "records/s",
      "youtube8m/tf_starter/tf_max_abs_diff": "1", "youtube8m/tf_starter/peak_rss_mb": "MiB",
      "youtube8m/tf_data/threads_1/records": "records",
      "youtube8m/tf_data/threads_1/seconds": "s",
      "youtube8m/tf_data/threads_1/records_per_sec": "records/s",
      "youtube8m/tf_data/threads_1/user_cpu_sec": "s",
      "youtube8m/tf_data/threads_1/sys_cpu_sec": "s",
      "youtube8m/tf_data/threads_1/batch_mb": "MiB",
      "youtube8m/torch/netvlad/params": "parameters", "youtube8m/torch/netvlad/step_sec": "s",
      "youtube8m/torch/netvlad/examples_per_sec": "examples/s",
      "youtube8m/torch/netvlad/user_cpu_sec": "s", "youtube8m/torch/netvlad/jax_over_torch": "1",
      "youtube8m/torch/netvlad/jax_peak_fraction": "1",
      "youtube8m/matmul_peak/jax_matmul_tflops_per_sec": "TFLOP/s",
      "youtube8m/load_average_start": "processes", "youtube8m/load_average_end": "processes"}
  assert {r["timestamp"] for r in records} == {"t"}
  with pytest.raises(ValueError, match="tf_starter/new_s"):
    youtube8m_benchmark.records({**results, "tf_starter": {"new_s": 1.0}}, "youtube8m")


def test_pipeline_rows_compare_threads_and_worker_processes_with_tf_data():
  """Each of our rows is compared with tf.data at as many threads: the worker-process row
  only adds its ratio (tf.data's figures are printed once, with the threads' row)."""
  ours = {"records": 8, "mean_frames": 5.0, "batch_mb": 1.0, "user_cpu_s": 0.1,
          "sys_cpu_s": 0.0, "startup_s": 0.1, "peak_rss_mb": 10.0}
  tf_data = {f"threads_{n}": {"records_per_s": 100.0 * n, "tf_version": "2.21.0",
                              "batch_mb": 4.0, "user_cpu_s": 1.0, "sys_cpu_s": 0.5,
                              "peak_rss_mb": 20.0} for n in (1, 2)}
  pipeline = {"threads_1": {**ours, "num_threads": 1, "num_workers": 0, "records_per_s": 300.0},
              "threads_2": {**ours, "num_threads": 2, "num_workers": 0, "records_per_s": 250.0},
              "workers_2": {**ours, "num_threads": 2, "num_workers": 2, "records_per_s": 700.0}}
  rows = youtube8m_benchmark._pipeline_rows(  # pylint: disable=protected-access
      {"pipeline": pipeline, "tf_data": tf_data})
  sections = [r[0] for r in rows if r[0]]
  assert sections == [
      "input, 1 thread: mmjax grain", "input, 1 thread: tuned tf.data (tf 2.21.0)",
      "input, 2 threads: mmjax grain", "input, 2 threads: tuned tf.data (tf 2.21.0)",
      "input, 2 worker processes: mmjax grain"]
  ratios = [r[2] for r in rows if r[1].startswith("mmjax / tf.data")]
  assert ratios == ["3.00x", "1.25x", "3.50x"]
  assert rows[-1][1] == "mmjax / tf.data at 2 threads"


def test_git_commit_outside_a_checkout(tmp_path):
  assert benchmarking.git_commit(str(tmp_path)) == "unknown"
  assert len(benchmarking.git_commit()) in (40, len("unknown"))


def test_warm_page_cache_reads_every_matching_file_whole(tmp_path):
  sizes = {"train-0.tfrecord": 5, "train-1.tfrecord": (1 << 24) + 3}  # one crosses a chunk
  for name, size in sizes.items():
    (tmp_path / name).write_bytes(os.urandom(size))
  (tmp_path / "other.bin").write_bytes(b"x" * 7)  # not matched
  assert youtube8m_benchmark.warm_page_cache(str(tmp_path / "train-*.tfrecord")) == sum(
      sizes.values())


def test_benchmark_features_suite_tiny(tmp_path):
  """The feature-extraction suite at tiny sizes: a tiny HuBERT's forward on 2 x 0.5 s and the
  tiny CLIP's frame extraction of 4 synthetic clips."""
  records_path = tmp_path / "bench.jsonl"
  results = _run_benchmark(tmp_path / "cache", "--suite=features", "--hubert_preset=tiny",
                           "--hubert_seconds=0.5", "--hubert_batch=2", "--clip_preset=tiny",
                           "--features_clips=4", "--features_frames=2", "--features_batch=2",
                           "--clip_steps=1", "--clip_warmup=0",
                           f"--json={records_path}")["features"]
  hubert, extraction = results["hubert"], results["clip_extraction"]
  assert (hubert["preset"], hubert["batch_size"], hubert["frames"]) == ("tiny", 2, 24)
  _positive_numbers(hubert, ["params", "compile_s", "call_s", "utterances_per_s", "peak_rss_mb"])
  assert hubert["audio_s_per_s"] == pytest.approx(hubert["utterances_per_s"] * 0.5)
  assert (extraction["num_clips"], extraction["frames"], extraction["num_devices"]) == (4, 2, 1)
  _positive_numbers(extraction, ["warmup_s", "run_s", "clips_per_s", "frames_per_s"])
  assert extraction["frames_per_s"] == pytest.approx(2 * extraction["clips_per_s"])
  by_name = {r["name"]: r for r in _read_records(records_path)}
  assert by_name["features/hubert/utterances_per_sec"]["unit"] == "utterances/s"
  assert by_name["features/hubert/utterances_per_sec"]["value"] == pytest.approx(
      hubert["utterances_per_s"])
  assert by_name["features/clip_extraction/frames_per_sec"]["unit"] == "frames/s"
  assert by_name["features/clip_extraction/run_sec"]["unit"] == "s"


def test_benchmark_mer_suite_tiny(tmp_path):
  """The MER suite with every feature 16 wide, one step: both systems' train steps and the
  torch MER2023 reference, of the same parameter count. The configs' widths (128, 64): XLA
  compiles MER2023's step faster with them than with narrower layers (about 18 s against 30 s
  on a 2-core CPU), which is most of this test's time."""
  records_path = tmp_path / "bench.jsonl"
  results = _run_benchmark(tmp_path / "cache", "--suite=mer", "--mer_feature_dim=16",
                           "--mer_batch=4", "--mer_steps=1", "--mer_warmup=0",
                           f"--json={records_path}")["mer"]
  assert list(results["steps"]) == ["mer2023", "mer2024"]
  for system, step in results["steps"].items():
    assert step["batch_size"] == 4 and (step["hidden"], step["embed"]) == (128, 64), system
    _positive_numbers(step, ["params", "compile_s", "step_s", "examples_per_s", "peak_rss_mb"])
  assert results["steps"]["mer2024"]["structures"] == "audio+image+text+video"
  assert results["steps"]["mer2024"]["modality_dropout"] == 0.3
  torch = results["torch"]["mer2023"]
  _positive_numbers(torch, ["step_s", "examples_per_s", "jax_over_torch"])
  assert torch["params"] == results["steps"]["mer2023"]["params"]
  assert torch["jax_examples_per_s"] == results["steps"]["mer2023"]["examples_per_s"]
  by_name = {r["name"]: r for r in _read_records(records_path)}
  assert by_name["mer/steps/mer2024/examples_per_sec"]["unit"] == "examples/s"
  assert by_name["mer/torch/mer2023/examples_per_sec"]["value"] == pytest.approx(
      torch["examples_per_s"])
  assert by_name["mer/torch/mer2023/jax_over_torch"]["unit"] == "1"
