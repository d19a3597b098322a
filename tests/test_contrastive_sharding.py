"""The CLIP contrastive loss over a batch sharded on 8 fake CPU devices (data=8 and data=4 x
model=2 meshes) equals the one-device loss, gradients included, and really gathers the
embeddings across the data axis (shard_map path, not a silent local-batch fallback); the
trainer's jitted steps (mmjax.train.steps) provide the mesh it needs."""

import json
import os
import subprocess
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_sharded_contrastive_loss_matches_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, os.path.join(TESTS, "helpers", "contrastive_sharded.py")], env=env,
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["devices"] == 8
  single = summary["single_loss"]
  for mesh in ("data8", "data4xmodel2"):
    result = summary[mesh]
    assert abs(result["loss"] - single) <= 1e-5 * max(1.0, abs(single)), summary
    assert result["max_grad_rel_diff"] <= 1e-5, summary
    assert abs(result["manual_loss"] - single) <= 1e-5 * max(1.0, abs(single)), summary
    assert result["jaxpr_shard_map"] and result["jaxpr_all_gather"], summary
    assert "all-gather" in result["hlo_collectives"], summary
  sharded, single = summary["steps_sharded"], summary["steps_single"]
  assert sharded["jaxpr_shard_map"], summary
  np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-5)
  np.testing.assert_allclose(sharded["eval_loss_sum"], single["eval_loss_sum"], rtol=1e-5)
  for name, value in sharded["params"].items():
    np.testing.assert_allclose(value, single["params"][name], rtol=1e-5, atol=1e-6)
