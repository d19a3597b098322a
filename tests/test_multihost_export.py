"""launch/export_clip.py on two real processes (gloo CPU collectives, 2 devices each) with the CLIP
parameters sharded across both (a 2 x 2 data x model mesh under mmjax.models.clip.sharding: no
process holds a whole attention or MLP kernel) writes the same model.safetensors, bit for bit, as
a single-process export of the same checkpoint."""

import os
import subprocess

import numpy as np
import portpicker
from conftest import load_config
from helpers import runs
from safetensors.numpy import load_file

from mmjax.train import train_and_evaluate
from mmjax.train.export import export_checkpoint

OVERRIDES = ("total_steps=2", "checkpoint_every_steps=2", "data.synthetic.num_eval=16")


def test_two_processes_export_parameters_sharded_across_them(cache_dir, tmp_path):
  config = load_config("clip_pretrain", "tiny")
  runs.apply_overrides(config, OVERRIDES)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)

  output = str(tmp_path / "two_processes")
  command = runs.script_command(
      "export_clip.py", workdir, f"--output={output}", *[f"--config.{o}" for o in OVERRIDES],
      "--config.mesh=(('data', 2), ('model', 2))",
      f"--coordinator_address=127.0.0.1:{portpicker.pick_unused_port()}", "--num_processes=2",
      config="configs/clip_pretrain.py:tiny")
  processes = [subprocess.Popen([*command, f"--process_id={i}"], cwd=runs.ROOT,
                                env=runs.env(cache_dir, devices=2), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-4000:]
  assert f"exported step 2 of {workdir}" in outputs[0][0]

  single = str(tmp_path / "one_process")
  assert export_checkpoint(config, workdir, single) == 2
  two, one = (load_file(os.path.join(d, "model.safetensors")) for d in (output, single))
  assert sorted(two) == sorted(one)
  for name, tensor in one.items():
    np.testing.assert_array_equal(two[name], tensor, err_msg=name)
