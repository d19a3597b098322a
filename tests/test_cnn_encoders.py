"""ResNet18, VGG16 and GoogLeNet against torchvision: parameter names, shapes and counts, eval
logits on square and non-square inputs, a train-mode forward with its BatchNorm running
statistics, the checkpoint importer (file, grayscale, other head, errors), the torch-exact
pooling helpers and the partition rules. Torch models have random weights and random BatchNorm
statistics (so that the statistics matter)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.models import googlenet, resnet, vgg
from mmjax.models.cnn_weights import load_torchvision, torch_name
from mmjax.models.googlenet import GoogLeNet
from mmjax.models.resnet import ResNet18
from mmjax.models.torch_import import state_dict_from_variables
from mmjax.models.vgg import VGG16
from mmjax.nn import conv as conv_layers

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

CLASSES = 6
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _randomise_batchnorm(model, seed):
  generator = torch.Generator().manual_seed(seed)
  rand = lambda n: torch.rand(n, generator=generator)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        n = module.num_features
        module.running_mean.copy_(rand(n) - 0.5)
        module.running_var.copy_(0.5 + rand(n))
        module.weight.copy_(0.5 + rand(n))
        module.bias.copy_(rand(n) - 0.5)
  return model.eval()


def _state_dict(model):
  return {name: tensor.numpy() for name, tensor in model.state_dict().items()}


def _images(shape, seed=0):
  """NCHW float32 images for torch."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _torch_forward(model, images):
  with torch.no_grad():
    return model(torch.from_numpy(images)).numpy()


def _flax_forward(model, variables, images, **kwargs):
  """model.apply on the NHWC images, compiled at XLA's lowest backend optimisation level (half
  the compile time of a whole CNN on a busy CPU)."""
  apply = lambda v, x: model.apply(v, x, **kwargs)
  nhwc = jnp.asarray(images.transpose(0, 2, 3, 1))
  compiled = jax.jit(apply).lower(variables, nhwc).compile(_FAST_COMPILE)
  return compiled(variables, nhwc)


def _assert_close(actual, expected, rel=1e-4):
  """|actual - expected| <= rel * max|expected| elementwise."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=0,
                             atol=rel * float(np.abs(expected).max()))


@pytest.fixture(scope="module", name="torch_resnet")
def _torch_resnet():
  torch.manual_seed(0)
  return _randomise_batchnorm(torchvision.models.resnet18(weights=None, num_classes=CLASSES), 1)


@pytest.fixture(scope="module", name="resnet_variables")
def _resnet_variables(torch_resnet):
  variables, not_loaded = load_torchvision(ResNet18(num_classes=CLASSES),
                                           _state_dict(torch_resnet), input_shape=(1, 64, 64, 3))
  assert not not_loaded
  return variables


@pytest.fixture(scope="module", name="torch_googlenet")
def _torch_googlenet():
  """With the auxiliary classifiers, like torchvision's pretrained checkpoint."""
  torch.manual_seed(0)
  model = torchvision.models.googlenet(weights=None, num_classes=CLASSES, aux_logits=True,
                                       init_weights=True)
  return _randomise_batchnorm(model, 2)


@pytest.fixture(scope="module", name="googlenet_variables")
def _googlenet_variables(torch_googlenet):
  """aux1.* / aux2.* are ignored by the importer."""
  variables, not_loaded = load_torchvision(GoogLeNet(num_classes=CLASSES),
                                           _state_dict(torch_googlenet),
                                           input_shape=(1, 64, 64, 3))
  assert not not_loaded
  return variables


@pytest.fixture(scope="module", name="vgg_pair")
def _vgg_pair():
  """The file's only VGG16 (import is ~140M floats): (torch model, variables imported into the
  headless VGG16(num_classes=0)); the importer reports classifier.6 as not loaded."""
  torch.manual_seed(0)
  model = torchvision.models.vgg16(weights=None, num_classes=CLASSES).eval()
  variables, not_loaded = load_torchvision(VGG16(num_classes=0), _state_dict(model),
                                           input_shape=(1, 32, 32, 3))
  assert not_loaded == ["classifier.6.bias", "classifier.6.weight"]
  return model, variables


def test_names_shapes_and_parameter_counts():
  """Every Flax leaf has torchvision's tensor (shape transposed), nothing else, and the counts
  are torchvision's: 11,689,512 / 138,357,544 / 6,624,904 (GoogLeNet without aux)."""
  cases = [(ResNet18(), torchvision.models.resnet18, 11_689_512),
           (VGG16(), torchvision.models.vgg16, 138_357_544),
           (GoogLeNet(), lambda: torchvision.models.googlenet(aux_logits=False,
                                                              init_weights=False), 6_624_904)]
  for flax_model, torch_model, count in cases:
    shapes = jax.eval_shape(lambda m=flax_model: m.init(jax.random.key(0),
                                                        jnp.zeros((1, 224, 224, 3))))
    with torch.device("meta"):
      reference = torch_model()
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    got = {}
    for path, leaf in flat:
      keys = tuple(k.key for k in path)
      shape = tuple(leaf.shape)
      if keys[-1] == "kernel":
        shape = shape[::-1] if len(shape) == 2 else shape[3:] + shape[2:3] + shape[:2]
      got[torch_name(keys)] = shape
    assert got == expected, type(flax_model).__name__
    assert sum(leaf.size for leaf in jax.tree.leaves(shapes["params"])) == count
    assert sum(p.numel() for p in reference.parameters()) == count


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 64, 128)])
def test_resnet_eval_matches_torchvision(torch_resnet, resnet_variables, shape):
  images = _images(shape)
  _assert_close(_flax_forward(ResNet18(num_classes=CLASSES), resnet_variables, images),
                _torch_forward(torch_resnet, images))


