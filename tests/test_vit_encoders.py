"""The CREMA-D transformer backbones: mmjax.models.vit.ViT against a small PyTorch ViT written here
with the same equations, and mmjax.models.videomae against transformers' VideoMAE models built
from tiny random configs (checkpoints written with save_pretrained and read by our importer)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import videomae, vit
from mmjax.models.videomae import VideoMAE
from mmjax.models.vit import ViT
from mmjax.parallel import spec_for

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY_VIT = {"num_classes": 5, "patch_size": 8, "hidden_size": 32, "num_layers": 2,
            "num_heads": 4, "mlp_dim": 64, "image_size": (16, 24), "num_channels": 2}


def _random_variables(model, x, seed):
  """Variables of model's shapes (jax.eval_shape: no init compilation) drawn from N(0, 0.2^2)
  (LayerNorm scales 1 + N(0, 0.2^2)), so biases and the zero-initialised head are exercised."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: ((path[-1].key == "scale") + 0.2 * rng.normal(size=leaf.shape)).astype(
          np.float32), shapes)


def _run(model, variables, x, method=None):
  """model.apply(variables, x) under jit (one compilation instead of one per operation)."""
  return np.asarray(jax.jit(functools.partial(model.apply, method=method))(variables, x))


def _t(array):
  return torch.tensor(np.asarray(array))


