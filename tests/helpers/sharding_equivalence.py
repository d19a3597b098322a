"""Run the forward pass and a few train steps of a config's tiny variant on a 4x2 mesh over 8
(fake CPU) devices and on a single device; print a JSON summary. Invoked by
tests/test_sharding.py with XLA_FLAGS=--xla_force_host_platform_device_count=8 (must be set
before jax starts) as:
  sharding_equivalence.py TESTS_DIR CONFIG_NAME [--optimizers=adam,sgd] [key=value ...]."""

import json
import sys

import jax
import numpy as np

sys.path.insert(0, sys.argv[1])  # the tests directory
from conftest import load_config  # pylint: disable=wrong-import-position

from mmjax import parallel  # pylint: disable=wrong-import-position
from mmjax.tasks import get_task  # pylint: disable=wrong-import-position
from mmjax.train.steps import create_train_state, make_train_step  # pylint: disable=wrong-import-position
from mmjax.train.trainer import build_optimizer_for  # pylint: disable=wrong-import-position


def run(config, devices, mesh_axes, batches, forward=True):
  """(losses, final params, partition specs, outputs of the initial forward pass or None)."""
  mesh = parallel.make_mesh(mesh_axes, devices=devices)
  task = get_task(config)
  task.prepare(lambda *a: None)
  tx = build_optimizer_for(config, task)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  step = make_train_step(task, tx, mesh, shardings)
  outputs = None
  if forward:
    with jax.set_mesh(mesh):
      outputs = jax.jit(lambda p, b: task.model.apply({"params": p, **state.model_state}, b))(
          state.params, parallel.global_batch(batches[0], mesh))
    outputs = jax.tree.map(np.asarray, outputs)
  losses = []
  for batch in batches:
    state, metrics = step(state, parallel.global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  specs = {parallel.path_to_str(p): str(s.spec) for p, s in
           jax.tree_util.tree_flatten_with_path(shardings.params)[0]}
  params = jax.tree.map(np.asarray, state.params)
  return losses, params, specs, outputs


def main():
  config = load_config(sys.argv[2], "tiny")
  optimizers = ("adam", "sgd")
  if len(sys.argv) > 3 and sys.argv[3].startswith("--optimizers="):
    optimizers = tuple(sys.argv.pop(3).split("=", 1)[1].split(","))
  for override in sys.argv[3:]:
    key, value = override.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = type(node[leaf])(value)
  config.optimizer.learning_rate = 1e-2  # large enough that parameter differences would show
  task = get_task(config)
  task.prepare(lambda *a: None)
  iterator = iter(task.train_dataset(config.batch_size, config.seed, 0, 1))
  batches = [next(iterator) for _ in range(4)]
  summary = {"devices": jax.device_count()}
  # Adam's m / sqrt(v) turns float-rounding noise in near-zero gradients into +-lr steps, so
  # parameters are compared after plain SGD; losses are compared for both.
  # The forward pass (initial parameters, the same for both optimizers) is compared once.
  for optimizer in optimizers:
    config.optimizer.name = optimizer
    forward = optimizer == optimizers[0]
    sharded = run(config, jax.devices(), [("data", 4), ("model", 2)], batches, forward)
    single = run(config, jax.devices()[:1], [("data", 1), ("model", 1)], batches, forward)
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), sharded[1], single[1])
    summary[optimizer] = {"losses_sharded": sharded[0], "losses_single": single[0],
                          "max_param_diff": max(jax.tree.leaves(diffs))}
    if forward:
      outputs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), sharded[3], single[3])
      summary["max_output_diff"] = max(jax.tree.leaves(outputs))
    summary["specs"] = sharded[2]
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
