"""Compile (never run) the sharded train steps of tiny configs on a 4 x 2 mesh ('data' 4 x
'model' 2) of 8 fake CPU devices, and two small functions with known collectives; print their
collectives (mmjax.collectives) as one JSON line. Invoked by tests/test_collectives.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (must be set before jax starts) as:
  collectives_steps.py TESTS_DIR NAME[,NAME...]
where a NAME is a key of STEPS or 'functions' (the two small functions)."""

import json
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, sys.argv[1])  # the tests directory
from conftest import load_config  # pylint: disable=wrong-import-position

from mmjax import collectives, parallel  # pylint: disable=wrong-import-position

MESH = (("data", 4), ("model", 2))
# LLVM at -O0: code generation takes most of a CPU compile; the HLO passes that place the
# collectives run as in a default compile (the three steps' tables were checked identical).
FAST_CODEGEN = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# name -> (config, variants, sharding rules dropped from config.sharding_rules)
STEPS = {
    "ytb8m_transformer_late": ("ytb8m", "tiny,transformer_late", ()),
    "ytb8m_netvlad_late": ("ytb8m", "tiny,netvlad_late", ()),
    "clip_contrastive": ("clip_pretrain", "tiny", ()),
    # What the pins guard against: NetVLAD's hidden kernels left replicated.
    "ytb8m_netvlad_late_replicated_hidden": ("ytb8m", "tiny,netvlad_late",
                                             (r".*netvlad_hidden/kernel",)),
}


def explicit_collectives(mesh):
  """One of each explicit collective in a shard_map; inputs f32 / s32 [8, 6] split ('data',
  'model'), so each device holds [2, 3]: psum, all_gather and psum_scatter over 'data',
  ppermute over 'model', all_to_all over 'data'."""
  def body(x, i):
    gathered = jax.lax.all_gather(x, "data", tiled=True)  # [8, 3]
    return (jax.lax.psum(x, "data"), gathered,
            jax.lax.psum_scatter(gathered, "data", scatter_dimension=0, tiled=True),
            jax.lax.ppermute(i, "model", perm=[(0, 1), (1, 0)]),
            jax.lax.all_to_all(gathered, "data", 0, 0, tiled=True))

  split = P("data", "model")
  fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(split, split), check_vma=False,
                             out_specs=(P(None, "model"), P(None, "model"), split, split,
                                        split)))
  return fn.lower(jax.ShapeDtypeStruct((8, 6), jnp.float32),
                  jax.ShapeDtypeStruct((8, 6), jnp.int32)).compile()


def resharding(mesh):
  """jit from f32 [8, 6] split ('data', 'model') to replicated: the partitioner gathers it."""
  fn = jax.jit(lambda x: x + 1, in_shardings=NamedSharding(mesh, P("data", "model")),
               out_shardings=NamedSharding(mesh, P()))
  return fn.lower(jax.ShapeDtypeStruct((8, 6), jnp.float32)).compile()


def main():
  names = sys.argv[2].split(",")
  mesh = parallel.make_mesh(MESH)
  summary = {"devices": jax.device_count(), "steps": {}}
  if "functions" in names:
    summary["explicit"] = collectives.collective_ops(explicit_collectives(mesh).as_text())
    summary["resharding"] = collectives.collective_ops(resharding(mesh).as_text())
  for name in names:
    if name == "functions":
      continue
    config_name, variants, dropped = STEPS[name]
    config = load_config(config_name, variants)
    config.sharding_rules = tuple(rule for rule in config.sharding_rules
                                  if rule[0] not in dropped)
    compiled, info = collectives.compile_train_step(config, MESH,
                                                    compiler_options=FAST_CODEGEN)
    ops = collectives.collective_ops(compiled.as_text())
    summary["steps"][name] = {"collectives": collectives.summarize(ops), "ops": ops,
                              "params": info["params"], "compile_s": info["compile_s"]}
    print(f"{name}: compiled in {info['compile_s']:.1f} s", file=sys.stderr, flush=True)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
