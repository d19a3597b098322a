"""mmjax.models.torch_import: layouts against torch's own modules, round trips and errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from mmjax.models import torch_import


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, *, train=False):
    x = nn.Conv(4, (3, 3), padding=1, use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
    return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


def _torch_name(path):
  collection, *modules, leaf = path
  leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
          ("batch_stats", "mean"): "running_mean",
          ("batch_stats", "var"): "running_var"}.get((collection, leaf), leaf)
  return ".".join(modules + [leaf])


def _torch_model():
  torch.manual_seed(0)
  model = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(2, 4, 3, padding=1, bias=False),
                               "bn": torch.nn.BatchNorm2d(4), "fc": torch.nn.Linear(4, 3)})
  with torch.no_grad():
    model["bn"].running_mean.normal_()
    model["bn"].running_var.uniform_(0.5, 2.0)
    model["bn"].weight.normal_()
  return model.eval()


def _template():
  return jax.eval_shape(lambda: _Tiny().init(jax.random.key(0), np.zeros((1, 5, 5, 2))))


def test_import_matches_torch_forward_and_round_trips():
  model = _torch_model()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = torch_import.variables_from_state_dict(
      state, _template(), _torch_name, ignore=(r".*num_batches_tracked",))
  x = np.random.default_rng(0).normal(size=(2, 2, 5, 5)).astype(np.float32)
  with torch.no_grad():
    expected = model["fc"](model["bn"](model["conv"](torch.from_numpy(x))).mean(dim=(2, 3)))
  got = _Tiny().apply(variables, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
  back = torch_import.state_dict_from_variables(variables, _torch_name)
  assert set(back) == set(state) - {"bn.num_batches_tracked"}
  for name, array in back.items():
    np.testing.assert_array_equal(array, state[name])


def test_errors_name_the_source_and_tensor():
  state = {k: v.numpy() for k, v in _torch_model().state_dict().items()}
  with pytest.raises(ValueError, match=r"(?s)ckpt.pth.*num_batches_tracked"):
    torch_import.variables_from_state_dict(state, _template(), _torch_name, source="ckpt.pth")
  state["fc.weight"] = np.zeros((5, 4), np.float32)
  with pytest.raises(ValueError, match=r"'fc.weight' has shape \(5, 4\)"):
    torch_import.variables_from_state_dict(state, _template(), _torch_name,
                                           ignore=(r".*num_batches_tracked",))
  del state["conv.weight"]
  with pytest.raises(ValueError, match=r"missing tensor 'conv.weight'"):
    torch_import.variables_from_state_dict(state, _template(), _torch_name,
                                           keep=(r"params/fc/.*",),
                                           ignore=(r".*num_batches_tracked", r"fc\..*"))


def test_keep_holds_template_values_and_files_are_read(tmp_path):
  model = _torch_model()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  template = _Tiny().init(jax.random.key(1), np.zeros((1, 5, 5, 2)))
  variables = torch_import.variables_from_state_dict(
      state, template, _torch_name, keep=(r"params/fc/.*",),
      ignore=(r".*num_batches_tracked", r"fc\..*"))
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"],
                                template["params"]["fc"]["kernel"])
  path = tmp_path / "ckpt.pth"
  torch.save(model.state_dict(), path)
  read = torch_import.read_torch_state_dict(str(path))
  np.testing.assert_array_equal(read["conv.weight"], state["conv.weight"])
  (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="bad.pth"):
    torch_import.read_torch_state_dict(str(tmp_path / "bad.pth"))
  with pytest.raises(FileNotFoundError, match="absent.pth"):
    torch_import.read_torch_state_dict(str(tmp_path / "absent.pth"))
