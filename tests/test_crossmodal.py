"""Cross-modal layers (seed 001 section 2, mmjax/nn/crossmodal.py): the equations against numpy,
padding never reaching an output (train and eval mode), and a gate of 0 giving exactly the
layers without the cross-modal term."""

import jax
import numpy as np
import pytest

from mmjax.nn.crossmodal import (
  AttentionTransform,
  CrossModalAttentionRNN,
  CrossModalEncoderBlock,
  CrossModalNetVLAD,
  CrossModalTransformer,
  HeadwiseTransform,
  RecurrentStates,
)

LENGTHS = [6, 4, 2]


def _streams(rng, frames=6):
  mask = (np.arange(frames)[None] < np.array(LENGTHS)[:, None]).astype(np.float32)
  x_v = rng.normal(size=(3, frames, 8)).astype(np.float32)
  x_a = rng.normal(size=(3, frames, 4)).astype(np.float32)
  return x_v, x_a, mask


def _layers(transform):
  return {
      "transformer": CrossModalTransformer(16, 2, 2, 32, max_frames=12, transform=transform),
      "netvlad": CrossModalNetVLAD((4, 3), transform=transform),
      "attention_rnn": CrossModalAttentionRNN(8, (3, 2), 5, transform=transform),
  }


def _relu(x):
  return np.maximum(x, 0.0)


def _dense(x, params):
  return x @ params["kernel"] + params["bias"]


def _layer_norm(x, params, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * params["scale"] + params["bias"]


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


# The padding and gate properties do not depend on the kind of F; each kind is run once here
# and checked against its formula in test_transforms_are_the_stated_functions.
@pytest.mark.parametrize("name,transform", [("transformer", "mlp"), ("netvlad", "relu"),
                                            ("attention_rnn", "relu")])
def test_padding_never_leaks_and_gate_zero_removes_the_cross_term(name, transform):
  rng = np.random.default_rng(0)
  x_v, x_a, mask = _streams(rng)
  gate = np.array([0.3, 1.0, 0.7], np.float32)
  context = rng.normal(size=(3, 2)).astype(np.float32)
  layer = _layers(transform)[name]
  variables = layer.init(jax.random.PRNGKey(0), x_v, x_a, mask, gate, context, train=False)

  def run(v, a, m, g=gate, train=False, module=layer):
    return module.apply(variables, v, a, m, g, context, train=train, mutable=["batch_stats"])[0]

  pad = lambda x, value: np.concatenate([x, np.full((3, 4) + x.shape[2:], value, x.dtype)], 1)
  garbage = lambda x: np.where(mask[..., None] > 0, x, 40.0).astype(np.float32)
  for train in (False, True):
    base = run(x_v, x_a, mask, train=train)
    for out in (run(garbage(x_v), garbage(x_a), mask, train=train),
                run(pad(x_v, 9.0), pad(x_a, -9.0), pad(mask, 0.0), train=train)):
      for got, want in zip(out, base):
        np.testing.assert_allclose(got, want, atol=2e-5)
  # g = 0: exactly the layer without the cross-modal term (same parameters); g > 0 differs.
  without = layer.clone(cross=False)
  zero = run(x_v, x_a, mask, g=np.zeros(3, np.float32))
  plain = run(x_v, x_a, mask, module=without)
  for got, want in zip(zero, plain):
    np.testing.assert_array_equal(got, want)
  assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
             for a, b in zip(run(x_v, x_a, mask), plain))


def _numpy_vlad(weights, x, centers):
  vlad = np.einsum("btk,btd->bkd", weights, x) - weights.sum(1)[..., None] * centers[None]
  vlad /= np.maximum(np.linalg.norm(vlad, axis=-1, keepdims=True), 1e-6)
  vlad = vlad.reshape(len(vlad), -1)
  return vlad / np.maximum(np.linalg.norm(vlad, axis=-1, keepdims=True), 1e-6)


def _numpy_assignment(x, mask, params, prefix):
  """softmax(BN(x W)) with the initial running statistics (mean 0, variance 1), masked."""
  logits = x @ np.asarray(params[f"{prefix}assignment"]["kernel"])
  bn = params[f"{prefix}assignment_bn"]
  logits = logits / np.sqrt(1 + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True) * mask[..., None]


