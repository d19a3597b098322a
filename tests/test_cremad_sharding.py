"""CREMA-D's shared encoders trained sharded (seed 002; mmjax.projects.cremad): the trainer's own
state creation (create_train_state with config.sharding_rules = encoders.partition_rules) and
train step (make_train_step with the config's optimizer, Adam) on a data 4 x model 2 mesh of 8
fake CPU devices against the same on one device, one step on the same random batch: equal
initial parameters, loss, gradients (Adam's first moment), updated parameters and BatchNorm
statistics, with the kernels really split (FSDP over 'data'). A subprocess runs this file as a
script: XLA_FLAGS must be set before jax starts.

Adam's first step moves a parameter by about learning_rate * sign(gradient), so an entry whose
gradient is at float32 round-off (|g| ~ 1e-8 next to a largest |g| ~ 0.2; a few dozen of each
of ResNet18's last-stage kernels at 32 px) moves by +-lr depending on the summation order. The
gradients are compared everywhere (to 1e-5 of the largest); the updated parameters wherever the
two meshes' gradients agree to 0.1% (their own round-off), and the entries left out must be
rare (< 1%).

Fast cells: VGG16 (classifier width 64) and a tiny VideoMAE at the 'tiny' inputs (32 px, 4
frames; 80 s on two busy CPU cores, nearly all of it XLA compiling four programs per cell).
The slow test: VGG16 at its published size (138M parameters), VideoMAE as ViT-B (86M) at the
same inputs, and ResNet18 (its only size, 11.7M: BatchNorm statistics; ~50 s on its own, too
slow for the fast set)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from mmjax import parallel
from mmjax.projects.cremad import encoders
from mmjax.tasks import get_task
from mmjax.train.steps import create_train_state, make_train_step
from mmjax.train.trainer import build_optimizer_for

TESTS = os.path.dirname(os.path.abspath(__file__))
BATCH = 8
MESH = [("data", 4), ("model", 2)]
FAST_CELLS = ("vgg16_multimodal", "videomae_multimodal")
SLOW_CELLS = ("vgg16_multimodal", "videomae_multimodal", "resnet18_multimodal")
GRADIENT_AGREES = 1e-3  # updates compared where the meshes' gradients agree to this, relative


def _config(cell: str, size: str):
  """configs/cremad.py:<cell>,tiny (32 px, 4 or 8 frames) with the model at `size`."""
  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, TESTS)
  from conftest import load_config
  config = load_config("cremad", f"{cell},tiny")
  with config.unlocked():
    config.model = encoders.model_config(config.model.encoder, size)
  return config


def _random_batch(task, seed: int):
  """task.example_batch(BATCH) with inputs uniform in [0, 1), random labels and frame counts."""
  rng = np.random.default_rng(seed)
  batch = task.example_batch(BATCH)
  batch["inputs"] = rng.random(batch["inputs"].shape, dtype=np.float32)
  batch["label"] = rng.integers(0, task.num_classes, BATCH).astype(np.int32)
  batch["frames"] = rng.integers(1, 9, BATCH).astype(np.int32)
  return batch


def _one_step(config, task, tx, batch, devices, axes) -> dict:
  """The trainer's step-0 state on a mesh of `devices` and one train step on `batch`; host
  copies of the initial and updated parameters, Adam's first moment mu = (1 - b1) gradient,
  the BatchNorm statistics ({} without BatchNorm), the step's metrics and the placement of the
  initial parameters."""
  host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
  mesh = parallel.make_mesh(axes, devices=devices)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  placed = {parallel.path_to_str(path): {"spec": str(x.sharding.spec), "shape": list(x.shape),
                                         "shard": list(x.addressable_shards[0].data.shape)}
            for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
  initial = host(state.params)
  state, metrics = make_train_step(task, tx, mesh, shardings)(
      state, parallel.global_batch(batch, mesh))
  return {"initial": initial, "params": host(state.params), "step": int(state.step),
          "mu": host(optax.tree_utils.tree_get(state.opt_state, "mu")),
          "batch_stats": host(state.model_state.get("batch_stats", {})),
          "metrics": {name: float(value) for name, value in metrics.items()}, "placed": placed}


def _max_abs(tree) -> float:
  """max |x| over every leaf of `tree` (0 for an empty tree)."""
  return max((float(np.max(np.abs(x))) for x in jax.tree.leaves(tree)), default=0.0)


def _difference(a, b, where=None) -> float:
  """max |a - b| over the leaves of two trees of the same structure, over the entries where
  the matching leaf of `where` is True when given (0 for empty trees)."""
  where = jax.tree.map(lambda x: True, a) if where is None else where
  return _max_abs(jax.tree.map(lambda x, y, w: (x - y) * w, a, b, where))


def _compare(cell: str, size: str) -> dict:
  """One cell on 8 devices (data 4 x model 2) and on one device; a JSON-able summary."""
  config = _config(cell, size)
  task = get_task(config)
  tx = build_optimizer_for(config, task)
  batch = _random_batch(task, seed=1)
  one = _one_step(config, task, tx, batch, jax.devices()[:1], [("data", 1), ("model", 1)])
  eight = _one_step(config, task, tx, batch, jax.devices(), MESH)
  gradient_difference = _difference(one["mu"], eight["mu"])
  compared = jax.tree.map(lambda a, b: np.abs(a - b) <= GRADIENT_AGREES * np.abs(a),
                          one["mu"], eight["mu"])
  num_params = sum(x.size for x in jax.tree.leaves(one["initial"]))
  return {
      "devices": jax.device_count(),
      "rules_are_encoders": tuple(config.sharding_rules) == encoders.partition_rules(
          config.model.encoder),
      "num_params": num_params, "steps": [one["step"], eight["step"]],
      "metrics": [one["metrics"], eight["metrics"]],
      "init_difference": _difference(one["initial"], eight["initial"]),
      "param_change": _difference(one["initial"], one["params"]),
      "gradient_scale": _max_abs(one["mu"]), "gradient_difference": gradient_difference,
      "param_difference": _difference(one["params"], eight["params"], compared),
      "param_difference_all": _difference(one["params"], eight["params"]),
      "round_off_fraction": 1 - sum(int(x.sum()) for x in jax.tree.leaves(compared)) / (
          num_params),
      "num_batch_stats": len(jax.tree.leaves(one["batch_stats"])),
      "batch_stats_scale": _max_abs(one["batch_stats"]),
      "batch_stats_difference": _difference(one["batch_stats"], eight["batch_stats"]),
      "placed": eight["placed"]}


def _main(size: str, cells: list[str]) -> None:
  """Prints one JSON line {cell: _compare(cell, size)}."""
  print(json.dumps({cell: _compare(cell, size) for cell in cells}))


def _run_children(size: str, cells, timeout: int) -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, os.path.abspath(__file__), size, *cells], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _check(summary: dict, num_params: int | None = None) -> None:
  assert summary["devices"] == 8 and summary["rules_are_encoders"]
  assert num_params is None or summary["num_params"] == num_params, summary["num_params"]
  assert summary["steps"] == [1, 1]
  one, eight = summary["metrics"]
  assert one["nonfinite"] == eight["nonfinite"] == 0
  assert 0.5 < one["loss"] < 10.0, one  # cross-entropy over 6 classes at a random init
  assert abs(eight["loss"] - one["loss"]) <= 1e-5 * max(1.0, one["loss"]), summary["metrics"]
  assert abs(eight["grad_norm"] - one["grad_norm"]) <= 1e-5 * one["grad_norm"]
  assert summary["init_difference"] == 0.0  # the same initialisation on any mesh
  assert summary["param_change"] > 1e-4  # the step moved the parameters (Adam: ~learning rate)
  assert summary["gradient_difference"] <= 1e-5 * summary["gradient_scale"], summary
  assert summary["param_difference"] <= 1e-5, summary
  assert summary["round_off_fraction"] < 1e-2, summary
  assert summary["batch_stats_difference"] <= 1e-5 * max(1.0, summary["batch_stats_scale"])
  split = {name: p for name, p in summary["placed"].items()
           if name.endswith("kernel") and "data" in p["spec"] and p["shard"] != p["shape"]}
  assert split, summary["placed"]
  for name, placement in split.items():  # a 'data' dimension holds a quarter on each device
    ratio = [dim // shard for dim, shard in zip(placement["shape"], placement["shard"])]
    assert max(ratio) in (4, 8) and all(r in (1, 2, 4, 8) for r in ratio), name


def _check_cell(cell: str, summary: dict) -> None:
  placed = summary["placed"]
  if cell.startswith("vgg16"):
    assert placed["encoder/features_0/kernel"]["spec"] == "P(None, None, None, 'data')"
    assert placed["encoder/features_0/kernel"]["shard"] == [3, 3, 3, 64 // 4]
    assert placed["encoder/classifier_0/kernel"]["spec"] == "P('data', 'model')"
    width = placed["encoder/classifier_0/kernel"]["shape"][1]
    assert placed["encoder/classifier_0/kernel"]["shard"] == [512 * 49 // 4, width // 2]
    assert summary["num_batch_stats"] == 0
  if cell.startswith("videomae"):
    assert placed["encoder/layers_0/mlp/fc1/kernel"]["spec"] == "P('data', 'model')"
  if cell.startswith("resnet18"):
    assert placed["encoder/layer4_1/conv2/kernel"]["shard"] == [3, 3, 512, 512 // 4]
    assert summary["num_batch_stats"] == 2 * 20  # mean and var of each of its 20 BatchNorms
    assert summary["batch_stats_scale"] > 0.0


@pytest.fixture(scope="module")
def tiny_summaries():
  return _run_children("tiny", FAST_CELLS, timeout=300)


@pytest.mark.parametrize("cell", FAST_CELLS)
def test_sharded_train_step_equals_one_device(tiny_summaries, cell):
  _check(tiny_summaries[cell])
  _check_cell(cell, tiny_summaries[cell])


@pytest.mark.slow
def test_sharded_train_step_equals_one_device_at_paper_model_size():
  summaries = _run_children("paper", SLOW_CELLS, timeout=1800)
  # The full models with a 6-emotion head (VGG16: 138,357,544 at 1000 classes).
  exact = {"vgg16_multimodal": 134_285_126, "videomae_multimodal": 86_241_030,
           "resnet18_multimodal": 11_179_590}
  for cell, summary in summaries.items():
    _check(summary, num_params=exact[cell])
    _check_cell(cell, summary)
  vgg = summaries["vgg16_multimodal"]["placed"]
  assert vgg["encoder/classifier_3/kernel"]["shard"] == [4096 // 4, 4096 // 2]


if __name__ == "__main__":
  _main(sys.argv[1], sys.argv[2:])
