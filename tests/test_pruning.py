"""PNAO node pruning (mmjax.transforms.pruning): the L1 subgradient, eq. 10 importance, the eq. 11
global mask, masked training in an optax chain, compaction and the masks' sharding layout."""

import types
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import config_defaults
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.train.optimizer import build_optimizer, freeze, transform_from_spec
from mmjax.transforms.pruning import (
  NodePruningState,
  apply_masks,
  compact,
  l1_penalty,
  masks_from_state,
  node_importance,
  node_masks,
  node_pruning,
  parameter_count,
)


class FusionMlp(nn.Module):
  """Image and audio branches, concatenated, a fusion layer and a head; widths from arguments."""
  image: int = 12
  audio: int = 12
  fusion: int = 8
  classes: int = 3

  @nn.compact
  def __call__(self, image, audio):
    x = jnp.concatenate([nn.relu(nn.Dense(self.image, name="image")(image)),
                         nn.relu(nn.Dense(self.audio, name="audio")(audio))], axis=-1)
    x = nn.relu(nn.Dense(self.fusion, name="fusion")(x))
    return nn.Dense(self.classes, name="head")(x)


CONSUMERS = {"image": [("fusion", 0)], "audio": [("fusion", 12)], "fusion": [("head", 0)]}
PLANTED = {"image": [3, 7], "audio": [0], "fusion": [5]}


def _inputs(n=6, seed=1):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 16)).astype(np.float32),
          rng.normal(size=(n, 16)).astype(np.float32))


SHAPES = {"image": (16, 12), "audio": (16, 12), "fusion": (24, 8), "head": (8, 3)}


def _params(planted=None, seed=0):
  """FusionMlp params (the tree of FusionMlp().init), every kernel ~N(0, 1) (importance ~0.8)
  except the planted columns (scaled by 1e-3), random biases."""
  rng = np.random.default_rng(seed)
  params = {}
  for module, shape in SHAPES.items():
    kernel = rng.normal(size=shape)
    kernel[:, (planted or {}).get(module, [])] *= 1e-3
    params[module] = {"kernel": kernel.astype(np.float32),
                      "bias": rng.normal(size=shape[-1:]).astype(np.float32)}
  return params


@jax.jit
def _apply(params, image, audio):
  return FusionMlp().apply({"params": params}, image, audio)


def _expected_masks(params, planted, modules=("image", "audio", "fusion")):
  return {m: np.isin(np.arange(params[m]["kernel"].shape[-1]), planted.get(m, []), invert=True)
          for m in modules}


# ------------------------------------------------------------------------------------- l1_penalty

def test_l1_penalty_adds_alpha_sign_to_matched_leaves_only():
  params = {"dense": {"kernel": np.array([[1.5, -2.0], [0.0, 3.0]], np.float32),
                      "bias": np.array([4.0, -1.0], np.float32)}}
  grads = {"dense": {"kernel": np.array([[0.1, 0.2], [0.3, 0.4]], np.float32),
                     "bias": np.array([0.5, 0.6], np.float32)}}
  tx = l1_penalty(0.25)
  out, _ = tx.update(grads, tx.init(params), params)
  expected = grads["dense"]["kernel"] + 0.25 * np.sign(params["dense"]["kernel"])
  np.testing.assert_array_equal(out["dense"]["kernel"], expected)
  np.testing.assert_array_equal(out["dense"]["bias"], grads["dense"]["bias"])
  assert out["dense"]["kernel"][1, 0] == pytest.approx(0.3)  # sign(0) = 0


