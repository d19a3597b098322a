"""The Memotion 3 CLIP classifiers (mmjax.projects.memotion3.models; "wentaorub at Memotion 3",
Fig. 1-2, eq. 4-6): BiLstm against torch.nn.LSTM, the classifier head, CLIP-text's pooled
end-of-text state and BiLSTM branch, CLIP-multi's fusion recomputed by hand, the parameter trees
(CLIP checkpoints load by subtree), and PARTITION_RULES on a 4 x 2 mesh of 8 fake CPU devices
with the repository's eval step giving the one-device loss and logits (a subprocess running
this file as a script: XLA_FLAGS must be set before jax starts)."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models.clip import Clip, ClipConfig, TextConfig, VisionConfig, load_tokenizer
from mmjax.models.clip.modules import TextTransformer, VisionTransformer
from mmjax.projects.memotion3.models import (
  BiLstm,
  Classifier,
  ClipImageClassifier,
  ClipMultiClassifier,
  ClipTextClassifier,
)

TESTS = os.path.dirname(os.path.abspath(__file__))

# Smaller than the 'tiny' preset; different text and vision widths so that a mix-up shows.
CLIP = ClipConfig(
    text=TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=16),
    vision=VisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                        num_attention_heads=2, image_size=16, patch_size=8),
    projection_dim=16)
CONTEXT = 16
NUM_CLASSES, LSTM, EMBED, HEADS = 3, 4, 8, 2
CAPTIONS = ["a cat", "a photo of a big dog on the beach"]


def _batch(seed: int = 0):
  tokens = load_tokenizer("", context_length=CONTEXT)(CAPTIONS)
  rng = np.random.default_rng(seed)
  size = CLIP.vision.image_size
  return {"input_ids": np.asarray(tokens["input_ids"], np.int32),
          "attention_mask": np.asarray(tokens["attention_mask"], np.int32),
          "pixel_values": rng.normal(size=(len(CAPTIONS), size, size, 3)).astype(np.float32)}


def _with_new_padding(batch, seed: int = 1):
  """`batch` with other (non-EOT) token ids wherever attention_mask is 0."""
  ids = batch["input_ids"].copy()
  padding = batch["attention_mask"] == 0
  ids[padding] = np.random.default_rng(seed).integers(0, 49000, size=int(padding.sum()))
  assert not np.array_equal(ids, batch["input_ids"])
  return {**batch, "input_ids": ids}


def _random_params(model, *inputs, seed: int = 0, scale: float = 0.1):
  """model's parameter tree (shapes by jax.eval_shape: nothing compiled) filled with
  N(0, scale^2) values, LayerNorm scales 1 + N(0, scale^2): non-zero biases, cheap to build."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    values = scale * rng.normal(size=leaf.shape).astype(np.float32)
    return values + 1 if jax.tree_util.keystr(path).endswith("['scale']") else values
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnames=("model", "method", "train"))
def _apply(model, params, batch, method=None, train=False):
  """model.apply, compiled once per (model, method) and input shapes."""
  return model.apply({"params": params}, batch, method=method, train=train)


@jax.jit
def _text_tower(params, input_ids, attention_mask):
  return TextTransformer(CLIP.text).apply({"params": params}, input_ids, attention_mask)


@jax.jit
def _vision_tower(params, pixel_values):
  return VisionTransformer(CLIP.vision).apply({"params": params}, pixel_values)


def _close(actual, expected, tol=1e-5):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def _shapes(tree):
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ------------------------------------------------------------------ BiLstm vs torch.nn.LSTM


def _torch_lstm_to_flax(lstm, hidden: int):
  """torch.nn.LSTM's weights as BiLstm's parameters (cells forward_k / backward_k)."""
  params = {}
  for layer in range(lstm.num_layers):
    for suffix, direction in (("", "forward"), ("_reverse", "backward")):
      get = lambda name, s=suffix, k=layer: getattr(lstm, f"{name}_l{k}{s}").detach().numpy()
      w_ih, w_hh = get("weight_ih"), get("weight_hh")
      bias = get("bias_ih") + get("bias_hh")
      cell = {}
      for g, gate in enumerate("ifgo"):  # torch's gate order
        rows = slice(g * hidden, (g + 1) * hidden)
        cell[f"i{gate}"] = {"kernel": w_ih[rows].T}
        cell[f"h{gate}"] = {"kernel": w_hh[rows].T, "bias": bias[rows]}
      params[f"{direction}_{layer}"] = cell
  return params


