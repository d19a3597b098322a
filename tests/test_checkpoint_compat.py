"""Checkpoints stay readable: a checkpoint written by release 0.1.0 (tests/data/ytb8m_tiny_v0.1.0,
before the project-folder move and the single transformer block) restores and evaluates to the
metrics that release logged, and the layout upgrade it needs is the same function as the old
layer (checked against flax's MultiHeadDotProductAttention, which the 0.1.0 block used)."""

import json
import logging
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import ROOT, load_config

from mmjax.nn import EncoderBlock
from mmjax.train import evaluate_checkpoint, train_and_evaluate
from mmjax.train.checkpoint import flat_paths
from mmjax.train.checkpoint_upgrades import upgrade
from mmjax.train.trainer import restore_for_eval

LEGACY = os.path.join(ROOT, "tests", "data", "ytb8m_tiny_v0.1.0")


def _legacy_run(tmp_path):
  """(config, workdir): a copy of the 0.1.0 checkpoint and ytb8m:tiny on its eval shards."""
  workdir = tmp_path / "run"
  shutil.copytree(os.path.join(LEGACY, "checkpoints"), workdir / "checkpoints")
  config = load_config("ytb8m", "tiny")
  shards = os.path.join(LEGACY, "data", "validate-*")
  config.data.train_pattern = config.data.eval_pattern = shards
  config.data.taxonomy_file = os.path.join(LEGACY, "data", "taxonomy.csv")
  return config, str(workdir)


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def test_a_0_1_0_checkpoint_resumes_training(tmp_path):
  config, workdir = _legacy_run(tmp_path)
  config.total_steps, config.eval_every_steps = 12, 0
  handler = _Lines()
  logging.getLogger("mmjax").addHandler(handler)
  try:
    metrics = train_and_evaluate(config, workdir)
  finally:
    logging.getLogger("mmjax").removeHandler(handler)
  text = "\n".join(handler.lines)
  assert "upgraded from the 0.1.0 Transformer block layout" in text
  assert "at step 8" in text and np.isfinite(metrics["eval/loss"])
  assert restore_for_eval(config, workdir)[4] == 12


def test_a_0_1_0_checkpoint_restores_and_evaluates_to_its_logged_metrics(tmp_path):
  config, workdir = _legacy_run(tmp_path)
  metrics = evaluate_checkpoint(config, workdir, "latest")
  expected = json.loads(open(os.path.join(LEGACY, "expected_eval.jsonl")).readline())
  assert expected["step"] == 8
  for key in ("loss", "gap", "map", "perr", "hit_at_1", "level_0/gap", "level_3/map"):
    assert metrics[f"eval/{key}"] == pytest.approx(expected[key], abs=1e-5), key
  assert metrics["eval/num_examples"] == expected["num_examples"] == 24


class _V010Block(nn.Module):
  """The 0.1.0 encoder block, as it was: flax MHA + ln1/ln2/mlp_in/mlp_out, tanh GELU."""
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x, mask):
    attn_mask = nn.make_attention_mask(mask > 0, mask > 0)
    h = nn.LayerNorm(name="ln1")(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attention")(
        h, h, mask=attn_mask, deterministic=True)
    h = nn.Dense(self.mlp_dim, name="mlp_in")(nn.LayerNorm(name="ln2")(x))
    return x + nn.Dense(x.shape[-1], name="mlp_out")(nn.gelu(h))


def test_the_layout_upgrade_preserves_the_function():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 12)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  old = _V010Block(num_heads=3, mlp_dim=20)
  old_params = old.init(jax.random.PRNGKey(1), x, mask)["params"]
  old_params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(p.dtype),
                            old_params)  # non-trivial LayerNorm scales and biases too
  flat, applied = upgrade({f"block_0/{k}": np.asarray(v)
                           for k, v in flat_paths(old_params).items()})
  assert applied == ["the 0.1.0 Transformer block layout"]
  new = EncoderBlock(num_heads=3, mlp_dim=20, hidden_act="gelu_new", layer_norm_eps=1e-6)
  template = flat_paths(new.init(jax.random.PRNGKey(2), x, None)["params"])
  assert sorted(f"block_0/{k}" for k in template) == sorted(flat)
  nested = {}
  for path, value in flat.items():
    node = nested
    *parents, leaf = path.split("/")[1:]
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  attention_mask = nn.make_attention_mask(mask > 0, mask > 0, dtype=bool)
  got = new.apply({"params": nested}, x, attention_mask)
  want = old.apply({"params": old_params}, x, mask)
  valid = mask > 0  # padded query rows are never read (masked pooling)
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=2e-5)