def test_l1_penalty_in_an_sgd_chain_is_the_gradient_of_the_penalised_loss():
  """loss = 1/2 sum_leaves ||theta - t||^2; reference: jax.grad of loss + alpha sum_kernels |W|."""
  params, targets = _params(seed=0), _params(seed=1)
  alpha, lr = 1e-2, 0.1

  def loss(p):
    return sum(0.5 * jnp.sum((x - t) ** 2) for x, t in zip(jax.tree.leaves(p),
                                                           jax.tree.leaves(targets)))

  def penalised(p):
    return loss(p) + alpha * sum(jnp.sum(jnp.abs(p[m]["kernel"])) for m in SHAPES)

  tx = transform_from_spec(("mmjax.transforms.pruning.l1_penalty", {"alpha": alpha}), "spec")
  tx = optax.chain(tx, optax.sgd(lr))

  @jax.jit
  def chained_and_reference(p):
    return tx.update(jax.grad(loss)(p), tx.init(p), p)[0], jax.grad(penalised)(p)

  updates, reference = chained_and_reference(params)
  for module in SHAPES:
    np.testing.assert_allclose(updates[module]["kernel"], -lr * reference[module]["kernel"],
                               rtol=1e-6)
    np.testing.assert_allclose(  # numpy: -lr * (theta - t + alpha sign(theta)), bias unpenalised
        updates[module]["kernel"], -lr * (params[module]["kernel"] - targets[module]["kernel"]
                                          + alpha * np.sign(params[module]["kernel"])), rtol=1e-5)
    np.testing.assert_allclose(updates[module]["bias"],
                               -lr * (params[module]["bias"] - targets[module]["bias"]), rtol=1e-6)


def test_l1_penalty_bad_inputs():
  params = {"dense": {"kernel": np.ones((2, 2))}}
  with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
    l1_penalty(-1e-4)
  with pytest.raises(ValueError, match=r"include='.\*nothing' matches no parameter"):
    l1_penalty(1e-4, include=".*nothing").init(params)
  tx = l1_penalty(1e-4)
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(params, tx.init(params))


# --------------------------------------------------------------------- importance and global mask

def test_node_importance_is_eq_10():
  params = _params()
  got = node_importance(params)
  for module in ("image", "audio", "fusion", "head"):
    kernel = np.asarray(params[module]["kernel"])  # [in, out]: torch row j = column j
    n_in, n_out = kernel.shape
    expected = np.zeros(n_out)
    for j in range(n_out):
      expected[j] = sum(abs(kernel[n, j]) for n in range(n_in)) / n_in
    np.testing.assert_allclose(got[module]["kernel"], expected, rtol=1e-6)
    assert got[module]["bias"] is None


def test_global_threshold_masks_only_the_planted_columns():
  params = _params(PLANTED)
  masks = node_masks(params, 0.1, keep="head/kernel")
  for module, expected in _expected_masks(params, PLANTED).items():
    np.testing.assert_array_equal(masks[module]["kernel"], expected)
    assert masks[module]["bias"] is None
  assert masks["head"]["kernel"] is None
  # The same under jit; and one global max: scale one layer up and the others lose nodes.
  jitted = jax.jit(lambda p: node_masks(p, 0.1, keep="head/kernel"))(params)
  jax.tree.map(np.testing.assert_array_equal, jitted, masks)
  big = dict(params, fusion={"kernel": np.asarray(params["fusion"]["kernel"]) * 100.0,
                             "bias": params["fusion"]["bias"]})
  with pytest.warns(RuntimeWarning):
    lost = node_masks(big, 0.1, keep="head/kernel")
  assert lost["image"]["kernel"].sum() == 1 and lost["audio"]["kernel"].sum() == 1


def test_keep_regex_excludes_layers_from_pruning_and_from_the_max():
  params = _params()
  params["head"]["kernel"] = np.asarray(params["head"]["kernel"]) * 1000.0
  masks = node_masks(params, 0.1, keep="head/kernel")
  assert masks["head"]["kernel"] is None
  assert all(np.all(masks[m]["kernel"]) for m in ("image", "audio", "fusion"))
  importance = node_importance(params, prunable=r"(image|audio)/kernel")
  assert importance["fusion"]["kernel"] is None and importance["head"]["kernel"] is None


def test_a_layer_that_would_lose_every_node_keeps_its_most_important_one():
  params = _params()
  kernel = np.array(params["audio"]["kernel"]) * 1e-3
  kernel[:, 5] *= 2.0  # the most important audio node
  params["audio"]["kernel"] = jnp.asarray(kernel)
  with pytest.warns(RuntimeWarning, match="every node of layer 'audio'"):
    masks = node_masks(params, 0.1, keep="head/kernel")
  np.testing.assert_array_equal(np.flatnonzero(masks["audio"]["kernel"]), [5])
  assert np.all(masks["image"]["kernel"])