def _numpy_transform(alpha, params):
  return _relu(alpha @ np.asarray(params["out"]["kernel"]) + np.asarray(params["out"]["bias"]))


def test_crossmodal_netvlad_is_the_paper_equation():
  # V_v = sum_t (alpha_v + g F_a(alpha_a)) (x_v - c_v), V_a = sum_t (alpha_a + g F_v(alpha_v)) ...
  rng = np.random.default_rng(1)
  x_v, x_a, mask = _streams(rng)
  gate = np.array([0.5, 1.0, 0.0], np.float32)
  layer = CrossModalNetVLAD((4, 3))
  variables = layer.init(jax.random.PRNGKey(1), x_v, x_a, mask, gate, train=False)
  out_v, out_a = layer.apply(variables, x_v, x_a, mask, gate, train=False)
  p = variables["params"]
  alpha_v = _numpy_assignment(x_v, mask, p, "rgb_")
  alpha_a = _numpy_assignment(x_a, mask, p, "audio_")
  g = gate[:, None, None]
  weights_v = alpha_v + g * _numpy_transform(alpha_a, p["F_audio"]) * mask[..., None]
  weights_a = alpha_a + g * _numpy_transform(alpha_v, p["F_rgb"]) * mask[..., None]
  np.testing.assert_allclose(out_v, _numpy_vlad(weights_v, x_v, np.asarray(p["rgb_centers"])),
                             atol=2e-5)
  np.testing.assert_allclose(out_a, _numpy_vlad(weights_a, x_a, np.asarray(p["audio_centers"])),
                             atol=2e-5)