def test_bilstm_matches_torch_lstm_with_packed_lengths():
  import torch  # pylint: disable=import-outside-toplevel  # not in the sharding subprocess
  batch, length, features, hidden = 3, 6, 5, 4
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, length, features)).astype(np.float32)
  lengths = np.array([3, 6, 1])
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
  with torch.no_grad():
    _, (h_n, _) = lstm(packed)
  expected = torch.cat([h_n[-2], h_n[-1]], dim=-1).numpy()

  model = BiLstm(hidden, num_layers=2)
  reference = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, lengths)["params"]
  params = _torch_lstm_to_flax(lstm, hidden)
  assert _shapes(params) == _shapes(reference)
  run = jax.jit(lambda p, inputs: model.apply({"params": p}, inputs, lengths))
  out = run(params, x)
  assert out.shape == (batch, 2 * hidden)
  _close(out, expected)

  # Padding positions (t >= length) do not change the result.
  noisy = x.copy()
  padding = np.arange(length)[None, :] >= lengths[:, None]
  noisy[padding] = 100 * rng.normal(size=(int(padding.sum()), features))
  _close(run(params, noisy), out, 1e-6)


# ------------------------------------------------------------------ Classifier


def test_classifier_is_two_dense_layers_with_dropout_between():
  model = Classifier(hidden=6, num_classes=3, dropout_rate=0.5)
  x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
  params = _random_params(model, x)
  assert _shapes(params) == {"['fc']['bias']": (6,), "['fc']['kernel']": (5, 6),
                             "['out']['bias']": (3,), "['out']['kernel']": (6, 3)}
  fc, out = params["fc"], params["out"]
  expected = (x @ fc["kernel"] + fc["bias"]) @ out["kernel"] + out["bias"]  # no activation
  _close(model.apply({"params": params}, x), expected)
  _close(model.apply({"params": params}, x, train=False), expected)

  train = lambda seed: np.asarray(model.apply({"params": params}, x, train=True,
                                              rngs={"dropout": jax.random.PRNGKey(seed)}))
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(train(0), train(0))
  assert not np.allclose(train(0), expected)


# ------------------------------------------------------------------ shared models and params


def _text_model():
  return ClipTextClassifier(CLIP, NUM_CLASSES, lstm_size=LSTM, lstm_layers=2, dropout_rate=0.1)


def _image_model():
  return ClipImageClassifier(CLIP, NUM_CLASSES, dropout_rate=0.1)


def _multi_model(residual=False, num_blocks=1):
  return ClipMultiClassifier(CLIP, NUM_CLASSES, embed_dim=EMBED, num_blocks=num_blocks,
                             num_heads=HEADS, residual=residual, lstm_size=LSTM, lstm_layers=2,
                             dropout_rate=0.1)


@pytest.fixture(scope="module", name="multi_params")
def fixture_multi_params():
  """Random parameters of CLIP-multi with residual blocks (one block); without
  block_0/layer_norm they are the plain model's, and 'text' / 'image' are CLIP-text's and
  CLIP-image's."""
  return _random_params(_multi_model(residual=True), _batch())


def _plain(params):
  return {**params, "block_0": {"self_attn": params["block_0"]["self_attn"]}}


# ------------------------------------------------------------------ CLIP-text


def test_text_classifier_pools_the_end_of_text_state(multi_params):
  batch = _batch()
  ids, mask = batch["input_ids"], batch["attention_mask"]
  eot = np.argmax(ids == CLIP.text.eos_token_id, axis=-1)
  lengths = mask.sum(-1)
  assert lengths[0] != lengths[1] and lengths.max() < CONTEXT
  np.testing.assert_array_equal(eot, lengths - 1)  # the tokenizer's EOT is the last token

  params = multi_params["text"]
  _, pooled, sequence = _apply(_text_model(), params, batch, method="features")
  tower = _text_tower(params["text_model"], ids, mask)
  rows = np.arange(len(ids))
  _close(pooled, np.asarray(tower["sequence"])[rows, eot], 1e-6)
  _close(pooled, tower["pooled"], 1e-6)
  _close(sequence, tower["sequence"], 1e-6)
  assert not np.allclose(pooled, np.asarray(sequence)[:, 0], atol=1e-3)  # not position 0

  # Hand-built ids, padded with 0 after a single EOT: still pooled at the EOT.
  hand = {**batch, "input_ids": np.where(mask == 1, ids, 0).astype(np.int32)}
  _, hand_pooled, hand_sequence = _apply(_text_model(), params, hand, method="features")
  _close(hand_pooled, np.asarray(hand_sequence)[rows, eot], 1e-6)
  _close(hand_pooled, pooled, 1e-6)


