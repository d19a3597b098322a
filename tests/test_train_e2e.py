"""The main job end to end through launch/train.py and launch/eval.py (tiny config, subprocesses):
preemption by SIGTERM while waiting for data then SIGKILL, both resumed exactly; SIGINT during
an evaluation; eval on another device count, logs."""

import json
import os
import signal
import subprocess

import pytest
from conftest import load_config
from helpers import runs
from helpers.signalling_task import ENV

from mmjax.train import PREEMPTED_EXIT_CODE

# Evaluations at 16/32/48 feed the plateau rule, so resumed runs must restore its state too.
STEPS = ("--config.total_steps=48", "--config.checkpoint_every_steps=4",
         "--config.eval_every_steps=16", "--config.keep_checkpoints=2")


def _logged(workdir):
  """What metrics.jsonl says, minus wall-clock figures: (step, split, loss, gap) per row."""
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r["split"], r["loss"], r.get("gap")) for r in records]


@pytest.fixture(scope="module")
def reference_run(cache_dir, tmp_path_factory):
  """An uninterrupted run: (workdir, stderr, final step, final params, logged rows)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = runs.run(runs.script_command("train.py", workdir, *STEPS), runs.env(cache_dir))
  step, params = runs.final_params(load_config("ytb8m", "tiny"), workdir)
  return workdir, result.stderr, step, params, _logged(workdir)


def test_logs_metrics_and_tensorboard(reference_run):
  workdir, stderr, step, _, _ = reference_run
  assert step == 48
  assert "examples/s" in stderr and "ETA" in stderr and "eval split 'eval': done" in stderr
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train] == list(range(2, 49, 2))  # log_every_steps = 2
  assert all("loss" in r and "examples_per_sec" in r for r in train)
  assert [r["step"] for r in evals] == [16, 32, 48]
  assert {"loss", "gap", "map", "perr", "hit_at_1", "level_0/gap"} <= set(evals[-1])
  assert 0.0 <= evals[-1]["gap"] <= 1.0
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert any(name.startswith("events.out.tfevents") for name in events)
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  best = max(evals, key=lambda r: (r["gap"], r["step"]))["step"]  # config.best_metric eval/gap
  assert kept == sorted({44, 48, best})  # keep_checkpoints = 2, plus the best


def _signalled_run(cache_dir, workdir, signal_spec, *overrides):
  """launch/train.py with the fault-injecting task (tests/helpers/signalling_task.py)."""
  command = runs.signalled_command(workdir, *STEPS, *overrides)
  environment = dict(runs.env(cache_dir), **({ENV: signal_spec} if signal_spec else {}))
  return subprocess.run(command, env=environment, cwd=runs.ROOT, capture_output=True, text=True,
                        timeout=600, check=False)


def _saved_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_preempted_waiting_for_data_then_killed_then_resumed_exactly(reference_run, cache_dir,
                                                                     tmp_path):
  workdir = str(tmp_path)
  # The interrupted runs save in the background (a host snapshot, idle-priority writers;
  # the reference run does not): the result must not change.
  background = "--config.checkpoint_background=on"
  # SIGTERM while the trainer waits for the batch of step 7: saved, exit 75 ("requeue me").
  result = _signalled_run(cache_dir, workdir, "SIGTERM@train:7", background)
  assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-3000:]
  assert "received SIGTERM" in result.stderr and "preemption signal" in result.stderr
  assert _saved_steps(workdir)[-1] == 7
  # The requeued run resumes at step 7 and is SIGKILLed once it has saved step 12.
  process = subprocess.Popen(runs.signalled_command(workdir, *STEPS, background),
                             env=runs.env(cache_dir),
                             cwd=runs.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  runs.wait_for_checkpoint(process, workdir, 12)
  process.send_signal(signal.SIGKILL)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL
  assert f"resumed from {os.path.join(workdir, 'checkpoints')} at step 7" in stderr
  result = _signalled_run(cache_dir, workdir, None, background)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stderr and "checkpoint snapshot" in result.stderr
  step, params = runs.final_params(load_config("ytb8m", "tiny"), workdir)
  assert step == 48
  runs.assert_trees_equal(params, reference_run[3])
  # Rows the killed run logged past its last checkpoint were dropped on resume, so the log is
  # the uninterrupted run's row for row, except that the first train row after the preemption
  # (step 8) averages step 8 only instead of steps 7 and 8.
  logged, reference = _logged(workdir), reference_run[4]
  assert [row[:2] for row in logged] == [row[:2] for row in reference]
  assert [row for row in logged if row[:2] != (8, "train")] == [
      row for row in reference if row[:2] != (8, "train")]


def test_sigint_during_evaluation_saves_then_resume_redoes_the_evaluation(reference_run,
                                                                         cache_dir, tmp_path):
  workdir = str(tmp_path)
  result = _signalled_run(cache_dir, workdir, "SIGINT@eval:2:1")  # the evaluation of step 16
  assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-3000:]
  assert "received SIGINT" in result.stderr and "evaluation to be redone" in result.stderr
  assert _saved_steps(workdir)[-1] == 16
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "16", "pending_evaluation"))
  result = _signalled_run(cache_dir, workdir, None)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 16: its evaluation was interrupted by a preemption" in result.stderr
  assert not os.path.isdir(os.path.join(workdir, "checkpoints", "16", "pending_evaluation"))
  runs.assert_trees_equal(runs.final_params(load_config("ytb8m", "tiny"), workdir)[1],
                          reference_run[3])
  assert _logged(workdir) == reference_run[4]  # the interrupted evaluation was logged once
  # The redone evaluation ranks step 16 for the best checkpoint like the uninterrupted run.
  assert _saved_steps(workdir) == _saved_steps(reference_run[0])


def test_eval_restores_onto_four_devices(reference_run, cache_dir):
  workdir = reference_run[0]
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  before = [json.loads(line) for line in open(metrics_path)]
  result = runs.run(runs.script_command("eval.py", workdir, "--step=48"), runs.env(cache_dir, 4))
  assert "restored step 48 onto 4 devices" in result.stderr
  after = [json.loads(line) for line in open(metrics_path)]
  assert len(after) == len(before) + 1
  trained, restored = before[-1], after[-1]
  assert restored["split"] == "eval" and restored["step"] == 48
  for key in ("loss", "gap", "map", "perr", "hit_at_1"):
    assert abs(restored[key] - trained[key]) < 1e-5, (key, restored, trained)
  assert f"eval/gap={restored['gap']:.4f}" in result.stdout


def test_eval_restores_the_best_checkpoint(reference_run, cache_dir):
  workdir = reference_run[0]
  evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  best = max((r for r in evals if r["split"] == "eval"), key=lambda r: (r["gap"], r["step"]))
  result = runs.run(runs.script_command("eval.py", workdir, "--step=best"), runs.env(cache_dir))
  assert f"restored step {best['step']} onto 1 devices (checkpoint 'best')" in result.stderr
  assert f"eval/gap={best['gap']:.4f}" in result.stdout


@pytest.mark.parametrize("override,message", [
    ("--config.batch_sizee=16", "batch_sizee"),
    ("--config.batch_size=abc", "batch_size"),
    ("--config.model.name=lstm", "config.model.name"),
])
def test_bad_config_fails_at_once_naming_the_key(override, message, cache_dir, tmp_path):
  result = subprocess.run(runs.script_command("train.py", str(tmp_path), override),
                          env=runs.env(cache_dir), cwd=runs.ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode != 0
  assert message in result.stderr
