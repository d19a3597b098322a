"""Two real processes on localhost (gloo CPU collectives, 2 devices each) train the tiny ytb8m
config together: both finish with identical parameters, equal to a 1-process 4-device run's
losses, and the shared checkpoint restores."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
from helpers import runs

TESTS = os.path.dirname(os.path.abspath(__file__))
OVERRIDES = ("total_steps=6", "checkpoint_every_steps=3", "eval_every_steps=0", "log_every_steps=1",
             "model.name=netvlad")


def _losses(workdir):
  return [r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
          if r["split"] == "train"]


def test_two_processes_train_together(cache_dir, tmp_path):
  workdir, out = str(tmp_path / "work"), str(tmp_path)
  port = portpicker.pick_unused_port()
  helper = os.path.join(TESTS, "helpers", "multihost_train.py")
  processes = [
      subprocess.Popen([sys.executable, helper, TESTS, workdir, str(port), str(i), out, *OVERRIDES],
                       env=runs.env(cache_dir, devices=2), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-4000:]
  params = [np.load(os.path.join(out, f"params_{i}.npz")) for i in range(2)]
  assert sorted(params[0].files) == sorted(params[1].files)
  for name in params[0].files:
    np.testing.assert_array_equal(params[0][name], params[1][name], err_msg=name)
  assert max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == 6

  single = str(tmp_path / "single")
  runs.run(runs.script_command("train.py", single, *[f"--config.{o}" for o in OVERRIDES]),
           runs.env(cache_dir, devices=4))
  np.testing.assert_allclose(_losses(workdir), _losses(single), rtol=1e-5)