def test_previous_masks_make_node_masks_monotone():
  params = _params()
  previous = jax.tree.map(lambda m: np.arange(m.shape[0]) != 0,
                          node_masks(params, 0.1, keep="head/kernel"))
  masks = node_masks(params, 0.1, keep="head/kernel", previous=previous)
  for module in ("image", "audio", "fusion"):
    np.testing.assert_array_equal(masks[module]["kernel"], previous[module]["kernel"])


@pytest.mark.parametrize("k", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), True])
def test_k_outside_0_1_raises(k):
  with pytest.raises(ValueError, match=r"0 < k < 1, got k="):
    node_masks(_params(), k)
  with pytest.raises(ValueError, match="0 < k < 1"):
    node_pruning(k, [0])


def test_no_prunable_kernel_raises_naming_the_regex():
  params = _params()
  with pytest.raises(ValueError, match=r"prunable='video/.\*'"):
    node_masks(params, 0.1, prunable="video/.*")
  with pytest.raises(ValueError, match=r"prunable='video/.\*'"):
    node_importance(params, prunable="video/.*")
  with pytest.raises(ValueError, match=r"keep='.\*'"):
    node_pruning(0.1, [0], keep=".*").init(params)
  with pytest.raises(ValueError, match="not a valid regex"):
    node_pruning(0.1, [0], prunable="(unclosed")


@pytest.mark.parametrize("at_steps", [[-1], [0, -3], [1.5], "3", 3])
def test_bad_at_steps_raise(at_steps):
  with pytest.raises(ValueError, match="at_steps"):
    node_pruning(0.1, at_steps)


# ---------------------------------------------------------------------- node_pruning in the chain

def _train(tx, params, steps, seed=0):
  """`steps` updates of the chain `tx` with random gradients; (params, state) after each."""
  rng = np.random.default_rng(seed)

  @jax.jit
  def step(p, state, grads):
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  state, history = jax.jit(tx.init)(params), []
  for _ in range(steps):
    grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    params, state = step(params, state, grads)
    history.append((params, state))
  return history


def test_node_pruning_is_the_identity_before_its_first_pruning_step_then_monotone():
  params = _params(PLANTED)
  del params["head"]  # fewer leaves, faster compilation
  updates = jax.tree.map(lambda p: 0.01 * p, params)
  tx = node_pruning(0.1, [2, 3, 4])
  step, state = jax.jit(tx.update), tx.init(params)
  for _ in range(2):
    out, state = step(updates, state, params)
    jax.tree.map(np.testing.assert_array_equal, out, updates)  # bit for bit
    assert all(np.all(m) for m in jax.tree.leaves(state.masks))
  # Update count 2 prunes the planted nodes: update = -param there. By hand, also prune the
  # important node 0 of 'fusion' (as an earlier round would have).
  masks = dict(state.masks, fusion={"kernel": np.arange(8)[None] != 0})
  out, state = step(updates, NodePruningState(state.count, masks), params)
  out = jax.tree.map(np.asarray, out)
  np.testing.assert_array_equal(out["image"]["kernel"][:, 3], -params["image"]["kernel"][:, 3])
  np.testing.assert_array_equal(out["image"]["bias"][3], -params["image"]["bias"][3])
  pruned = jax.tree.map(np.add, params, out)  # = optax.apply_updates
  expected = _expected_masks(params, PLANTED)
  expected["fusion"][0] = False
  for module, keep in expected.items():
    np.testing.assert_array_equal(state.masks[module]["kernel"], keep[None])
    assert np.all(pruned[module]["kernel"][:, ~keep] == 0.0)
  # Update count 3 prunes again on the zeroed params (importance 0 at the pruned nodes, the
  # other nodes as before): the masks do not change; pruned nodes stay pruned.
  zero = jax.tree.map(np.zeros_like, params)
  out, state = step(zero, state, pruned)
  for module, keep in expected.items():
    np.testing.assert_array_equal(masks_from_state(state)[module]["kernel"], keep)
  assert np.all(pruned["fusion"]["kernel"][:, 0] + np.asarray(out["fusion"]["kernel"])[:, 0] == 0)
  # Update count 4, under jit: every audio node falls below the threshold; the most important
  # one is kept and a warning names the layer.
  pruned["audio"]["kernel"] = pruned["audio"]["kernel"] * 1e-4
  pruned["audio"]["kernel"][:, 6] *= 2.0
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _, state = step(zero, state, pruned)
    jax.effects_barrier()
  assert any("(update 4): every node of layer 'audio'" in str(w.message) for w in caught)
  np.testing.assert_array_equal(np.flatnonzero(state.masks["audio"]["kernel"]), [6])


