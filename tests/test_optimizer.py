"""The optimizer chain and the reduce-on-plateau rule (PyTorch ReduceLROnPlateau semantics:
mode 'min', relative threshold, reduce when bad evaluations exceed `patience`)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from mmjax.train.optimizer import (PlateauState, build_optimizer, observe_plateau,
                                   scale_by_plateau)


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
