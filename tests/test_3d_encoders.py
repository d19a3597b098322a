"""The 3D CNN encoders (mmjax.models.i3d, mmjax.models.simple3d) against PyTorch references
written here from the pytorch-i3d `InceptionI3d` layout (TF-"SAME" padding with F.pad, Unit3D =
Conv3d + BatchNorm3d(eps 1e-3, momentum 0.01) + ReLU, Mixed blocks b0/b1a/b1b/b2a/b2b/b3b):
eval and train logits, updated running statistics, checkpoint names and shapes at full size,
parameter counts, head replacement and error paths. Narrow widths keep it fast."""

import logging
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import i3d as i3d_lib
from mmjax.models import torch_import
from mmjax.models.i3d import I3D, load_i3d
from mmjax.models.simple3d import Simple3D

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

WIDTHS = {  # b0, b1a, b1b, b2a, b2b, b3b (Carreira & Zisserman 2017, Fig. 3)
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128)}
END_POINTS = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
              "MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b",
              "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b",
              "Mixed_5c")
SMALL = 0.125  # width multiplier of the fast tests


def _pad_same(x, kernel, stride):
  """F.pad of an NCTHW tensor the way pytorch-i3d does (zeros, TF "SAME")."""
  pad = []
  for size, k, s in zip(x.shape[2:], kernel, stride):
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    pad.append((total // 2, total - total // 2))
  return F.pad(x, [p for pair in reversed(pad) for p in pair])


class TorchUnit3D(nn.Module):
  def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), bn=True, bias=False,
               relu=True, eps=1e-3, momentum=0.01):
    super().__init__()
    self.kernel, self.stride, self.relu = kernel, stride, relu
    self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=bias)
    self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=momentum) if bn else None

  def forward(self, x):
    x = self.conv3d(_pad_same(x, self.kernel, self.stride))
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.relu else x


class TorchMaxPool(nn.Module):
  def __init__(self, kernel, stride):
    super().__init__()
    self.kernel, self.stride = kernel, stride

  def forward(self, x):
    return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class TorchInception(nn.Module):
  def __init__(self, cin, widths):
    super().__init__()
    w0, w1a, w1b, w2a, w2b, w3b = widths
    self.b0 = TorchUnit3D(cin, w0)
    self.b1a, self.b1b = TorchUnit3D(cin, w1a), TorchUnit3D(w1a, w1b, (3, 3, 3))
    self.b2a, self.b2b = TorchUnit3D(cin, w2a), TorchUnit3D(w2a, w2b, (3, 3, 3))
    self.b3a, self.b3b = TorchMaxPool((3, 3, 3), (1, 1, 1)), TorchUnit3D(cin, w3b)
    self.out_channels = w0 + w1b + w2b + w3b

  def forward(self, x):
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                      self.b3b(self.b3a(x))], dim=1)


class TorchI3D(nn.Module):
  """InceptionI3d's end points; the head pool [2, 7, 7] clipped to the map, logits averaged."""

  def __init__(self, num_classes, multiplier=1.0, dropout=0.0):
    super().__init__()
    w = lambda c: max(1, round(c * multiplier))
    self.Conv3d_1a_7x7 = TorchUnit3D(3, w(64), (7, 7, 7), (2, 2, 2))
    self.MaxPool3d_2a_3x3 = TorchMaxPool((1, 3, 3), (1, 2, 2))
    self.Conv3d_2b_1x1 = TorchUnit3D(w(64), w(64))
    self.Conv3d_2c_3x3 = TorchUnit3D(w(64), w(192), (3, 3, 3))
    self.MaxPool3d_3a_3x3 = TorchMaxPool((1, 3, 3), (1, 2, 2))
    self.MaxPool3d_4a_3x3 = TorchMaxPool((3, 3, 3), (2, 2, 2))
    self.MaxPool3d_5a_2x2 = TorchMaxPool((2, 2, 2), (2, 2, 2))
    channels = w(192)
    for name, widths in WIDTHS.items():
      setattr(self, name, TorchInception(channels, [w(c) for c in widths]))
      channels = getattr(self, name).out_channels
    self.dropout = nn.Dropout(dropout)
    self.num_classes = num_classes
    if num_classes:
      self.logits = TorchUnit3D(channels, num_classes, bn=False, bias=True, relu=False)

  def forward(self, x):
    for name in END_POINTS:
      x = getattr(self, name)(x)
    x = F.avg_pool3d(x, [min(k, n) for k, n in zip((2, 7, 7), x.shape[2:])], stride=1)
    if not self.num_classes:
      return x.mean(dim=(2, 3, 4))
    return self.logits(self.dropout(x)).mean(dim=(2, 3, 4))