def test_text_classifier_ignores_padded_token_ids(multi_params):
  batch = _batch()
  params = multi_params["text"]
  logits = _apply(_text_model(), params, batch, method="features")[0]
  changed = _apply(_text_model(), params, _with_new_padding(batch), method="features")[0]
  _close(changed, logits, 1e-6)


def test_text_classifier_logits_are_cls_head_plus_lstm_head(multi_params):
  batch = _batch()
  params = multi_params["text"]
  logits = _apply(_text_model(), params, batch)
  assert set(logits) == {"text"} and logits["text"].shape == (2, NUM_CLASSES)
  _close(logits["text"], _apply(_text_model(), params, batch, method="features")[0], 1e-6)

  @jax.jit
  def by_parts(p, input_ids, attention_mask):
    tower = TextTransformer(CLIP.text).apply({"params": p["text_model"]}, input_ids,
                                             attention_mask)
    h = BiLstm(LSTM, 2).apply({"params": p["lstm"]}, tower["sequence"],
                              attention_mask.sum(-1))
    width = CLIP.text.hidden_size
    return h, (Classifier(width, NUM_CLASSES).apply({"params": p["cls_head"]}, tower["pooled"])
               + Classifier(2 * LSTM, NUM_CLASSES).apply({"params": p["seq_head"]}, h))

  h, expected = by_parts(params, batch["input_ids"], batch["attention_mask"])
  assert h.shape == (2, 2 * LSTM)
  _close(logits["text"], expected)


# ------------------------------------------------------------------ CLIP-multi (eq. 4-6)


