"""One process of a two-process CPU training job (gloo collectives), run by test_multihost.py:

  python multihost_train.py TESTS_DIR WORKDIR PORT PROCESS_ID OUT_DIR [config overrides...]

Trains the tiny ytb8m config through mmjax.train.train_and_evaluate (the fault-injecting task
of helpers/signalling_task.py is registered: override task=signalled_youtube8m and set
MMJAX_TEST_SIGNAL to preempt), then writes this process's view of the full parameters
(all-gathered) to OUT_DIR/params_<PROCESS_ID>.npz. Exits with PREEMPTED_EXIT_CODE when
preempted, like launch/train.py.
"""

import sys

sys.path.insert(0, sys.argv[1])  # the tests directory

import jax  # noqa: E402
import numpy as np  # noqa: E402
from conftest import load_config  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import helpers.signalling_task  # noqa: E402,F401  pylint: disable=unused-import
from helpers.runs import apply_overrides  # noqa: E402
from mmjax import distributed, parallel  # noqa: E402
from mmjax.train import PREEMPTED_EXIT_CODE, Preempted, train_and_evaluate  # noqa: E402
from mmjax.train.trainer import restore_for_eval  # noqa: E402

tests_dir, workdir, port, process_id, out_dir = sys.argv[1:6]
distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
config = load_config("ytb8m", "tiny")
apply_overrides(config, sys.argv[6:])
try:
  train_and_evaluate(config, workdir)
except Preempted as e:
  print(e, file=sys.stderr)
  sys.exit(PREEMPTED_EXIT_CODE)
_, state, _, _, _ = restore_for_eval(config, workdir)
gathered = multihost_utils.process_allgather(state.params, tiled=True)
flat = {parallel.path_to_str(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(gathered)}
np.savez(f"{out_dir}/params_{process_id}.npz", **flat)
print("done", jax.process_index())
