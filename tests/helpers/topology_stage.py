"""One stage of the topology-change test (tests/test_topology.py), on this process's devices:

  python topology_stage.py TESTS_DIR WORKDIR OUT_NPZ [config overrides...]

If WORKDIR has a checkpoint, restores it onto the current mesh first and writes the restored
parameters (host copies), their partition specs and the step to OUT_NPZ; then trains the tiny
ytb8m config (resuming) to config.total_steps with mmjax.train.train_and_evaluate.
"""

import json
import os
import sys

sys.path.insert(0, sys.argv[1])  # the tests directory

import jax  # noqa: E402
import numpy as np  # noqa: E402
from conftest import load_config  # noqa: E402

from helpers.runs import apply_overrides  # noqa: E402
from mmjax import parallel  # noqa: E402
from mmjax.train import train_and_evaluate  # noqa: E402
from mmjax.train.trainer import restore_for_eval  # noqa: E402

workdir, out = sys.argv[2:4]
config = load_config("ytb8m", "tiny")
apply_overrides(config, sys.argv[4:])
if os.path.isdir(os.path.join(workdir, "checkpoints")):
  _, state, _, _, step = restore_for_eval(config, workdir)
  leaves = jax.tree_util.tree_leaves_with_path(state.params)
  specs = {parallel.path_to_str(path): str(leaf.sharding.spec) for path, leaf in leaves}
  np.savez(out, step=step, specs=json.dumps(specs),
           **{"params/" + parallel.path_to_str(path): np.asarray(leaf) for path, leaf in leaves})
train_and_evaluate(config, workdir)
print("devices", jax.device_count())