def test_crossmodal_attention_rnn_is_the_paper_equation():
  # c_a = sum_t (alpha_a + g F_v(alpha_v)) h_a over the attention-cluster units.
  rng = np.random.default_rng(2)
  x_v, x_a, mask = _streams(rng)
  gate = np.array([1.0, 0.25, 0.5], np.float32)
  layer = CrossModalAttentionRNN(8, (3, 2), 5)
  variables = layer.init(jax.random.PRNGKey(2), x_v, x_a, mask, gate)
  out_v, out_a = layer.apply(variables, x_v, x_a, mask, gate)
  p = jax.tree.map(np.asarray, variables["params"])
  # The LSTM states come from flax's cell; the attention units and the cross term are numpy.
  states = {m: np.asarray(RecurrentStates(8).apply({"params": p[f"{m}_rnn"]}, x, mask))
            for m, x in (("rgb", x_v), ("audio", x_a))}
  alphas = {}
  for m in ("rgb", "audio"):
    a = p[f"{m}_attention"]
    scores = _dense(np.tanh(_dense(states[m], a["project"])), a["score"])  # w_n^T tanh(W h_t)
    scores = np.where(mask[..., None] > 0, scores, -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    alphas[m] = e / e.sum(axis=1, keepdims=True)  # softmax over the real frames
  for m, other, out in (("rgb", "audio", out_v), ("audio", "rgb", out_a)):
    weights = alphas[m] + gate[:, None, None] * _numpy_transform(
        alphas[other], p[f"F_{other}"]) * mask[..., None]
    expected = np.einsum("btn,btd->bnd", weights, states[m]).reshape(3, -1)
    np.testing.assert_allclose(out, expected, atol=2e-5)
  # Attention units: a distribution over the real frames of each video.
  np.testing.assert_allclose(alphas["rgb"].sum(1), 1.0, atol=1e-5)
  assert np.all(alphas["rgb"][mask == 0] == 0)


def test_transforms_are_the_stated_functions():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
  relu = HeadwiseTransform("relu")
  variables = relu.init(jax.random.PRNGKey(0), logits)
  variables = {"params": {"scale": np.array([1.0, -2.0, 0.5], np.float32),
                          "bias": np.array([0.0, 1.0, -0.5], np.float32)}}
  expected = _relu(logits * variables["params"]["scale"][None, :, None, None]
                   + variables["params"]["bias"][None, :, None, None])
  np.testing.assert_allclose(relu.apply(variables, logits), expected, rtol=1e-6)
  mlp = HeadwiseTransform("mlp", hidden=5)
  p = jax.tree.map(np.asarray, mlp.init(jax.random.PRNGKey(1), logits)["params"])
  hidden = _relu(logits[..., None] * p["w1"][None, :, None, None] + p["b1"][None, :, None, None])
  expected = _relu(np.einsum("bhqkm,hm->bhqk", hidden, p["w2"]) + p["b2"][None, :, None, None])
  np.testing.assert_allclose(mlp.apply({"params": p}, logits), expected, rtol=1e-5, atol=1e-6)
  alpha = rng.random(size=(2, 4, 3)).astype(np.float32)
  dense = AttentionTransform(5, "mlp", hidden=6)
  p = jax.tree.map(np.asarray, dense.init(jax.random.PRNGKey(2), alpha)["params"])
  expected = _relu(_relu(alpha @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["out"]["kernel"]
                   + p["out"]["bias"])
  np.testing.assert_allclose(dense.apply({"params": p}, alpha), expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="config.model.crossmodal.transform"):
    AttentionTransform(5, "tanh").init(jax.random.PRNGKey(0), alpha)


def test_crossmodal_transformer_block_is_the_paper_equation():
  # Head i of the video stream: softmax(l_iv + g F_ia(l_ia)) V_iv, l_im = q_im k_im^T / sqrt(d),
  # F_ia(l) = ReLU(s_i l + b_i); symmetrically for audio; then out_proj, residual, LN, MLP.
  rng = np.random.default_rng(4)
  x_v, x_a, mask = _streams(rng)
  x_a = rng.normal(size=(3, 6, 6)).astype(np.float32)  # another width, same heads
  gate = np.array([1.0, 0.5, 0.0], np.float32)
  block = CrossModalEncoderBlock(num_heads=2, mlp_dim=10)
  variables = block.init(jax.random.PRNGKey(3), x_v, x_a, mask, gate)
  p = jax.tree.map(np.asarray, variables["params"])
  # Non-trivial F, different per stream: negative scales and biases per head.
  p["F_rgb"] = {"scale": np.array([0.7, -1.3], np.float32),
                "bias": np.array([0.2, 0.4], np.float32)}
  p["F_audio"] = {"scale": np.array([-0.5, 1.1], np.float32),
                  "bias": np.array([0.3, -0.1], np.float32)}
  out_v, out_a = block.apply({"params": p}, x_v, x_a, mask, gate)

  def heads(x, m, name):
    y = _dense(_layer_norm(x, p[f"{m}_layer_norm1"]), p[f"{m}_{name}_proj"])
    return y.reshape(y.shape[:2] + (2, -1))

  streams = {"rgb": x_v, "audio": x_a}
  logits = {m: np.einsum("bqhd,bkhd->bhqk", heads(x, m, "q") / np.sqrt(x.shape[-1] / 2),
                         heads(x, m, "k")) for m, x in streams.items()}
  for m, other, out in (("rgb", "audio", out_v), ("audio", "rgb", out_a)):
    f = p[f"F_{other}"]
    crossed = _relu(f["scale"][None, :, None, None] * logits[other]
                    + f["bias"][None, :, None, None])
    combined = logits[m] + gate[:, None, None, None] * crossed
    combined = np.where(mask[:, None, None, :] > 0, combined, -np.inf)
    weights = np.exp(combined - combined.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = streams[m]
    attended = np.einsum("bhqk,bkhd->bqhd", weights, heads(x, m, "v")).reshape(x.shape)
    x = x + _dense(attended, p[f"{m}_out_proj"])
    mlp = p[f"{m}_mlp"]
    h = _dense(_gelu_tanh(_dense(_layer_norm(x, p[f"{m}_layer_norm2"]), mlp["fc1"])), mlp["fc2"])
    real = mask > 0  # padded query frames attend uniformly in the layer; never pooled
    np.testing.assert_allclose(np.asarray(out)[real], (x + h)[real], atol=2e-5)