def _dense(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _attention(x, p, valid, heads):
  """Multi-head self-attention in numpy: x [B, N, D], key mask valid [B, N]."""
  batch, n, width = x.shape
  split = lambda y: y.reshape(batch, n, heads, width // heads)
  q, k, v = (split(_dense(x, p[name])) for name in ("q_proj", "k_proj", "v_proj"))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(width // heads)
  logits = np.where(valid[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return _dense(np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, n, width),
                p["out_proj"])


def _layer_norm(x, p, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _multi_by_hand(params, batch, residual):
  """eq. 4-6 with one attention block, from the towers' outputs (run alone) and numpy."""
  text = _text_tower(params["text"]["text_model"], batch["input_ids"], batch["attention_mask"])
  image = _vision_tower(params["image"]["vision_model"], batch["pixel_values"])
  text, image = jax.tree.map(lambda a: np.asarray(a, np.float64), (text, image))
  e_t = _dense(np.concatenate([text["pooled"][:, None], text["sequence"][:, 1:]], 1),
               params["text_projection"])
  e_i = _dense(np.concatenate([image["pooled"][:, None], image["sequence"][:, 1:]], 1),
               params["image_projection"])
  patches = (CLIP.vision.image_size // CLIP.vision.patch_size) ** 2
  assert e_t.shape == (2, CONTEXT, EMBED) and e_i.shape == (2, 1 + patches, EMBED)
  mask = batch["attention_mask"].astype(bool)
  valid = np.concatenate([np.ones((2, 1), bool), mask[:, 1:], np.ones((2, 1 + patches), bool)],
                         axis=1)
  x = np.concatenate([e_t, e_i], axis=1)
  block = params["block_0"]
  out = _attention(x, block["self_attn"], valid, HEADS)
  if residual:
    out = _layer_norm(x + out, block["layer_norm"])
  fused = np.concatenate([out[:, 0], out[:, e_t.shape[1]]], axis=-1)
  return _dense(_dense(fused, params["head"]["fc"]), params["head"]["out"])


def test_multi_classifier_fusion_matches_eq_4_to_6_by_hand(multi_params):
  batch = _batch()
  params = _plain(multi_params)
  outputs = _apply(_multi_model(), params, batch)
  assert set(outputs) == {"multi", "text", "image"}
  assert all(v.shape == (2, NUM_CLASSES) for v in outputs.values())
  _close(outputs["multi"], _multi_by_hand(params, batch, residual=False))

  text = _apply(_text_model(), params["text"], batch, method="features")[0]
  image = _apply(_image_model(), params["image"], batch)
  assert set(image) == {"image"}
  _close(outputs["text"], text, 1e-6)
  _close(outputs["image"], image["image"], 1e-6)

  # Padded text positions are masked keys, so their token ids do not matter.
  _close(_apply(_multi_model(), params, _with_new_padding(batch))["multi"], outputs["multi"],
         1e-6)


def test_multi_classifier_residual_block_is_layer_norm_of_sum(multi_params):
  batch = _batch()
  assert set(multi_params["block_0"]) == {"self_attn", "layer_norm"}
  plain_shapes = jax.eval_shape(_multi_model().init, jax.random.PRNGKey(0), batch)["params"]
  assert _shapes(_plain(multi_params)) == _shapes(plain_shapes)
  outputs = _apply(_multi_model(residual=True), multi_params, batch)
  _close(outputs["multi"], _multi_by_hand(multi_params, batch, residual=True))
  plain = _apply(_multi_model(), _plain(multi_params), batch)
  assert not np.allclose(outputs["multi"], plain["multi"], atol=1e-4)
  _close(outputs["text"], plain["text"], 1e-6)


# ------------------------------------------------------------------ parameter trees


def test_parameter_trees_and_clip_subtrees():
  batch = jax.tree.map(jnp.asarray, _batch())
  key = jax.random.PRNGKey(0)
  abstract = lambda model: jax.eval_shape(model.init, key, batch)["params"]
  text, image = abstract(_text_model()), abstract(_image_model())
  multi = abstract(_multi_model(num_blocks=2))
  assert set(text) == {"text_model", "cls_head", "lstm", "seq_head"}
  assert set(image) == {"vision_model", "head"}
  assert set(multi) == {"text", "image", "text_projection", "image_projection", "block_0",
                        "block_1", "head"}
  assert _shapes(multi["text"]) == _shapes(text)
  assert _shapes(multi["image"]) == _shapes(image)
  assert set(text["lstm"]) == {"forward_0", "backward_0", "forward_1", "backward_1"}
  assert set(multi["block_1"]) == {"self_attn"}

  clip = jax.eval_shape(Clip(CLIP).init, key, batch["input_ids"], batch["attention_mask"],
                        batch["pixel_values"])["params"]
  assert _shapes(text["text_model"]) == _shapes(clip["text_model"])
  assert _shapes(image["vision_model"]) == _shapes(clip["vision_model"])


# ------------------------------------------------------------------ sharding (subprocess)


def _sharded_main():
  """Run with 8 fake CPU devices: the partition specs of configs/memotion3.py:tiny's
  ClipMultiClassifier by PARTITION_RULES on a data 4 x model 2 mesh, and the repository's eval
  step (forward pass and Table 3's blended loss) on that mesh and on one device with the same
  parameters. Prints a JSON summary. (A train step would compile for about 80 s per mesh on
  two CPU cores: the BiLSTM scans' and both towers' gradients at 77 tokens.)"""
  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, TESTS)
  from conftest import load_config

  from mmjax import parallel
  from mmjax.projects.memotion3.models import PARTITION_RULES
  from mmjax.tasks import get_task
  from mmjax.train.state import TrainState
  from mmjax.train.steps import abstract_train_state, make_eval_step
  from mmjax.train.trainer import build_optimizer_for

  config = load_config("memotion3", "tiny")
  task = get_task(config)
  task.prepare(lambda *a: None)
  tx = build_optimizer_for(config, task)
  batch = next(iter(task.train_dataset(config.batch_size, config.seed, 0, 1)))
  params = _random_params(task.model, task.example_batch(1), scale=0.1)
  # The step-0 state of create_train_state, with random parameters (no init compiled).
  state = TrainState(step=np.zeros((), np.int32), params=params, model_state={},
                     opt_state=tx.init(params), rng=jax.random.PRNGKey(config.seed + 2),
                     task_state=task.init_task_state(params))
  summary = {"devices": jax.device_count(), "model": type(task.model).__name__,
             "rules_are_config": tuple(config.sharding_rules) == PARTITION_RULES}
  specs_of = lambda tree: {parallel.path_to_str(p): str(s.spec) for p, s in
                           jax.tree_util.tree_flatten_with_path(tree)[0]}

  def evaluate(devices, axes):
    mesh = parallel.make_mesh(axes, devices=devices)
    _, shardings = abstract_train_state(task, tx, mesh, config.sharding_rules, config.seed)
    placed_state = jax.device_put(state, shardings)
    placed = {parallel.path_to_str(p): {"spec": str(x.sharding.spec), "shape": list(x.shape),
                                        "shard": list(x.addressable_shards[0].data.shape)}
              for p, x in jax.tree_util.tree_flatten_with_path(placed_state.params)[0]}
    predictions, _, loss_sum, weight_sum = make_eval_step(task, mesh, shardings)(
        placed_state, parallel.global_batch(batch, mesh))
    predictions = jax.tree.map(lambda x: np.asarray(x).tolist(), predictions)
    return {"loss": float(loss_sum / weight_sum), "predictions": predictions,
            # The repository's own rule matching, directly on the parameter tree.
            "specs": specs_of(parallel.tree_shardings(params, PARTITION_RULES, mesh)),
            "state_specs": specs_of(shardings.params), "placed": placed,
            "moment_specs": specs_of(shardings.opt_state)}

  summary["sharded"] = evaluate(jax.devices(), [("data", 4), ("model", 2)])
  summary["single"] = evaluate(jax.devices()[:1], [("data", 1), ("model", 1)])
  print(json.dumps(summary))


def test_partition_rules_and_sharded_eval_step(cache_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", MMJAX_CACHE=cache_dir)
  result = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["devices"] == 8 and summary["rules_are_config"]
  assert summary["model"] == "ClipMultiClassifier"
  sharded, single = summary["sharded"], summary["single"]
  specs, placed = sharded["specs"], sharded["placed"]
  assert specs == sharded["state_specs"]  # create_train_state's rules are the same
  for name, spec in specs.items():
    assert placed[name]["spec"] == spec, name  # every parameter is placed by its rule
    if name.endswith("/kernel") or name.endswith("token_embedding/embedding"):
      assert spec != "P()", f"{name} {placed[name]} is not split"
  attention = "block_0/self_attn"
  assert specs[f"{attention}/q_proj/kernel"] == "P('data', 'model')"
  assert placed[f"{attention}/q_proj/kernel"]["shard"] == [16 // 4, 16 // 2]
  assert specs[f"{attention}/q_proj/bias"] == "P('model',)"
  assert specs[f"{attention}/out_proj/kernel"] == "P('model', 'data')"
  assert specs["text/text_model/encoder/layers_0/self_attn/q_proj/kernel"] == "P('data', 'model')"
  assert specs["image/vision_model/encoder/layers_1/mlp/fc2/kernel"] == "P('model', 'data')"
  assert specs["text/text_model/embeddings/token_embedding/embedding"] == "P('data', None)"
  assert specs["text_projection/kernel"] == "P('data', 'model')"
  assert specs["image_projection/kernel"] == "P('data', 'model')"
  assert specs["head/fc/kernel"] == "P('data', 'model')"
  assert specs["head/out/kernel"] == "P('data', None)"
  assert specs["text/cls_head/fc/kernel"] == specs["text/seq_head/fc/kernel"]
  for cell in ("forward_0", "backward_0", "forward_1", "backward_1"):
    for gate in ("ii", "hi"):
      name = f"text/lstm/{cell}/{gate}/kernel"
      assert specs[name] == "P('data', None)", name
      assert placed[name]["shard"][0] * 4 == placed[name]["shape"][0], name
  for name in ("text/lstm/forward_0/hi/bias", "image/vision_model/post_layernorm/scale",
               "block_0/self_attn/out_proj/bias", "head/fc/bias"):
    assert specs[name] == "P()", name
  moments = sharded["moment_specs"]  # optimizer moments are partitioned like their parameters
  for name in (f"{attention}/q_proj/kernel", "text/lstm/forward_1/ii/kernel"):
    matching = [spec for path, spec in moments.items() if path.endswith("/" + name)]
    assert matching and set(matching) == {specs[name]}, (name, matching)
  assert set(single["placed"]) == set(placed)
  assert abs(sharded["loss"] - single["loss"]) <= 1e-5 * max(1.0, abs(single["loss"])), summary
  assert set(sharded["predictions"]) == set(single["predictions"])
  for head, probabilities in single["predictions"].items():  # softmax(logits) of each head
    assert np.ptp(np.asarray(probabilities), axis=0).max() > 1e-3, head  # inputs matter
    # log-softmax: the logits up to a per-example shift
    np.testing.assert_allclose(np.log(sharded["predictions"][head]), np.log(probabilities),
                               rtol=1e-5, atol=1e-5, err_msg=head)


if __name__ == "__main__":
  _sharded_main()