def _torch_vit(params, x, cfg):
  """Reference forward pass in torch: x [B, H, W, C] numpy -> logits. Patches are cut and
  flattened (row, col, channel) explicitly and projected by a matrix (no convolution);
  attention is written out head by head."""
  p, width, heads = cfg["patch_size"], cfg["hidden_size"], cfg["num_heads"]
  layer_norm = lambda h, ln: torch.nn.functional.layer_norm(  # noqa: E731
      h, (width,), _t(ln["scale"]), _t(ln["bias"]), 1e-5)
  linear = lambda h, d: h @ _t(d["kernel"]) + _t(d["bias"])  # noqa: E731
  xt = _t(x)
  b, height, wid, c = xt.shape
  patches = xt.reshape(b, height // p, p, wid // p, p, c).permute(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, -1, p * p * c)
  embed = params["patch_embedding"]
  z = patches @ _t(embed["kernel"]).reshape(p * p * c, width) + _t(embed["bias"])
  z = torch.cat([_t(params["class_token"]).expand(b, 1, width), z], 1)
  z = z + _t(params["position_embedding"])
  for i in range(cfg["num_layers"]):
    blk = params[f"block_{i}"]
    h = layer_norm(z, blk["layer_norm1"])
    att = blk["self_attn"]
    q, k, v = (linear(h, att[n]).reshape(b, -1, heads, width // heads).transpose(1, 2)
               for n in ("q_proj", "k_proj", "v_proj"))
    w = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, -1)
    z = z + linear((w @ v).transpose(1, 2).reshape(b, -1, width), att["out_proj"])
    h = layer_norm(z, blk["layer_norm2"])
    h = torch.nn.functional.gelu(linear(h, blk["mlp"]["fc1"]))
    z = z + linear(h, blk["mlp"]["fc2"])
  return linear(layer_norm(z, params["final_ln"])[:, 0], params["head"]).numpy()


def test_vit_matches_torch_reference():
  model = ViT(**TINY_VIT)
  x = np.random.default_rng(0).normal(size=(3, 16, 24, 2)).astype(np.float32)
  variables = _random_variables(model, x, 1)
  logits = _run(model, variables, x)
  assert logits.shape == (3, 5)
  np.testing.assert_allclose(logits, _torch_vit(variables["params"], x, TINY_VIT),
                             atol=1e-5, rtol=1e-5)


def test_vit_parameter_count_and_rectangular_input():
  """Full size (224 x 224 x 1, 6 blocks, 4 heads, 6 classes): the count in vit.py's docstring;
  224 x 448 adds 196 position rows; a narrow model runs on 224 x 448 (393 tokens)."""
  def count(model, shape):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
  assert count(ViT(num_classes=6), (1, 224, 224, 1)) == 23_996_166
  assert count(ViT(num_classes=6, image_size=(224, 448)), (1, 224, 448, 1)) == (
      23_996_166 + 196 * 768)
  model = ViT(num_classes=6, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=16,
              image_size=(224, 448))
  x = jnp.ones((2, 224, 448, 1))
  variables = _random_variables(model, x, 0)
  assert variables["params"]["position_embedding"].shape == (1, 1 + 14 * 28, 16)
  assert _run(model, variables, x).shape == (2, 6)
  with pytest.raises(ValueError, match="expected"):
    model.apply(variables, jnp.ones((2, 224, 224, 1)))


def test_vit_dropout_only_in_training():
  model = ViT(**{**TINY_VIT, "num_classes": 0, "dropout_rate": 0.4})
  x = np.random.default_rng(2).normal(size=(2, 16, 24, 2)).astype(np.float32)
  variables = _random_variables(model, x, 0)
  apply = jax.jit(lambda seed, train: model.apply(
      variables, x, train=train, rngs={"dropout": jax.random.PRNGKey(seed)}),
                  static_argnums=1)
  evals = [apply(s, False) for s in (0, 1)]
  np.testing.assert_array_equal(evals[0], evals[1])
  trains = [apply(s, True) for s in (0, 1)]
  assert not np.allclose(trains[0], evals[0], atol=1e-3)
  assert not np.allclose(trains[0], trains[1], atol=1e-3)


def _hf_config(**overrides):
  values = {"image_size": 32, "patch_size": 16, "num_channels": 3, "num_frames": 4,
            "tubelet_size": 2, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "qkv_bias": True,
            "use_mean_pooling": False}
  return transformers.VideoMAEConfig(**{**values, **overrides})


def _randomized(model, seed):
  """Every parameter of a torch model redrawn from N(0, 0.2^2) (q/v biases, LayerNorms included)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(0.2 * torch.randn(param.shape, generator=gen))
  return model.eval()


def _video(frames, seed=0, batch=2):
  """[batch, frames, 32, 32, 3] numpy and its torch [batch, frames, 3, 32, 32]."""
  x = np.random.default_rng(seed).normal(size=(batch, frames, 32, 32, 3)).astype(np.float32)
  return x, torch.tensor(x).permute(0, 1, 4, 2, 3)


def test_videomae_model_matches_transformers(tmp_path):
  """VideoMAEModel (use_mean_pooling False: final layernorm): last_hidden_state, and the
  classifier's first-token features for num_classes = 0."""
  hf = _randomized(transformers.VideoMAEModel(_hf_config()), 0)
  hf.save_pretrained(tmp_path)
  model, variables = videomae.from_pretrained(str(tmp_path))
  assert model.num_classes == 0 and not model.use_mean_pooling
  x, xt = _video(4)
  with torch.no_grad():
    expected = hf(pixel_values=xt).last_hidden_state.numpy()
  tokens = _run(model, variables, x, VideoMAE.encode)
  assert tokens.shape == (2, 2 * 2 * 2, 32)
  np.testing.assert_allclose(tokens, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(_run(model, variables, x), expected[:, 0], atol=1e-5, rtol=1e-5)
  layer = variables["params"]["layers_0"]["self_attn"]
  assert not np.any(layer["k_proj"]["bias"]) and np.all(layer["q_proj"]["bias"])


def test_videomae_classifier_matches_transformers_at_other_frame_counts(tmp_path):
  """VideoMAEForVideoClassification (mean pooling + fc_norm + classifier): logits at the
  config's 4 frames and at 8 frames (the reference: the same weights in a num_frames=8 model)."""
  hf = _randomized(transformers.VideoMAEForVideoClassification(
      _hf_config(use_mean_pooling=True, num_labels=3)), 1)
  hf.save_pretrained(tmp_path)
  model, variables = videomae.from_pretrained(str(tmp_path))
  assert model.num_classes == 3 and model.use_mean_pooling
  x, xt = _video(4, seed=1)
  with torch.no_grad():
    expected = hf(pixel_values=xt).logits.numpy()
  np.testing.assert_allclose(_run(model, variables, x), expected, atol=1e-5, rtol=1e-5)
  hf8 = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path, num_frames=8)
  x8, xt8 = _video(8, seed=2)
  with torch.no_grad():
    expected8 = hf8.eval()(pixel_values=xt8).logits.numpy()
  np.testing.assert_allclose(_run(model, variables, x8), expected8, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(videomae.sinusoid_table(16, 32), transformers.models.videomae
                                .modeling_videomae.get_sinusoid_encoding_table(16, 32)[0].numpy())


def test_videomae_export_loads_in_transformers(tmp_path):
  """Our save_pretrained -> transformers loads every tensor (none missing or unexpected) and
  computes our logits; a non-zero key bias changes nothing (softmax invariance) and is not
  written; a new head replaces a checkpoint's head of another size."""
  hf = _randomized(transformers.VideoMAEForVideoClassification(
      _hf_config(use_mean_pooling=True, num_labels=4)), 3)
  hf.save_pretrained(tmp_path / "hf")
  model, variables = videomae.from_pretrained(str(tmp_path / "hf"))
  x, xt = _video(4, seed=3)
  ours = _run(model, variables, x)
  key_bias = jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf + 0.5 if "k_proj" in jax.tree_util.keystr(path)
      and "bias" in jax.tree_util.keystr(path) else leaf, variables)
  np.testing.assert_allclose(_run(model, key_bias, x), ours, atol=1e-5, rtol=1e-5)
  videomae.save_pretrained(key_bias, model, str(tmp_path / "ours"))
  loaded, info = transformers.VideoMAEForVideoClassification.from_pretrained(
      tmp_path / "ours", output_loading_info=True)
  assert not any(info.values()), info
  with torch.no_grad():
    np.testing.assert_allclose(loaded.eval()(pixel_values=xt).logits.numpy(), ours,
                               atol=1e-5, rtol=1e-5)
  reloaded, reloaded_vars = videomae.from_pretrained(str(tmp_path / "ours"), num_classes=6,
                                                     dropout_rate=0.5)
  assert reloaded_vars["params"]["classifier"]["kernel"].shape == (32, 6)
  np.testing.assert_array_equal(reloaded_vars["params"]["fc_norm"]["scale"],
                                variables["params"]["fc_norm"]["scale"])
  apply = jax.jit(lambda train: reloaded.apply(reloaded_vars, x, train=train, rngs={
      "dropout": jax.random.PRNGKey(0)}), static_argnums=0)
  assert apply(False).shape == (2, 6)
  assert not np.allclose(apply(True), apply(False), atol=1e-4)


def test_videomae_full_size_shapes():
  """ViT-B at the paper's 32 frames x 224 x 224 (jax.eval_shape): 16 x 14 x 14 = 3136 tokens;
  86,241,030 parameters with a 6-class head (9,216 of them the zero key biases)."""
  model = VideoMAE(num_classes=6)
  x = jnp.zeros((1, 32, 224, 224, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x[:, :2, :16, :16]))
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes)) == 86_241_030
  assert jax.eval_shape(lambda v: model.apply(v, x, method=VideoMAE.encode), shapes).shape == (
      1, 3136, 768)
  assert jax.eval_shape(lambda v: model.apply(v, x), shapes).shape == (1, 6)


