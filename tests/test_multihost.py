"""Two real processes on localhost (gloo CPU collectives, 2 devices each) train the tiny ytb8m
config together. A SIGTERM to process 1 alone during the final evaluation makes both save the
same step and exit with the "requeue me" status; the two processes resume, redo the evaluation
and finish with identical parameters and the losses of a 1-process 4-device run; then one
process restores their checkpoint bit-exactly and continues with the same global batches."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest
from conftest import load_config
from helpers import runs
from helpers.signalling_task import ENV

from mmjax.train import PREEMPTED_EXIT_CODE

TESTS = os.path.dirname(os.path.abspath(__file__))
# The two processes save in the background (config.checkpoint_background: a snapshot copied by
# one jitted program on both processes, idle-priority writers); the single run does not.
OVERRIDES = ("total_steps=6", "checkpoint_every_steps=3", "eval_every_steps=0", "log_every_steps=1",
             "model.name=netvlad", "task=signalled_youtube8m", "checkpoint_background=on")
CONTINUED = ("--config.total_steps=8", "--config.checkpoint_every_steps=3",
             "--config.eval_every_steps=0", "--config.log_every_steps=1",
             "--config.model.name=netvlad")


def _rows(workdir, split):
  return [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
          if r["split"] == split]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in _rows(workdir, "train")}


def _two_processes(cache_dir, workdir, out, signal_spec=None):
  """Runs both processes to the end; returns [(returncode, stderr)] in process order."""
  port = portpicker.pick_unused_port()
  environment = dict(runs.env(cache_dir, devices=2), **({ENV: signal_spec} if signal_spec else {}))
  helper = os.path.join(TESTS, "helpers", "multihost_train.py")
  processes = [
      subprocess.Popen([sys.executable, helper, TESTS, workdir, str(port), str(i), out, *OVERRIDES],
                       env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  stderrs = [p.communicate(timeout=600)[1] for p in processes]
  return [(p.returncode, stderr) for p, stderr in zip(processes, stderrs)]


@pytest.fixture(scope="module")
def single_run(cache_dir, tmp_path_factory):
  """One process, 4 devices, uninterrupted to step 8."""
  workdir = str(tmp_path_factory.mktemp("single"))
  runs.run(runs.script_command("train.py", workdir, *CONTINUED, "--config.task=youtube8m"),
           runs.env(cache_dir, devices=4))
  return workdir


def test_two_processes_preempted_resumed_then_one_process_continues(single_run, cache_dir,
                                                                    tmp_path):
  workdir, out = str(tmp_path / "work"), str(tmp_path)
  # SIGTERM on process 1 only, after the first batch of the evaluation of step 6.
  results = _two_processes(cache_dir, workdir, out, "SIGTERM@eval:2:1@1")
  for returncode, stderr in results:
    assert returncode == PREEMPTED_EXIT_CODE, stderr[-4000:]
    assert "preempted: checkpoint of step 6 saved" in stderr
  assert "received SIGTERM" in results[1][1] and "received SIGTERM" not in results[0][1]
  assert "checkpoint snapshot" in results[0][1]  # process 0 logs the background saving
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6", "pending_evaluation"))
  assert not _rows(workdir, "eval")

  for returncode, stderr in _two_processes(cache_dir, workdir, out):
    assert returncode == 0, stderr[-4000:]
  params = [np.load(os.path.join(out, f"params_{i}.npz")) for i in range(2)]
  assert sorted(params[0].files) == sorted(params[1].files)
  for name in params[0].files:
    np.testing.assert_array_equal(params[0][name], params[1][name], err_msg=name)
  assert [r["step"] for r in _rows(workdir, "eval")] == [6]
  single = _losses(single_run)
  assert sorted(_losses(workdir)) == list(range(1, 7))
  np.testing.assert_allclose([_losses(workdir)[s] for s in range(1, 7)],
                             [single[s] for s in range(1, 7)], rtol=1e-5)

  # Two processes -> one (1 device): the checkpoint restores bit-exactly ...
  config = load_config("ytb8m", "tiny")
  runs.apply_overrides(config, OVERRIDES)
  step, restored = runs.final_params(config, workdir)
  assert step == 6
  for path, leaf in jax.tree_util.tree_leaves_with_path(restored):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    np.testing.assert_array_equal(leaf, params[0][name], err_msg=name)
  # ... and training continues with the global batches of the uninterrupted run.
  result = runs.run(runs.signalled_command(workdir, *CONTINUED), runs.env(cache_dir, devices=1))
  assert "was written by 2 processes, this run has 1" in result.stderr
  continued = _losses(workdir)
  np.testing.assert_allclose([continued[7], continued[8]], [single[7], single[8]], rtol=1e-5)
