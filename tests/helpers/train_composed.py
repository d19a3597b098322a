"""Trains AV-digits with every training trick chained through config alone (online G-Blend,
modality dropout, L1, node pruning) on a 4 x 2 mesh, then (mode 'inspect') restores the final
checkpoint and writes its state to OUT.npz and, as the last stdout line, the shardings of the
pruning masks and their kernels as JSON.

  train_composed.py TESTS_DIR WORKDIR train|inspect [OUT.npz]
"""

import json
import sys

sys.path.insert(0, sys.argv[1])  # the tests directory
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from conftest import load_config  # pylint: disable=wrong-import-position

from mmjax.parallel import path_to_str  # pylint: disable=wrong-import-position
from mmjax.train import train_and_evaluate  # pylint: disable=wrong-import-position
from mmjax.train.trainer import restore_for_eval  # pylint: disable=wrong-import-position
from mmjax.transforms.pruning import (  # pylint: disable=wrong-import-position
  NodePruningState,
)

PRUNE_AT = 5  # update 5 = step 6: between the checkpoints of steps 4 and 8


def composed_config():
  config = load_config("avdigits", "gblend,mdrop,l1,prune,tiny")
  config.mesh = (("data", 4), ("model", 2))
  config.total_steps, config.checkpoint_every_steps, config.eval_every_steps = 12, 4, 4
  config.keep_checkpoints = 10
  with config.evals.unlocked():  # G-Blend's two splits and 'eval' stay
    for split in ("test", "test_no_audio", "test_no_image"):
      del config.evals[split]
  name, kwargs = config.optimizer.weight_transforms[0]
  config.optimizer.weight_transforms = ((name, {**kwargs, "k": 0.6, "at_steps": (PRUNE_AT,)}),)
  return config


def inspect(config, workdir, out):
  _, state, _, _, step = restore_for_eval(config, workdir)
  is_pruning = lambda x: isinstance(x, NodePruningState)
  pruning = [x for x in jax.tree.leaves(state.opt_state, is_leaf=is_pruning) if is_pruning(x)]
  specs = {}
  for path, mask in jax.tree_util.tree_leaves_with_path(pruning[0].masks):
    kernel = state.params
    for part in path_to_str(path).split("/"):
      kernel = kernel[part]
    specs[path_to_str(path)] = {"mask": str(mask.sharding.spec), "mask_shape": mask.shape,
                                "kernel": str(kernel.sharding.spec)}
  leaves = jax.tree_util.tree_leaves_with_path((state.params, state.opt_state, state.task_state))
  np.savez(out, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})
  print(json.dumps({"step": step, "devices": jax.device_count(), "specs": specs}))


def main():
  config, workdir, mode = composed_config(), sys.argv[2], sys.argv[3]
  if mode == "train":
    train_and_evaluate(config, workdir)
  else:
    train_and_evaluate(config, workdir)
    inspect(config, workdir, sys.argv[4])


if __name__ == "__main__":
  main()
