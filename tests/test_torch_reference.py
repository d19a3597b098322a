"""The PyTorch reference of the late-fusion YouTube-8M models (torch_reference): the same
parameters as the Flax models, the same logits, loss and gradients, a training step that trains,
and the matmul peaks. No speed assertions."""

import ast

import jax
import numpy as np
import pytest
from conftest import load_config

from mmjax import losses
from mmjax.data import youtube8m
from mmjax.projects.youtube8m import torch_reference
from mmjax.projects.youtube8m.model import build_video_classifier

torch = pytest.importorskip("torch")

FAMILIES = ("transformer", "netvlad")


def _config(name, variants="tiny", frames=8, dropout_rate=0.1):
  config = load_config("ytb8m", variants)
  config.model.name, config.model.dropout_rate = name, dropout_rate
  config.data.max_frames = frames
  return config


def _flax_model(config):
  return build_video_classifier(config.model, feature_names=tuple(config.data.feature_names),
                                num_classes=config.data.num_classes,
                                max_frames=config.data.max_frames)


def _batch(config, lengths, seed=0):
  rng = np.random.default_rng(seed)
  frames, sizes = config.data.max_frames, config.data.feature_sizes
  mask = (np.arange(frames)[None] < np.array(lengths)[:, None]).astype(np.float32)
  batch = {name: rng.normal(size=(len(lengths), frames, dim)).astype(np.float32) * mask[..., None]
           for name, dim in zip(config.data.feature_names, sizes)}
  labels = (rng.random((len(lengths), config.data.num_classes)) < 0.05).astype(np.float32)
  return {**batch, "mask": mask, "labels": labels,
          "weight": np.array([1.0] * (len(lengths) - 1) + [0.0], np.float32)}


def _check_same_parameters(config, name):
  """Every Flax leaf has its torch entry, of the same (transposed) shape, and nothing else."""
  batch = _batch(config, [config.data.max_frames])
  shapes = jax.eval_shape(lambda: _flax_model(config).init(jax.random.PRNGKey(0), batch))
  with torch.device("meta"):
    model = torch_reference.build_torch_model(config, name)
  state = {k: tuple(v.shape) for k, v in model.state_dict().items()
           if not k.endswith("num_batches_tracked")}
  expected = {}
  for (collection, path), leaf in torch_reference.flax_leaves(shapes).items():
    torch_name, transpose = torch_reference.torch_name(collection, path)
    expected[torch_name] = tuple(reversed(leaf.shape)) if transpose else tuple(leaf.shape)
  assert state == expected
  flax_count = sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))
  assert sum(p.numel() for p in model.parameters()) == flax_count
  return flax_count


@pytest.mark.parametrize("name", FAMILIES)
def test_same_parameter_shapes_tiny(name):
  _check_same_parameters(_config(name), name)


@pytest.mark.parametrize("name", FAMILIES)
def test_same_parameter_shapes_at_default_sizes(name):
  config = _config(name, variants="", frames=300)
  total = _check_same_parameters(config, name)
  if name == "netvlad":  # the 128 x 1024 -> 512 hidden layer dominates (configs/ytb8m.py)
    assert 70e6 < total < 80e6


def _torch_batch(batch):
  return {k: torch.from_numpy(v) for k, v in batch.items()}