def test_node_pruning_in_an_adam_chain_keeps_pruned_nodes_exactly_zero():
  """l1_penalty -> adam -> node_pruning, inside the freeze wrapper with the head's bias frozen."""
  params = _params(PLANTED)
  del params["audio"]  # fewer leaves, faster compilation
  spec = ("mmjax.transforms.pruning.node_pruning",
          {"k": 0.1, "at_steps": [2], "keep": "head/kernel"})
  tx = freeze(optax.chain(l1_penalty(1e-4), optax.adam(1e-2), transform_from_spec(spec, "spec")),
              trainable=r"(image|fusion)/.*|head/kernel")
  history = _train(tx, params, 8)
  expected = _expected_masks(params, PLANTED, ("image", "fusion"))
  for module, keep in expected.items():
    for after in range(2, 8):
      p = history[after][0][module]
      assert np.all(np.asarray(p["kernel"])[:, ~keep] == 0.0)
      assert np.all(np.asarray(p["bias"])[~keep] == 0.0)
      assert not np.any(np.signbit(np.asarray(p["kernel"])[:, ~keep]))  # +0.0
    first, last = history[2][0][module], history[7][0][module]
    assert np.all(np.asarray(first["kernel"])[:, keep] != np.asarray(last["kernel"])[:, keep])
    assert np.all(np.asarray(first["bias"])[keep] != np.asarray(last["bias"])[keep])
  masks = masks_from_state(history[-1][1])
  for module, keep in expected.items():
    np.testing.assert_array_equal(masks[module]["kernel"], keep)
  assert masks["head"]["kernel"] is None and isinstance(masks["head"]["bias"], optax.MaskedNode)
  np.testing.assert_array_equal(history[-1][0]["head"]["bias"], params["head"]["bias"])
  assert np.all(np.asarray(history[-1][0]["head"]["kernel"]) != params["head"]["kernel"])
  (state,) = [x for x in jax.tree.leaves(history[-1][1],
                                         is_leaf=lambda x: isinstance(x, NodePruningState))
              if isinstance(x, NodePruningState)]
  assert state.masks["fusion"]["kernel"].shape == (1, 8) and int(state.count) == 8


def test_node_pruning_bad_calls():
  params = _params()
  tx = node_pruning(0.1, [0])
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(params, tx.init(params))
  bad = {"dense": {"kernel": np.ones((2, 3)), "bias": np.ones((2,))}}
  with pytest.raises(ValueError, match="bias of 'dense' has shape"):
    tx.init(bad)
  with pytest.raises(ValueError, match="one NodePruningState"):
    masks_from_state(optax.adam(1e-3).init(params))


def test_build_optimizer_takes_the_transforms_from_config_entries():
  config = config_defaults().optimizer_config(
      name="adam", learning_rate=1e-2,
      gradient_transforms=(("mmjax.transforms.pruning.l1_penalty", {"alpha": 1e-4}),),
      weight_transforms=(("mmjax.transforms.pruning.node_pruning", {"k": 0.1, "at_steps": (0,)}),))
  state = jax.eval_shape(build_optimizer(config).init, _params())
  masks = jax.eval_shape(masks_from_state, state)
  assert masks["fusion"]["kernel"].shape == (8,) and masks["fusion"]["bias"] is None


def test_masks_in_the_state_are_sharded_like_the_kernel_output_axis():
  """steps.state_shardings matches optimizer-state leaves by the parameter path they end with."""
  params = _params()
  state = optax.chain(optax.adam(1e-3), node_pruning(0.1, [0])).init(params)
  rules = [(r"(?:.*/)?" + pattern, spec) for pattern, spec in
           ((r".*fusion/kernel", ("data", "model")), (r".*image/kernel", ("model", None)))]
  mesh = types.SimpleNamespace(shape={"data": 2, "model": 4})  # spec_for reads only .shape
  specs = {parallel.path_to_str(path): parallel.spec_for(parallel.path_to_str(path), leaf.shape,
                                                         rules, mesh)
           for path, leaf in jax.tree_util.tree_flatten_with_path(state[1].masks)[0]}
  assert parallel.spec_for("fusion/kernel", (24, 8), rules, mesh) == P("data", "model")
  assert parallel.spec_for("1/masks/fusion/kernel", (1, 8), rules, mesh) == P(None, "model")
  assert specs["fusion/kernel"] == P(None, "model")
  assert specs["image/kernel"] == P(None, None)  # the kernel's output axis is not split
  # An [out] vector would have taken the kernel's input-axis spec:
  assert parallel.spec_for("1/masks/fusion/kernel", (8,), rules, mesh) == P("data")