@pytest.mark.parametrize("shape,transform_input", [((2, 3, 64, 64), False),
                                                   ((1, 3, 72, 100), True)])
def test_googlenet_eval_matches_torchvision(torch_googlenet, googlenet_variables, shape,
                                            transform_input):
  """72 x 100 makes every ceil-mode max-pool round up."""
  model = GoogLeNet(num_classes=CLASSES, transform_input=transform_input)
  reference = copy.deepcopy(torch_googlenet)
  reference.transform_input = transform_input
  images = _images(shape)
  _assert_close(_flax_forward(model, googlenet_variables, images),
                _torch_forward(reference, images))


def _vgg_with_head(vgg_pair):
  """The headless import plus classifier.6, transposed by hand."""
  torch_model, variables = vgg_pair
  head = torch_model.classifier[6]
  return {"params": {**variables["params"],
                     "classifier_6": {"kernel": head.weight.detach().numpy().T,
                                      "bias": head.bias.detach().numpy()}}}


@pytest.mark.parametrize("shape", [(2, 3, 32, 64), (1, 3, 64, 96)])
def test_vgg_eval_matches_torchvision(vgg_pair, shape):
  """32 x 64 pools to a 1 x 2 map (7 x 7 bins repeat), 64 x 96 to 2 x 3 (bins overlap)."""
  images = _images(shape)
  _assert_close(_flax_forward(VGG16(num_classes=CLASSES), _vgg_with_head(vgg_pair), images),
                _torch_forward(vgg_pair[0], images))


def test_vgg_features_without_head(vgg_pair):
  """num_classes=0 returns the input of classifier.6."""
  torch_model, variables = vgg_pair
  images = _images((1, 3, 32, 32))
  with torch.no_grad():
    expected = torch_model.classifier[:6](torch.flatten(
        torch_model.avgpool(torch_model.features(torch.from_numpy(images))), 1)).numpy()
  _assert_close(_flax_forward(VGG16(num_classes=0), variables, images), expected)


@pytest.mark.parametrize("name", ["resnet", "googlenet"])
def test_train_mode_matches_torchvision(request, name):
  """train=True: batch statistics in the forward and torch's running mean/var updates (unbiased
  variance), dropout off on both sides."""
  reference = copy.deepcopy(request.getfixturevalue(f"torch_{name}"))
  variables = request.getfixturevalue(f"{name}_variables")
  model = (ResNet18(num_classes=CLASSES) if name == "resnet"
           else GoogLeNet(num_classes=CLASSES, dropout_rate=0.0))
  images = _images((4, 3, 48, 80), seed=3)
  if name == "googlenet":
    reference.dropout.p = 0.0
  reference.train()
  with torch.no_grad():
    expected = reference(torch.from_numpy(images))
  expected = getattr(expected, "logits", expected).numpy()
  logits, updates = _flax_forward(model, variables, images, train=True, mutable=["batch_stats"])
  _assert_close(logits, expected)
  before = state_dict_from_variables({"batch_stats": variables["batch_stats"]}, torch_name)
  after = state_dict_from_variables(updates, torch_name)
  torch_state = _state_dict(reference)
  assert after.keys() == before.keys() and after
  for tensor, value in after.items():
    _assert_close(value, torch_state[tensor], rel=1e-5)
    assert not np.allclose(value, before[tensor]), tensor


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet", "googlenet", "vgg"])
def test_multimodal_input_size_matches_torchvision(request, name):
  """The paper's multimodal input, face | spectrogram side by side: 224 x 448 (VGG16's map is
  7 x 14, pooled in 1 x 2 bins)."""
  if name == "vgg":
    vgg_pair = request.getfixturevalue("vgg_pair")
    reference, variables = vgg_pair[0], _vgg_with_head(vgg_pair)
  else:
    reference = request.getfixturevalue(f"torch_{name}")
    variables = request.getfixturevalue(f"{name}_variables")
  model = {"resnet": ResNet18, "googlenet": GoogLeNet, "vgg": VGG16}[name](num_classes=CLASSES)
  images = _images((2, 3, 224, 448), seed=8)
  _assert_close(_flax_forward(model, variables, images), _torch_forward(reference, images))


