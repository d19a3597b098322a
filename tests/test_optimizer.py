"""The optimizer chain and the reduce-on-plateau rule (PyTorch ReduceLROnPlateau semantics:
mode 'min', relative threshold, reduce when bad evaluations exceed `patience`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import config_defaults, load_config

from mmjax.parallel import path_to_str
from mmjax.tasks import OptimizerTransforms
from mmjax.train.optimizer import (
  PlateauState,
  build_optimizer,
  freeze,
  observe_plateau,
  scale_by_plateau,
)


def _torch_rule(values, patience, factor, threshold):
  """Transcription of torch.optim.lr_scheduler.ReduceLROnPlateau.step (min, rel, no cooldown)."""
  lr, best, bad, out = 1.0, float("inf"), 0, []
  for v in values:
    if v < best * (1 - threshold):
      best, bad = v, 0
    else:
      bad += 1
    if bad > patience:
      lr, bad = lr * factor, 0
    out.append(lr)
  return out


def test_plateau_rule_matches_torch_semantics():
  values = [5.0, 4.0, 4.0, 3.9999, 4.1, 3.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 2.0]
  opt_state = (optax.adam(1e-3).init({"w": jnp.zeros(2)}), scale_by_plateau().init(None))
  scales = []
  for v in values:
    opt_state = observe_plateau(opt_state, v, patience=2, factor=0.1, threshold=1e-4)
    scales.append(float(opt_state[1].scale))
  expected = _torch_rule(values, patience=2, factor=0.1, threshold=1e-4)
  np.testing.assert_allclose(scales, expected, rtol=1e-6)
  assert expected[4] == pytest.approx(0.1) and expected[-1] == pytest.approx(0.001)


def test_scale_by_plateau_scales_updates():
  tx = scale_by_plateau()
  state = PlateauState(jnp.float32(0.25), jnp.float32(1.0), jnp.int32(0))
  updates, _ = tx.update({"w": jnp.array([4.0, -8.0])}, state)
  np.testing.assert_allclose(updates["w"], [1.0, -2.0])


def test_build_optimizer_is_adam_then_plateau():
  opt_config = load_config("ytb8m").optimizer
  tx = build_optimizer(opt_config)
  params = {"w": jnp.array([1.0, 2.0])}
  grads = {"w": jnp.array([0.5, -1.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  expected, _ = optax.adam(2e-4).update(grads, optax.adam(2e-4).init(params), params)
  np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
  opt_config.name = "rmsprop"
  with pytest.raises(ValueError, match="config.optimizer.name"):
    build_optimizer(opt_config)


class _PromptedText(nn.Module):
  """A 'backbone' with learnable prompts, like deep prompt learning on a frozen CLIP."""

  @nn.compact
  def __call__(self, x):
    prompts = self.param("prompts", nn.initializers.normal(0.02), (2, x.shape[-1]))
    h = nn.Dense(4, name="encoder")(x + prompts.sum(0))
    return nn.LayerNorm(name="final_layer_norm")(h)


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1, name="head")(_PromptedText(name="text_model")(x))


def _opt_config(name, trainable, grad_clip_norm=0.0):
  return ml_collections.ConfigDict(dict(
      name=name, learning_rate=1e-2, reduce_on_plateau=True, plateau_patience=2,
      plateau_factor=0.1, plateau_threshold=1e-4, grad_clip_norm=grad_clip_norm,
      trainable=trainable))


def _bits(x):
  x = np.asarray(x)
  return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


@pytest.mark.parametrize("name,clip", [("adam", 0.0), ("adamw", 1.0)])
def test_freeze_keeps_frozen_params_bit_identical(name, clip):
  model = _Tiny()
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  y = jnp.arange(8.0)[:, None]
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  # -0.0 entries: p + 0.0 would turn them into +0.0; the frozen update must keep the bits.
  params["text_model"]["encoder"]["bias"] = jnp.array([-0.0, 0.0, -0.0, 1.5], jnp.float32)
  params["head"]["bias"] = jnp.array([-0.0], jnp.float32)
  tx = build_optimizer(_opt_config(name, r".*prompts.*", clip))
  opt_state = tx.init(params)

  @jax.jit
  def update(params, opt_state):
    grads = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(params)
    return tx.update(grads, opt_state, params)

  # A separate jit: in one program XLA folds `p + constant 0` away and would hide +0.0 updates.
  apply_updates = jax.jit(optax.apply_updates)
  trained = params
  for _ in range(3):
    updates, opt_state = update(trained, opt_state)
    trained = apply_updates(trained, updates)
  before = {path_to_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  after = {path_to_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(trained)[0]}
  assert set(before) == set(after) and "text_model/prompts" in before
  for path, value in before.items():
    if path == "text_model/prompts":
      assert not np.array_equal(after[path], value), path
    else:
      assert np.array_equal(_bits(after[path]), _bits(value)), path
  # Moments (Adam mu / nu) exist only for the trainable leaf; frozen ones hold no state.
  state_paths = [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]]
  moment_paths = [p for p in state_paths if "/mu/" in p or "/nu/" in p]
  assert len(moment_paths) == 2 and all(p.endswith("text_model/prompts") for p in moment_paths), (
      state_paths)
  assert not any("encoder" in p or "head" in p for p in state_paths), state_paths
  # The plateau rule still finds its state inside the partitioned optimizer state.
  observed = observe_plateau(opt_state, 1.0, patience=0, factor=0.5)
  scales = [x.scale for x in jax.tree.leaves(observed, is_leaf=lambda s: isinstance(
      s, PlateauState)) if isinstance(x, PlateauState)]
  assert len(scales) == 1


def test_freeze_matches_inner_on_trainable_leaves():
  params = {"a": jnp.array([1.0, 2.0]), "b": {"prompts": jnp.array([3.0, -4.0])}}
  grads = {"a": jnp.array([0.5, 0.5]), "b": {"prompts": jnp.array([0.25, -1.0])}}
  tx = freeze(optax.adamw(0.1, weight_decay=0.5), r"b/prompts")
  updates, _ = tx.update(grads, tx.init(params), params)
  inner = optax.adamw(0.1, weight_decay=0.5)
  expected, _ = inner.update(grads["b"], inner.init(params["b"]), params["b"])
  np.testing.assert_allclose(updates["b"]["prompts"], expected["prompts"], rtol=1e-6)
  assert _bits(updates["a"]).tolist() == [0x80000000] * 2  # -0.0: the exact identity of +


def test_freeze_regex_matching_nothing_is_a_config_error():
  params = {"encoder": {"kernel": jnp.ones((2, 2))}}
  tx = build_optimizer(_opt_config("adam", r"prompts"))  # fullmatch: 'encoder/kernel' no
  with pytest.raises(ValueError, match=r"config\.optimizer\.trainable"):
    tx.init(params)
  with pytest.raises(ValueError, match=r"config\.optimizer\.trainable"):
    build_optimizer(_opt_config("adam", r"(unclosed"))
  # Empty (or absent) regex: no freezing, the plain chain.
  tx = build_optimizer(_opt_config("adam", ""))
  assert not isinstance(tx.init(params), optax.PartitionState)


def _chain_config(**values):
  config = config_defaults().optimizer_config(name="adam", learning_rate=0.1)
  for key, value in values.items():
    config[key] = value
  return config


def test_transforms_sit_around_the_optimizer_in_the_documented_order():
  """config gradient -> task gradient -> optimizer -> plateau -> config weight -> task weight."""
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, -1.0, 2.0])}
  plain, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)

  def updates(opt_config, task_transforms=None):
    tx = build_optimizer(opt_config, task_transforms or OptimizerTransforms())
    return tx.update(grads, tx.init(params), params)[0]["w"]

  # Gradient side: Adam is invariant to scaling the gradients (up to eps); weight side is not.
  scaled = (("scale", {"step_size": 4.0}),)
  np.testing.assert_allclose(updates(_chain_config(gradient_transforms=scaled)), plain["w"],
                             rtol=1e-5)
  np.testing.assert_allclose(updates(_chain_config(weight_transforms=scaled)), 4 * plain["w"],
                             rtol=1e-6)
  np.testing.assert_allclose(
      updates(_chain_config(), OptimizerTransforms(weight=(optax.scale(4.0),))), 4 * plain["w"],
      rtol=1e-6)
  # Weight side, config before task: 0.5 * (u + 1.0 * p), not 0.5 * u + p.
  got = updates(_chain_config(weight_transforms=(("add_decayed_weights",
                                                  {"weight_decay": 1.0}),)),
                OptimizerTransforms(weight=(optax.scale(0.5),)))
  np.testing.assert_allclose(got, 0.5 * (plain["w"] + params["w"]), rtol=1e-6)
  # Gradient side, config before task: clip to norm 1 after scaling by 10 = clip alone.
  clip_first = updates(_chain_config(gradient_transforms=(("clip_by_global_norm",
                                                           {"max_norm": 1e-3}),)),
                       OptimizerTransforms(gradient=(optax.scale(10.0),)))
  np.testing.assert_allclose(clip_first, plain["w"], rtol=1e-3)


@pytest.mark.parametrize("spec,message", [
    (("no_such_transform", {}), r"gradient_transforms\[0\]: optax has no 'no_such_transform'"),
    (("scale",), r"gradient_transforms\[0\]: expected \(name, kwargs\) pairs"),
    (("numpy.zeros", {"shape": 2}), r"returned ndarray, not an optax GradientTransformation"),
    (("nowhere.mod.fn", {}), r"cannot import 'nowhere.mod.fn'"),
])
def test_a_bad_transform_entry_names_its_config_key(spec, message):
  with pytest.raises(ValueError, match=message):
    build_optimizer(_chain_config(gradient_transforms=(spec,)))


def test_frozen_subtrees_get_no_updates_and_no_state():
  params = {"tower": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
  tx = build_optimizer(_chain_config(), frozen_subtrees=("tower",))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert _bits(updates["tower"]["w"]).tolist() == _bits(jnp.full(2, -0.0)).tolist()
  assert np.all(np.asarray(updates["head"]["w"]) != 0)
  with pytest.raises(ValueError, match="leaves no parameter to train"):
    tx = build_optimizer(_chain_config(), frozen_subtrees=("tower", "head"))
    tx.init(params)
