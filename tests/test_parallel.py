"""Mesh construction and rule-based partition specs (single device; see test_sharding.py for 8)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import parallel


class _FakeMesh:
  shape = {"data": 4, "model": 2}


RULES = ((r".*netvlad_hidden/kernel", ("data", "model")), (r".*classifier/kernel", (None, "model")))


@pytest.mark.parametrize("name,shape,expected", [
    ("params/rgb_tower/netvlad_hidden/kernel", (8192, 32), P("data", "model")),
    ("params/rgb_tower/netvlad_hidden/kernel", (8190, 32), P(None, "model")),  # 8190 % 4 != 0
    ("params/classifier/kernel", (32, 3862), P(None, "model")),
    ("params/classifier/kernel", (32, 3861), P(None, None)),
    ("params/classifier/bias", (3862,), P()),
    ("params/fusion/kernel", (64, 32), P()),
])
def test_spec_for_rules_and_divisibility(name, shape, expected):
  assert parallel.spec_for(name, shape, RULES, _FakeMesh()) == expected


def test_make_mesh_sizes_and_errors():
  mesh = parallel.make_mesh([("data", -1), ("model", 1)])
  assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
  with pytest.raises(ValueError, match="config.mesh"):
    parallel.make_mesh([("data", -1), ("model", -1)])
  with pytest.raises(ValueError, match="config.mesh"):
    parallel.make_mesh([("data", jax.device_count() + 1), ("model", 1)])


def test_global_batch_roundtrip():
  mesh = parallel.make_mesh([("data", -1), ("model", 1)])
  local = {"x": np.arange(12, dtype=np.float32).reshape(4, 3)}
  out = parallel.global_batch(local, mesh)
  np.testing.assert_array_equal(np.asarray(out["x"]), local["x"])