# ----------------------------------------------------------------------- apply_masks and compact

def test_apply_masks_on_conv_output_channels():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 3)), jnp.float32)
  conv = nn.Conv(6, (3, 3))
  kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 6)).astype(np.float32)
  kernel[..., 4] *= 1e-3
  params = {"kernel": kernel, "bias": np.arange(1.0, 7.0, dtype=np.float32)}
  np.testing.assert_allclose(node_importance(params)["kernel"],
                             np.abs(kernel).reshape(-1, 6).mean(axis=0), rtol=1e-6)
  masks = node_masks(params, 0.1)
  np.testing.assert_array_equal(masks["kernel"], np.arange(6) != 4)
  pruned = apply_masks(params, masks)
  assert np.all(np.asarray(pruned["kernel"])[..., 4] == 0.0) and pruned["bias"][4] == 0.0
  np.testing.assert_array_equal(np.delete(np.asarray(pruned["kernel"]), 4, -1),
                                np.delete(kernel, 4, -1))
  y = jax.jit(conv.apply)({"params": pruned}, x)
  assert np.all(np.asarray(y)[..., 4] == 0.0)


def test_compact_removes_nodes_and_keeps_the_outputs():
  params = _params(PLANTED)
  image, audio = _inputs(n=5, seed=3)
  masks = node_masks(params, 0.1, keep="head/kernel")
  zeroed = apply_masks(params, masks)
  outputs = _apply(zeroed, image, audio)
  small_params, widths = compact(params, masks, CONSUMERS)
  assert widths == {"image": 10, "audio": 11, "fusion": 7}
  small = FusionMlp(image=widths["image"], audio=widths["audio"], fusion=widths["fusion"])
  shapes = jax.eval_shape(small.init, jax.random.PRNGKey(0), image, audio)["params"]
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), small_params, shapes)
  # float32 sums over fewer terms in another order: rounding of a few ulps at |x| ~ 20.
  np.testing.assert_allclose(jax.jit(small.apply)({"params": small_params}, image, audio), outputs,
                             rtol=1e-6, atol=1e-6)
  # Removed: per image/audio node 16 kernel rows + 1 bias + 8 fusion rows; per fusion node
  # 24 - 3 kernel rows (after the branches' rows are gone) + 1 bias + 3 head rows.
  removed = 3 * (16 + 1 + 8) + (21 + 1 + 3)
  assert parameter_count(params) - parameter_count(small_params) == removed
  assert parameter_count(small_params) == (16 * 10 + 10) + (16 * 11 + 11) + (21 * 7 + 7) + 7 * 3 + 3


def test_compact_bad_inputs():
  params = _params(PLANTED)
  masks = node_masks(params, 0.1, keep="head/kernel")
  with pytest.raises(ValueError, match="'audio' loses nodes but consumers has no entry"):
    compact(params, masks, {"image": [("fusion", 0)], "fusion": [("head", 0)]})
  with pytest.raises(ValueError, match="consumer 'fuse' of 'image' has no kernel"):
    compact(params, masks, dict(CONSUMERS, image=[("fuse", 0)]))
  with pytest.raises(ValueError, match="overlap"):
    compact(params, masks, dict(CONSUMERS, audio=[("fusion", 6)]))
  with pytest.raises(ValueError, match="does not fit"):
    compact(params, masks, dict(CONSUMERS, audio=[("fusion", 13)]))
  with pytest.raises(ValueError, match="'head', which has no mask"):
    compact(params, masks, dict(CONSUMERS, head=[]))
  normed = dict(params, fusion=dict(params["fusion"], scale=np.ones(8)))
  with pytest.raises(ValueError, match="'fusion' has parameters other than kernel and bias"):
    compact(normed, masks, CONSUMERS)
