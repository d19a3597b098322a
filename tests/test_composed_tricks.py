"""Every training trick chained through config alone (online G-Blend + modality dropout + L1 +
node-pruning masks) on 8 fake devices: masks sharded like the kernels they mask, saved and
restored with the checkpoint, and a run killed after pruning resumes exactly."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
from helpers import runs

TESTS = os.path.dirname(os.path.abspath(__file__))


def _command(workdir, mode, out=""):
  return [sys.executable, os.path.join(TESTS, "helpers", "train_composed.py"), TESTS, workdir,
          mode] + ([out] if out else [])


def test_composed_tricks_on_8_devices_resume_exactly_after_a_kill(cache_dir, tmp_path):
  env = runs.env(cache_dir, devices=8)
  reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
  result = runs.run(_command(reference, "inspect", str(tmp_path / "reference.npz")), env)
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["devices"] == 8 and summary["step"] == 12
  for path, spec in summary["specs"].items():  # [1, out] masks sharded like the kernel columns
    assert spec["kernel"] == "P(None, 'model')", (path, spec)
    assert spec["mask"] == "P(None, 'model')" and spec["mask_shape"][0] == 1

  process = subprocess.Popen(_command(interrupted, "train"), env=env, cwd=runs.ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  runs.wait_for_checkpoint(process, interrupted, 8)  # pruned at update 5 (step 6)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL
  result = runs.run(_command(interrupted, "inspect", str(tmp_path / "interrupted.npz")), env)
  assert "resumed from" in result.stderr

  ours, theirs = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "interrupted.npz")
  assert sorted(ours.files) == sorted(theirs.files)
  for key in ours.files:
    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
  masks = {k: ours[k] for k in ours.files if "masks" in k}
  assert masks and any(not m.all() for m in masks.values())  # something was pruned
  for key, mask in masks.items():  # pruned columns of the kernel are exactly zero
    kernel = _kernel(ours, key)
    assert not kernel[..., ~mask.reshape(-1)].any(), key
  weights = next(ours[k] for k in ours.files if "gblend" in k and "weights" in k)
  assert np.isclose(weights.sum(), 1, atol=1e-5) and not np.allclose(weights, 1 / 3)


def _kernel(leaves, mask_key):
  """The params leaf of a mask's path (keystr paths: (0)['image_0']['kernel'] is a param)."""
  suffix = mask_key[mask_key.index(".masks") + len(".masks"):]
  return leaves[f"[0]{suffix}"]