def _random_variables(shapes, rng):
  """Flax variables of the shapes `shapes` (jax.eval_shape of init) drawn by numpy (no XLA
  compile): kernels N(0, 1/fan_in), scales and running variances U(0.5, 1.5), the rest
  N(0, 0.1^2)."""
  def draw(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, leaf.shape)
    return rng.normal(0.0, leaf.shape[0] ** -0.5 if name == "kernel" else 0.1, leaf.shape)
  return jax.tree_util.tree_map_with_path(lambda p, x: draw(p, x).astype(np.float32), shapes)


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_loss_and_gradients_match_flax(name):
  config = _config(name, dropout_rate=0.0)
  flax_model = _flax_model(config)
  batch = _batch(config, [8, 5, 2, 1])
  variables = _random_variables(
      jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0), batch)),
      np.random.default_rng(2))
  model = torch_reference.build_torch_model(config, name)
  torch_reference.load_flax_variables(model, variables)
  tb = _torch_batch(batch)

  def flax_loss(params):
    logits, updates = flax_model.apply({**variables, "params": params}, batch, train=True,
                                       mutable=["batch_stats"])
    loss = losses.multilabel_sigmoid_cross_entropy(logits, batch["labels"], batch["weight"])
    return loss, updates.get("batch_stats", {})

  @jax.jit
  def flax_outputs(variables):  # one compile: eval logits; train loss, batch stats, gradients
    return (flax_model.apply(variables, batch, train=False),
            jax.value_and_grad(flax_loss, has_aux=True)(variables["params"]))

  eval_logits, ((loss, new_stats), grads) = flax_outputs(variables)
  with torch.no_grad():
    np.testing.assert_allclose(model.eval()(tb).numpy(), eval_logits, atol=1e-4, rtol=1e-4)
  torch_loss = torch_reference.multilabel_bce(model.train()(tb), tb["labels"], tb["weight"])
  torch_loss.backward()
  np.testing.assert_allclose(torch_loss.item(), loss, rtol=1e-5)
  torch_grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
  flax_grads = torch_reference.flax_leaves({"params": grads})
  scale = max(float(np.abs(g).max()) for g in flax_grads.values())
  for (_, path), grad in flax_grads.items():  # (the k_proj bias gradients are 0 up to rounding)
    torch_name, transpose = torch_reference.torch_name("params", path)
    np.testing.assert_allclose(torch_grads[torch_name], grad.T if transpose else grad,
                               atol=1e-5 * scale, rtol=1e-3, err_msg=torch_name)
  # The running means move the same way (torch's running variance is unbiased: not compared).
  state = model.state_dict()
  for (_, path), mean in torch_reference.flax_leaves({"batch_stats": new_stats}).items():
    if path[-1] == "mean":
      np.testing.assert_allclose(state[torch_reference.torch_name("batch_stats", path)[0]],
                                 mean, atol=1e-5)


def test_dequantize_frames_is_the_starter_codes():
  q = np.arange(256, dtype=np.uint8).reshape(1, 2, 128)
  mask = torch.tensor([[1.0, 0.0]])
  x = torch_reference.torch_modules().dequantize_frames(torch.from_numpy(q), mask).numpy()
  np.testing.assert_allclose(x[0, 0], youtube8m.dequantize(q[0, 0]), rtol=1e-6)
  np.testing.assert_array_equal(x[0, 1], 0.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_train_step_benchmark_trains(name):
  config = _config(name)
  threads = torch.get_num_threads()
  run = lambda steps: torch_reference.torch_train_step_benchmark(
      config, name, batch_size=4, frames=8, steps=steps, warmup=0, num_threads=1,
      num_batches=1, count_flops=steps > 1)
  first, later = run(1), run(6)  # same seed: same weights, the same batch every step
  assert later["final_loss"] < first["final_loss"]
  assert later["params"] == _check_same_parameters(config, name)
  assert later["torch_flops_per_step"] > 0 and "torch_flops_per_step" not in first
  for key in ("step_s", "step_min_s", "examples_per_s", "user_cpu_s"):
    assert later[key] > 0, key
  assert later["num_threads"] == 1 and later["torch_version"] == torch.__version__
  assert torch.get_num_threads() == threads  # restored


def test_unsupported_model_is_refused():
  with pytest.raises(ValueError, match="late fusion"):
    torch_reference.build_torch_model(_config("netvlad"), "netvlad_cmc")


def test_matmul_peaks_and_comparison():
  peaks = torch_reference.matmul_peak_benchmark(64, 2, num_threads=1)
  assert peaks["jax_matmul_tflops_per_s"] > 0 and peaks["torch_matmul_tflops_per_s"] > 0
  out = torch_reference.comparison(
      {"examples_per_s": 30.0, "step_s": 2.0, "flops_per_step": 4e12},
      {"examples_per_s": 10.0, "step_s": 4.0},
      {"jax_matmul_tflops_per_s": 4.0, "torch_matmul_tflops_per_s": 2.0})
  assert out == {"jax_examples_per_s": 30.0, "torch_examples_per_s": 10.0,
                 "jax_over_torch": 3.0, "flops_per_step": 4e12, "jax_tflops_per_s": 2.0,
                 "torch_tflops_per_s": 1.0, "jax_peak_fraction": 0.5,
                 "torch_peak_fraction": 0.5, "twice_torch_peak_fraction": 0.5}


def test_the_module_imports_torch_only_inside_functions():
  with open(torch_reference.__file__, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
  names = [alias.name for node in top_level for alias in node.names]
  names += [node.module for node in top_level if isinstance(node, ast.ImportFrom)]
  assert names and not any(name and name.split(".")[0] == "torch" for name in names)