def test_grayscale_import_sums_first_conv(torch_resnet):
  """A 1-channel model equals the RGB checkpoint applied to the image replicated to 3 channels."""
  model = ResNet18(num_classes=CLASSES)
  variables, _ = load_torchvision(model, _state_dict(torch_resnet), input_shape=(1, 64, 64, 1))
  assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
  gray = _images((2, 1, 64, 64), seed=4)
  _assert_close(_flax_forward(model, variables, gray),
                _torch_forward(torch_resnet, np.repeat(gray, 3, axis=1)))


def test_other_head_is_kept_and_reported(torch_resnet, tmp_path):
  """From a .pth file: a 4-class model keeps its initialised fc; num_classes=0 gives torch's
  pooled features."""
  path = tmp_path / "resnet18.pth"
  torch.save(torch_resnet.state_dict(), path)
  model = ResNet18(num_classes=4)
  variables, not_loaded = load_torchvision(model, path, input_shape=(1, 64, 64, 3), seed=7)
  assert not_loaded == ["fc.bias", "fc.weight"]
  init = lambda: model.init(jax.random.key(7), jnp.zeros((1, 64, 64, 3)))["params"]["fc"]
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], jax.jit(init)()["kernel"])
  np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                torch_resnet.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))

  backbone = ResNet18(num_classes=0)
  variables, not_loaded = load_torchvision(backbone, str(path), input_shape=(1, 64, 64, 3))
  assert not_loaded == ["fc.bias", "fc.weight"] and "fc" not in variables["params"]
  reference = copy.deepcopy(torch_resnet)
  reference.fc = torch.nn.Identity()
  images = _images((2, 3, 64, 64), seed=5)
  _assert_close(_flax_forward(backbone, variables, images), _torch_forward(reference, images))


def test_import_errors_name_file_and_tensor(torch_resnet, tmp_path):
  model, shape = ResNet18(num_classes=CLASSES), (1, 64, 64, 3)
  state = _state_dict(torch_resnet)
  missing = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
  message = r"(?s)state dict: .*missing tensor 'layer3\.1\.bn2\.running_var'"
  with pytest.raises(ValueError, match=message):
    load_torchvision(model, missing, input_shape=shape)
  wrong = {**state, "layer2.0.conv1.weight": np.zeros((128, 64, 5, 5), np.float32)}
  with pytest.raises(ValueError, match=r"'layer2\.0\.conv1\.weight' has shape \(128, 64, 5, 5\)"):
    load_torchvision(model, wrong, input_shape=shape)
  extra = {**state, "layer5.0.conv1.weight": np.zeros((1,), np.float32)}
  with pytest.raises(ValueError, match=r"not used by the model: \['layer5\.0\.conv1\.weight'\]"):
    load_torchvision(model, extra, input_shape=shape)
  absent = tmp_path / "resnet18-f37072fd.pth"
  with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
    load_torchvision(model, absent, input_shape=shape)
  garbage = tmp_path / "vgg16-397923af.pth"
  garbage.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="vgg16-397923af.pth"):
    load_torchvision(model, garbage, input_shape=shape)
  with pytest.raises(TypeError, match="ResNet18"):
    load_torchvision(resnet.BasicBlock(8), state, input_shape=shape)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 13), (7, 14), (9, 20)])
def test_adaptive_avg_pool_matches_torch(size):
  x = _images((2, 4) + size, seed=6)
  expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (7, 7)).numpy()
  got = vgg.adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)))
  _assert_close(np.asarray(got).transpose(0, 3, 1, 2), expected, rel=1e-6)


@pytest.mark.parametrize("window,stride,padding,ceil_mode", [(3, 2, 0, True), (2, 2, 0, True),
                                                             (3, 2, 1, False), (3, 2, 1, True),
                                                             (3, 1, 1, True)])
def test_max_pool_matches_torch(window, stride, padding, ceil_mode):
  for size in (7, 8, 9, 14, 15):
    x = _images((1, 2, size, size + 3), seed=size)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), window, stride, padding,
                                              ceil_mode=ceil_mode).numpy()
    got = conv_layers.max_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), window, stride, padding,
                          ceil_mode)
    np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2), expected)


def test_partition_rules_cover_the_large_kernels():
  """Every conv and dense kernel is matched; VGG's 4096-wide classifier layers get
  ('data', 'model') (on a 1 x 1 mesh, where every axis divides)."""
  mesh = parallel.make_mesh([("data", 1), ("model", 1)])
  for module, model in ((resnet, ResNet18()), (vgg, VGG16()), (googlenet, GoogLeNet())):
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]:
      name = "params/" + parallel.path_to_str(path)
      if name.endswith("kernel"):
        spec = parallel.spec_for(name, leaf.shape, module.PARTITION_RULES, mesh)
        assert spec != P(), name
  assert parallel.spec_for("params/classifier_0/kernel", (25088, 4096), vgg.PARTITION_RULES,
                           mesh) == P("data", "model")
