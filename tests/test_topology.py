"""A run continues after its topology changes: parameters sharded FSDP x tensor-parallel on a
4 x 2 mesh of 8 devices restore onto 1 device; the run continues on a 2 x 1 mesh of 2 devices,
then on 1 device. Each restore gives bit-exactly the values on disk; a global batch that no
longer divides fails at once saying what to change. (Two processes -> one:
tests/test_multihost.py.)"""

import base64
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import load_config
from helpers import runs

from mmjax.train.checkpoint import flat_paths, read_arrays, remap_iterator_states
from mmjax.train.trainer import restore_for_eval

TESTS = os.path.dirname(os.path.abspath(__file__))
COMMON = ("model.name=netvlad", "checkpoint_every_steps=2", "eval_every_steps=0",
          "log_every_steps=1")
HIDDEN = "params/rgb_tower/netvlad_hidden/kernel"


def _stage(cache_dir, workdir, out, devices, *overrides):
  """tests/helpers/topology_stage.py on `devices` CPU devices."""
  command = [sys.executable, os.path.join(TESTS, "helpers", "topology_stage.py"), TESTS, workdir,
             out, *COMMON, *overrides]
  return runs.run(command, runs.env(cache_dir, devices=devices))


def _restored_specs(out, workdir, step):
  """Checks that a stage's restored parameters equal checkpoint `step`'s arrays on disk bit for
  bit; returns their partition specs on the stage's mesh."""
  restored = np.load(out)
  assert int(restored["step"]) == step
  on_disk = flat_paths(read_arrays(os.path.join(workdir, "checkpoints", str(step), "state"),
                                   keys=["params"]))
  assert sorted(on_disk) == sorted(k for k in restored.files if k.startswith("params/"))
  for name, value in on_disk.items():
    np.testing.assert_array_equal(restored[name], value, err_msg=name)
  return json.loads(str(restored["specs"]))


def _saved_partition_spec(workdir, step, path):
  """The partition spec Orbax recorded for array `path` of checkpoint `step`."""
  with open(os.path.join(workdir, "checkpoints", str(step), "state", "_sharding")) as f:
    recorded = {base64.b64decode(k).decode(): json.loads(v) for k, v in json.load(f).items()}
  return recorded[path.replace("/", ".")]["partition_spec"]


def test_4x2_to_2x1_to_one_device(cache_dir, tmp_path):
  workdir = str(tmp_path / "work")
  _stage(cache_dir, workdir, str(tmp_path / "0.npz"), 8, "total_steps=4",
         "mesh=(('data', 4), ('model', 2))")
  assert _saved_partition_spec(workdir, 4, HIDDEN) == ["data", "model"]  # really sharded
  # 8 devices -> this test process's single device.
  config = load_config("ytb8m", "tiny")
  runs.apply_overrides(config, COMMON)
  _, state, _, _, _ = restore_for_eval(config, workdir, 4)
  assert jax.device_count() == 1
  on_disk = flat_paths(read_arrays(os.path.join(workdir, "checkpoints", "4", "state"),
                                   keys=["params"]))
  for name, value in flat_paths({"params": state.params}).items():
    np.testing.assert_array_equal(np.asarray(value), on_disk[name], err_msg=name)

  _stage(cache_dir, workdir, str(tmp_path / "1.npz"), 2, "total_steps=6",
         "mesh=(('data', 2), ('model', 1))")
  specs = _restored_specs(str(tmp_path / "1.npz"), workdir, 4)
  assert specs[HIDDEN[len("params/"):]] == "P('data', 'model')"

  result = _stage(cache_dir, workdir, str(tmp_path / "2.npz"), 1, "total_steps=8")
  _restored_specs(str(tmp_path / "2.npz"), workdir, 6)
  assert "resumed from" in result.stderr and "at step 6" in result.stderr
  assert max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == 8

  # 3 devices: the global batch of 8 no longer splits over the data axis.
  result = subprocess.run(
      runs.script_command("train.py", workdir, *[f"--config.{o}" for o in COMMON]),
      env=runs.env(cache_dir, devices=3), cwd=runs.ROOT, capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode != 0
  assert "config.batch_size=8 must be divisible by 3" in result.stderr
  assert "--config.mesh (e.g. ('data', 1)" in result.stderr


def test_iterator_states_map_onto_another_process_count():
  # Two processes with per-process batch 4 at global batch 3 -> one process (batch 8) or four
  # (batch 2) stand at the same global position 24.
  states = [{"next_index": 12}, {"next_index": 12}]
  assert remap_iterator_states(states, 1) == ({"next_index": 24}, True)
  assert remap_iterator_states(states, 4) == ({"next_index": 6}, True)
  # Skipped bad records leave the processes at different positions: the furthest one decides.
  assert remap_iterator_states([{"next_index": 12}, {"next_index": 14}], 1) == (
      {"next_index": 28}, False)
  with pytest.raises(ValueError, match="does not split over 5 processes"):
    remap_iterator_states(states, 5)
  with pytest.raises(ValueError, match="resume with 2 processes"):
    remap_iterator_states([{"epoch": 1}, {"epoch": 1}], 1)
