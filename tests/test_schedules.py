"""Learning-rate schedules of config.optimizer (mmjax.train.optimizer): values against a numpy
transcription, the rate an SGD update really uses, the unchanged state layout of the default
constant rate, the logged rate, and bad keys named in the error."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import config_defaults

from mmjax.train.optimizer import (
  PlateauState,
  build_optimizer,
  learning_rate_at,
  learning_rate_schedule,
  observe_plateau,
)

LR = 0.5


def _opt_config(**values):
  return config_defaults().optimizer_config(learning_rate=LR, **values)


def _numpy_rate(step, schedule, warmup, decay, factor):
  """Transcription of the documented schedule: linear warmup 0 -> LR over `warmup` updates,
  then `decay` updates from LR to factor * LR (cosine or linear), then constant."""
  if step < warmup:
    return LR * step / warmup
  t = min(step - warmup, decay) / decay if decay else 0.0
  if schedule == "cosine":
    return LR * (factor + (1 - factor) * 0.5 * (1 + math.cos(math.pi * t)))
  if schedule == "linear":
    return LR * (1 + (factor - 1) * t)
  return LR


@pytest.mark.parametrize("schedule,warmup,decay,factor", [
    ("cosine", 10, 40, 0.1), ("cosine", 0, 25, 0.0), ("linear", 5, 20, 0.25),
    ("linear", 0, 30, 0.0), ("constant", 8, 0, 0.0), ("constant", 0, 0, 0.0)])
def test_schedule_values_match_the_transcription(schedule, warmup, decay, factor):
  fn = learning_rate_schedule(_opt_config(schedule=schedule, warmup_steps=warmup,
                                          decay_steps=decay, end_learning_rate_factor=factor))
  steps = np.arange(0, warmup + decay + 10)
  got = np.asarray(jax.vmap(fn)(jnp.asarray(steps)))
  expected = [_numpy_rate(int(s), schedule, warmup, decay, factor) for s in steps]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert float(fn(warmup)) == pytest.approx(LR)  # the peak right after the warmup
  if schedule != "constant":
    assert float(fn(warmup + decay + 100)) == pytest.approx(factor * LR, abs=1e-7)


def test_an_sgd_update_is_minus_the_scheduled_rate_times_the_gradient():
  warmup, decay, factor = 4, 10, 0.1
  opt_config = _opt_config(name="sgd", schedule="cosine", warmup_steps=warmup, decay_steps=decay,
                           end_learning_rate_factor=factor)
  tx = build_optimizer(opt_config)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 1.0, -4.0])}
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen = {}
  for step in range(warmup + decay + 3):
    updates, state = update(grads, state, params)
    seen[step] = np.asarray(updates["w"])
  for step in (0, 1, warmup, warmup + decay // 2, warmup + decay, warmup + decay + 2):
    rate = _numpy_rate(step, "cosine", warmup, decay, factor)
    np.testing.assert_allclose(seen[step], -rate * np.asarray(grads["w"]), rtol=1e-5, atol=1e-8)
  assert not seen[0].any()  # warmup starts at rate 0


@pytest.mark.parametrize("name,reference", [("adam", optax.adam), ("adamw", optax.adamw),
                                            ("sgd", optax.sgd)])
def test_the_default_constant_rate_keeps_the_earlier_state_layout(name, reference):
  params = {"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
  opt_config = config_defaults().optimizer_config(name=name)
  assert opt_config.schedule == "constant" and opt_config.warmup_steps == 0
  ours = build_optimizer(opt_config).init(params)
  before = optax.chain(reference(1e-3)).init(params)
  assert jax.tree.structure(ours) == jax.tree.structure(before)
  assert not any(isinstance(x, optax.ScaleByScheduleState)
                 for x in jax.tree.leaves(ours, is_leaf=lambda x: isinstance(
                     x, optax.ScaleByScheduleState)))
  # A warmup (or any decaying schedule) adds the schedule's update count to the state.
  warm = build_optimizer(config_defaults().optimizer_config(name=name, warmup_steps=3))
  assert jax.tree.structure(warm.init(params)) != jax.tree.structure(before)


def test_the_logged_rate_is_that_of_the_last_update_times_the_plateau_scale():
  opt_config = _opt_config(name="sgd", schedule="linear", warmup_steps=2, decay_steps=8,
                           end_learning_rate_factor=0.0, reduce_on_plateau=True,
                           trainable="w")  # inside freeze(): the count is found there too
  tx = build_optimizer(opt_config)
  params = {"w": jnp.ones(2), "frozen": jnp.ones(1)}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for _ in range(5):  # updates 0..4 applied: the last one used schedule(4)
    updates, state = tx.update(grads, state, params)
  rate = _numpy_rate(4, "linear", 2, 8, 0.0)
  np.testing.assert_allclose(updates["w"], -rate * np.ones(2), rtol=1e-6)
  assert learning_rate_at(opt_config, state) == pytest.approx(rate)
  for _ in range(4):  # a best, then > patience (2) evaluations without improvement: x 0.1
    state = observe_plateau(state, 1.0, patience=2, factor=0.1)
  scales = [x.scale for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, PlateauState))
            if isinstance(x, PlateauState)]
  assert [float(s) for s in scales] == [pytest.approx(0.1)]
  assert learning_rate_at(opt_config, state) == pytest.approx(0.1 * rate)
  # The default constant rate needs no count in the state.
  constant = config_defaults().optimizer_config(learning_rate=3e-4)
  assert learning_rate_at(constant, build_optimizer(constant).init(params)) == 3e-4


@pytest.mark.parametrize("values,message", [
    (dict(schedule="exponential"), r"config.optimizer.schedule='exponential'; expected one of "
                                   r"\['constant', 'cosine', 'linear'\]"),
    (dict(warmup_steps=-1), r"config.optimizer.warmup_steps=-1: must be an integer >= 0"),
    (dict(schedule="cosine"), r"config.optimizer.decay_steps=0: schedule 'cosine' needs an "
                              r"integer > 0"),
    (dict(schedule="linear", decay_steps=-5), r"config.optimizer.decay_steps=-5: schedule "
                                              r"'linear' needs"),
    (dict(decay_steps=100), r"config.optimizer.decay_steps=100 with config.optimizer.schedule="
                            r"'constant'"),
    (dict(schedule="cosine", decay_steps=10, end_learning_rate_factor=1.5),
     r"config.optimizer.end_learning_rate_factor=1.5: must be in \[0, 1\]"),
    (dict(schedule="linear", decay_steps=10, end_learning_rate_factor=-0.1),
     r"config.optimizer.end_learning_rate_factor=-0.1: must be in \[0, 1\]"),
])
def test_a_bad_schedule_key_is_named(values, message):
  opt_config = _opt_config(**values)
  with pytest.raises(ValueError, match=message):
    learning_rate_schedule(opt_config)
  with pytest.raises(ValueError, match=message):
    build_optimizer(opt_config)


def test_an_older_config_without_the_schedule_keys_is_constant():
  opt_config = config_defaults().optimizer_config(learning_rate=2e-3)
  with opt_config.unlocked():
    for key in ("schedule", "warmup_steps", "decay_steps", "end_learning_rate_factor"):
      del opt_config[key]
  assert float(learning_rate_schedule(opt_config)(1000)) == pytest.approx(2e-3)
  params = {"w": jnp.zeros(2)}
  assert (jax.tree.structure(build_optimizer(opt_config).init(params))
          == jax.tree.structure(optax.chain(optax.adam(2e-3)).init(params)))


def test_a_snapshot_without_the_schedule_keys_matches_their_defaults():
  from mmjax.train import snapshot  # pylint: disable=import-outside-toplevel
  new = {"optimizer": {"name": "adam", "schedule": "constant", "warmup_steps": 0,
                       "decay_steps": 0, "end_learning_rate_factor": 0.0}}
  old = {"optimizer": {"name": "adam"}}
  assert not snapshot.differences(old, new)
  new["optimizer"]["schedule"] = "cosine"
  assert snapshot.differences(old, new) == [("optimizer.schedule", "constant", "cosine")]