def test_videomae_import_errors_name_the_file(tmp_path):
  """Missing and unexpected tensors, and a foreign config, raise errors naming the file; a
  pre-training checkpoint (MAE decoder tensors, in-memory query.bias names) imports."""
  hf = transformers.VideoMAEModel(_hf_config())
  hf.save_pretrained(tmp_path)
  state = videomae.read_state_dict(str(tmp_path))
  config = videomae.read_videomae_config(str(tmp_path))
  assert config.layer_norm_eps == 1e-12 and config.qkv_bias
  name = next(k for k in state if k.endswith("layer.1.intermediate.dense.weight"))
  with pytest.raises(ValueError, match=r"(?s)ckpt\.safetensors.*intermediate\.dense\.weight"):
    videomae.params_from_state_dict({k: v for k, v in state.items() if k != name}, config,
                                    source="ckpt.safetensors")
  with pytest.raises(ValueError, match=r"(?s)ckpt\.safetensors.*extra\.weight"):
    videomae.params_from_state_dict({**state, "extra.weight": np.zeros(2)}, config,
                                    source="ckpt.safetensors")
  pretraining = transformers.VideoMAEForPreTraining(_hf_config(
      decoder_hidden_size=16, decoder_num_attention_heads=2, decoder_num_hidden_layers=1))
  _, pretrained = videomae.params_from_state_dict(
      {k: v.numpy() for k, v in pretraining.state_dict().items()}, config)
  np.testing.assert_array_equal(
      pretrained["params"]["layers_1"]["self_attn"]["v_proj"]["bias"],
      pretraining.videomae.encoder.layer[1].attention.attention.value.bias.detach().numpy())
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
  with pytest.raises(ValueError, match="config.json.*'vit'"):
    videomae.read_videomae_config(str(tmp_path))


@pytest.mark.parametrize("module", ["vit", "videomae"])
def test_partition_rules_shard_every_kernel_over_data(module):
  """Full-size parameters on an 8 x 1 ('data', 'model') mesh: every matrix or conv kernel has a
  'data' axis (FSDP)."""
  if module == "vit":
    model, rules, x = ViT(num_classes=6), vit, (1, 224, 224, 1)
  else:
    model, rules, x = VideoMAE(num_classes=6), videomae, (1, 2, 16, 16, 3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x)))
  mesh = jax.sharding.AbstractMesh((8, 1), ("data", "model"))
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name = "/".join(str(k.key) for k in path)
    spec = spec_for(name, leaf.shape, rules.PARTITION_RULES, mesh)
    if name.endswith("kernel"):
      assert any(axis == "data" or (isinstance(axis, tuple) and "data" in axis)
                 for axis in spec), (name, spec)