def _randomise(model, seed=0):
  """He-normal convs and random BatchNorm affine/running statistics (signal stays O(1))."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv3d):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
        if module.bias is not None:
          module.bias.normal_(0.0, 0.1, generator=gen)
      elif isinstance(module, nn.BatchNorm3d):
        module.weight.uniform_(0.6, 1.4, generator=gen)
        module.bias.normal_(0.0, 0.1, generator=gen)
        module.running_mean.normal_(0.0, 0.2, generator=gen)
        module.running_var.uniform_(0.5, 2.0, generator=gen)
  return model


def _state_dict(model):
  return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def _clip(shape, seed=0):
  """A random clip, torch NCTHW and Flax NTHWC."""
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  return torch.from_numpy(x), jnp.asarray(x.transpose(0, 2, 3, 4, 1))


def _close(actual, expected, rtol=1e-4):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  scale = float(np.max(np.abs(expected)))
  assert scale > 1e-3  # the comparison is not trivially between zeros
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def small_torch():
  return _randomise(TorchI3D(num_classes=5, multiplier=SMALL)).eval()


# [B, C, T, H, W]: even sizes; odd sizes everywhere (asymmetric "SAME" pads), which leave a
# 3 x 2 x 9 map after Mixed_5c, pooled by [2, 2, 7] to 2 x 1 x 3 logits positions to average.
@pytest.mark.parametrize("shape", [(1, 3, 16, 64, 64), (2, 3, 17, 63, 259)])
def test_i3d_eval_matches_torch(small_torch, shape):
  model = I3D(num_classes=5, width_multiplier=SMALL)
  variables = load_i3d(model, _state_dict(small_torch))
  x_torch, x = _clip(shape)
  with torch.no_grad():
    expected = small_torch(x_torch).numpy()
  _close(jax.jit(model.apply)(variables, x), expected)


def test_i3d_train_step_matches_torch():
  torch_model = _randomise(TorchI3D(num_classes=5, multiplier=SMALL), seed=1).train()
  before = _state_dict(torch_model)
  model = I3D(num_classes=5, dropout_rate=0.0, width_multiplier=SMALL)
  variables = load_i3d(model, before)
  x_torch, x = _clip((2, 3, 16, 48, 40), seed=3)
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  expected = torch_model(x_torch).detach().numpy()
  _close(logits, expected)
  after = _state_dict(torch_model)
  stats = torch_import.state_dict_from_variables(updates, i3d_lib.torch_name)
  assert len(stats) == len([k for k in after if k.endswith(("running_mean", "running_var"))])
  for name, value in stats.items():  # torch's update: the unbiased batch variance (mmjax.nn.conv)
    np.testing.assert_allclose(value, after[name], rtol=1e-5, atol=1e-5)
    assert not np.allclose(value, before[name]), name


def test_i3d_full_size_names_shapes_and_count():
  torch_model = TorchI3D(num_classes=6)
  template = jax.eval_shape(I3D(num_classes=6).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 16, 224, 224, 3)))
  torch_count = sum(p.numel() for p in torch_model.parameters())
  assert _count(template["params"]) == torch_count == 12_293_414  # the paper's "12.3M"
  names = {i3d_lib.torch_name(path) for path in _paths(template)}
  state = _state_dict(torch_model)
  assert names == {k for k in state if not k.endswith("num_batches_tracked")}
  loaded = load_i3d(template, state)
  assert jax.tree.map(np.shape, loaded) == jax.tree.map(lambda s: s.shape, dict(template))
  np.testing.assert_array_equal(loaded["params"]["Mixed_5c"]["b1b"]["conv3d"]["kernel"],
                                state["Mixed_5c.b1b.conv3d.weight"].transpose(2, 3, 4, 1, 0))
  features = jax.eval_shape(I3D(num_classes=0).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 16, 224, 224, 3)))
  assert _count(features["params"]) == 12_287_264
  out = jax.eval_shape(I3D(num_classes=400).apply, jax.eval_shape(
      I3D(num_classes=400).init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 224, 224, 3))),
                       jnp.zeros((2, 135, 224, 448, 3)))
  assert out.shape == (2, 400)


def _paths(variables):
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  return list(traverse_util.flatten_dict(dict(variables)))


def test_i3d_partition_rules():
  template = jax.eval_shape(I3D(num_classes=6, width_multiplier=SMALL).init,
                            jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3)))
  for path in _paths(template):
    name = "/".join(path)
    rules = [spec for pattern, spec in i3d_lib.PARTITION_RULES if re.fullmatch(pattern, name)]
    assert bool(rules) == (path[-1] == "kernel"), name
    if rules:
      assert rules[0] == (None, None, None, None, "data")


def test_i3d_new_head_and_features(small_torch, caplog):
  state = _state_dict(small_torch)
  x_torch, x = _clip((1, 3, 9, 32, 32))
  model = I3D(num_classes=7, width_multiplier=SMALL)
  with caplog.at_level(logging.WARNING, logger="mmjax"):
    variables = load_i3d(model, state)
  assert "keeping the fresh head" in caplog.text
  head = np.asarray(variables["params"]["logits"]["conv3d"]["kernel"])
  assert head.shape == (1, 1, 1, 128, 7) and 0.5 < head.std() * math.sqrt(128) < 2
  other = load_i3d(model, state, rng=jax.random.PRNGKey(1))["params"]["logits"]["conv3d"]
  assert not np.allclose(other["kernel"], head)
  np.testing.assert_array_equal(variables["batch_stats"]["Mixed_4c"]["b2a"]["bn"]["var"],
                                state["Mixed_4c.b2a.bn.running_var"])
  custom = {"kernel": np.full((1, 1, 1, 128, 7), 0.5, np.float32), "bias": np.ones(7, np.float32)}
  template = {**variables, "params": {**variables["params"], "logits": {"conv3d": custom}}}
  kept = load_i3d(template, state)["params"]["logits"]["conv3d"]
  np.testing.assert_array_equal(kept["kernel"], custom["kernel"])
  features_model = I3D(num_classes=0, width_multiplier=SMALL)
  features = jax.jit(features_model.apply)(load_i3d(features_model, state), x)
  reference = TorchI3D(num_classes=0, multiplier=SMALL).eval()
  reference.load_state_dict({k: v for k, v in small_torch.state_dict().items()
                             if not k.startswith("logits.")})
  with torch.no_grad():
    _close(features, reference(x_torch).numpy())
  assert features.shape == (1, 128)


def test_i3d_checkpoint_file_and_errors(small_torch, tmp_path):
  path = str(tmp_path / "rgb_imagenet.pt")
  torch.save(small_torch.state_dict(), path)
  model = I3D(num_classes=5, width_multiplier=SMALL)
  variables = load_i3d(model, path)
  np.testing.assert_array_equal(variables["params"]["logits"]["conv3d"]["bias"],
                                small_torch.logits.conv3d.bias.detach().numpy())
  state = _state_dict(small_torch)
  parallel = load_i3d(model, {f"module.{k}": v for k, v in state.items()})  # DataParallel names
  np.testing.assert_array_equal(parallel["params"]["Mixed_3c"]["b2b"]["bn"]["scale"],
                                state["Mixed_3c.b2b.bn.weight"])
  missing = {k: v for k, v in state.items() if k != "Mixed_4d.b1b.bn.running_mean"}
  with pytest.raises(ValueError, match=r"(?s)checkpoint\.pt.*Mixed_4d\.b1b\.bn\.running_mean"):
    load_i3d(model, _save(missing, tmp_path / "checkpoint.pt"))
  with pytest.raises(ValueError, match=r"Conv3d_1a_7x7\.conv3d\.weight.*shape"):
    load_i3d(I3D(num_classes=5, width_multiplier=0.25), state)
  with pytest.raises(ValueError, match=r"not used.*Mixed_6a"):
    load_i3d(model, {**state, "Mixed_6a.b0.conv3d.weight": np.zeros((1,), np.float32)})
  with pytest.raises(FileNotFoundError, match="nothing.pt"):
    load_i3d(model, str(tmp_path / "nothing.pt"))
  (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="garbage.pt"):
    load_i3d(model, str(tmp_path / "garbage.pt"))
  with pytest.raises(ValueError, match="template has none"):
    load_i3d(jax.eval_shape(I3D(num_classes=3, width_multiplier=SMALL).init,
                            jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 32, 3))), state)
  with pytest.raises(ValueError, match="frames, height, width"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((4, 32, 32, 3)))


def _save(state, path):
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, str(path))
  return str(path)


class TorchSimple3D(nn.Module):
  """The reconstruction of mmjax.models.simple3d, written with the same-padding units."""

  def __init__(self, num_classes=6, channels=(4, 4, 4, 4, 4, 10)):
    super().__init__()
    cins = (3,) + tuple(channels[:-1])
    self.convs = nn.ModuleList(TorchUnit3D(i, o, (3, 3, 3), (2, 2, 2), eps=1e-5, momentum=0.1)
                               for i, o in zip(cins, channels))
    self.head = nn.Linear(channels[-1], num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = conv(x)
    return self.head(x.mean(dim=(2, 3, 4)))


def test_simple3d_count_shapes_and_torch():
  model = Simple3D(num_classes=6)
  x_torch, x = _clip((2, 3, 13, 40, 70), seed=5)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  assert _count(variables["params"]) == 3258  # paper: 3,262
  shapes = jax.tree.map(np.shape, variables["params"])
  assert [shapes[f"conv_{i}"]["conv3d"]["kernel"] for i in range(6)] == [
      (3, 3, 3, 3, 4)] + [(3, 3, 3, 4, 4)] * 4 + [(3, 3, 3, 4, 10)]
  assert shapes["head"] == {"kernel": (10, 6), "bias": (6,)}
  assert "bias" not in shapes["conv_0"]["conv3d"]
  reference = _randomise(TorchSimple3D(), seed=2).eval()
  name = lambda path: i3d_lib.torch_name(path).replace("conv_", "convs.")
  loaded = torch_import.variables_from_state_dict(
      _state_dict(reference), variables, name, ignore=[r".*num_batches_tracked"])
  with torch.no_grad():
    _close(model.apply(loaded, x), reference(x_torch).numpy())
  assert Simple3D(num_classes=0).apply(loaded, x).shape == (2, 10)
  logits, updates = model.apply(loaded, x, train=True, mutable=["batch_stats"])
  reference.train()
  _close(logits, reference(x_torch).detach().numpy())
  np.testing.assert_allclose(updates["batch_stats"]["conv_5"]["bn"]["mean"],
                             reference.convs[5].bn.running_mean.numpy(), rtol=0, atol=1e-5)
