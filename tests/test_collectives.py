"""The collectives of the sharded train steps, pinned (mmjax.collectives).

The parser is checked on hand-written HLO and on small compiled functions with known
collectives. Then the train steps of the tiny YouTube-8M Transformer and NetVLAD (late fusion)
and of the tiny CLIP contrastive model, compiled (not run) on a 4 x 2 mesh ('data' 4 x 'model'
2) of 8 fake CPU devices in one subprocess (tests/helpers/collectives_steps.py), must show:

* exactly the pinned kinds and counts of collectives (after a jax upgrade, or a deliberate
  change of a model or a rule, read the new table in the failure message and re-pin);
* no array in any collective bigger than a ceiling derived from a parameter's shape (a large
  tensor replicated or resharded crosses devices whole);
* each FSDP-sharded kernel all-gathered over 'data' to its full size along that axis, the
  'model' split kept (FSDP is in effect);
* for the YouTube-8M steps, all-reduces over 'data' of at most one copy of the gradients at
  the size one device holds after the FSDP gathers (data-parallel gradient sync, nothing
  more; CLIP's also carry activations, see the README's "Communication" paragraph).

A step compiled with NetVLAD's hidden-kernel rule dropped fails these checks, naming them.
"""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import pytest

from mmjax import collectives
from mmjax.projects.youtube8m import collectives_benchmark

TESTS = os.path.dirname(os.path.abspath(__file__))
DATA, MODEL = 4, 2  # the mesh's axis sizes

HLO = """HloModule example, num_partitions=8

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%wrapped_reduce_scatter (p: bf16[16,8]) -> bf16[4,8] {
  %p = bf16[16,8]{1,0} parameter(0)
  ROOT %rs = bf16[4,8]{1,0} reduce-scatter(%p), channel_id=4, replica_groups=[2,4]<=[8], \
dimensions={0}, to_apply=%add
}

ENTRY %main (x: f32[4,8], y: bf16[16,8], m: pred[8], k: s32[2,3], u: u8[128]) -> f32[4,8] {
  %x = f32[4,8]{1,0} parameter(0), sharding={devices=[4,1,2]<=[8] last_tile_dim_replicate}
  %y = bf16[16,8]{1,0} parameter(1)
  %m = pred[8]{0} parameter(2)
  %k = s32[2,3]{1,0} parameter(3)
  %u = u8[128]{0} parameter(4)
  %all-reduce = (f32[4,8]{1,0}, /*index=1*/pred[8]{0}, s32[2,3]{1,0}) all-reduce(%x, %m, %k), \
channel_id=1, replica_groups={{0,2,4,6},{1,3,5,7}}, use_global_device_ids=true, to_apply=%add
  %ars = f32[4,8]{1,0} all-reduce-start(%x), channel_id=2, \
replica_groups={{0,1},{2,3},{4,5},{6,7}}, to_apply=%add
  %ard = f32[4,8]{1,0} all-reduce-done(%ars)
  %ags = (f32[4,8]{1,0}, f32[16,8]{1,0}) all-gather-start(%x), channel_id=3, \
replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, dimensions={0}
  %agd = f32[16,8]{1,0} all-gather-done(%ags)
  %rss = ((bf16[16,8]{1,0}), bf16[4,8]{1,0}) async-start(%y), calls=%wrapped_reduce_scatter
  %rsd = bf16[4,8]{1,0} async-done(%rss), calls=%wrapped_reduce_scatter
  %a2a = (u8[32]{0}, u8[32]{0}, u8[32]{0}, u8[32]{0}) all-to-all(%u, %u, %u, %u), \
channel_id=5, replica_groups=[2,4]<=[4,2]T(1,0)
  %cps = (s32[2,3]{1,0}, s32[2,3]{1,0}, u32[], u32[]) collective-permute-start(%k), \
channel_id=6, source_target_pairs={{0,1},{1,0}}
  %cpd = s32[2,3]{1,0} collective-permute-done(%cps)
  ROOT %out = f32[4,8]{1,0} add(%ard, %x), metadata={op_name="jit(f)/all-gather(fake)"}
}
"""


def test_parser_on_hand_written_hlo():
  entries = {e.pop("kind"): e for e in collectives.summarize(collectives.collective_ops(HLO))}
  assert entries == {
      # a tuple all-reduce (f32 128 B + pred 8 B + s32 24 B) and an async pair (128 B)
      "all-reduce": {"count": 2, "bytes": 288, "largest_shape": "f32[4,8]",
                     "largest_bytes": 128, "group_sizes": [2, 4]},
      "all-gather": {"count": 1, "bytes": 512, "largest_shape": "f32[16,8]",
                     "largest_bytes": 512, "group_sizes": [4]},
      # inside the computation an async-start / async-done pair calls
      "reduce-scatter": {"count": 1, "bytes": 64, "largest_shape": "bf16[4,8]",
                         "largest_bytes": 64, "group_sizes": [4]},
      "all-to-all": {"count": 1, "bytes": 128, "largest_shape": "u8[32]", "largest_bytes": 32,
                     "group_sizes": [4]},
      "collective-permute": {"count": 1, "bytes": 24, "largest_shape": "s32[2,3]",
                             "largest_bytes": 24, "group_sizes": [None]},
  }
  table = collectives.collectives_table(collectives.summarize(collectives.collective_ops(HLO)))
  assert table.splitlines()[1].split() == ["all-reduce", "2", "288", "B", "f32[4,8]", "(128",
                                           "B)", "2,", "4"]
  assert collectives.collectives_table([]).splitlines()[1].split()[:2] == ["-", "0"]


def test_element_sizes():
  assert [collectives.element_bits(t) for t in ("f32", "bf16", "s32", "u8", "pred", "f64", "s4",
                                                "f8e4m3fn", "c128", "token")] == [
      32, 16, 32, 8, 8, 64, 4, 8, 128, 0]
  assert collectives.shape_arrays("(s4[3]{0}, f32[<=5,2]{1,0})") == [("s4[3]", 2),
                                                                      ("f32[<=5,2]", 40)]
  with pytest.raises(ValueError, match="unknown HLO element type 'q7'"):
    collectives.element_bits("q7")
  assert collectives.format_bytes(1000 * 1024) == "0.977 MiB"


# What tests/helpers/collectives_steps.py compiles, in two processes side by side (2 cores).
HELPER_RUNS = ("clip_contrastive,ytb8m_netvlad_late_replicated_hidden",
               "functions,ytb8m_transformer_late,ytb8m_netvlad_late")


def test_suite_report_and_records():
  # A results dict as run_suite makes it, with the hand-written HLO's collectives as the step's.
  step = {"frames": 300, "num_params": 10, "param_bytes": 40, "param_bytes_per_device": 20,
          "batch_size": 128, "num_devices": 8, "compile_s": 1.5, "peak_rss_mb": 100.0,
          **{e.pop("kind"): e
             for e in collectives.summarize(collectives.collective_ops(HLO))}}
  results = {"hardware": "test", "load_average_start": [0.5, 0, 0], "load_average_end": [1, 0, 0],
             "settings": {"mesh": [["data", 4], ["model", 2]]}, "steps": {"ytb8m_nv": step},
             "memory": {"process_peak_rss_mb": 100.0, "peak_rss_mb": 100.0}}
  text = collectives_benchmark.report(results)
  assert "(data 4 x model 2 mesh)" in text.splitlines()[0]
  assert any(line.split()[:5] == ["collective-permute", "1", "ops,", "24", "B/device;"]
             for line in text.splitlines()), text
  records = {r["name"]: (r["unit"], r["value"])
             for r in collectives_benchmark.records(results, "collectives", timestamp="now")}
  prefix = "collectives/train_step/ytb8m_nv/"
  assert records[prefix + "all-reduce/bytes"] == ("bytes", 288)
  assert records[prefix + "all-gather/count"] == ("collectives", 1)
  assert records[prefix + "reduce-scatter/largest_bytes"] == ("bytes", 64)
  assert records[prefix + "param_bytes_per_device"] == ("bytes", 20)
  assert records[prefix + "compile_sec"] == ("s", 1.5)


@pytest.fixture(scope="module")
def compiled():
  """tests/helpers/collectives_steps.py's JSON summaries (8 fake CPU devices), merged."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  runs = []
  for names in HELPER_RUNS:  # output to files: a full pipe would stall the other process
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    command = [sys.executable, os.path.join(TESTS, "helpers", "collectives_steps.py"), TESTS,
               names]
    runs.append((subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True), out,
                 err))
  merged = {"steps": {}}
  for run, out, err in runs:
    with out, err:
      returncode = run.wait(timeout=600)
      out.seek(0)
      err.seek(0)
      stdout, stderr = out.read(), err.read()
    assert returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary.pop("devices") == 8
    merged["steps"].update(summary.pop("steps"))
    merged.update(summary)
  return merged


def _as_tuples(ops):
  return [(op["kind"], [tuple(array) for array in op["arrays"]], op["group_size"])
          for op in ops]


def test_compiled_functions_with_known_collectives(compiled):
  # Each device holds [2, 3] of the [8, 6] inputs; 'data' groups have 4 devices.
  assert sorted(_as_tuples(compiled["explicit"])) == sorted([
      ("all-reduce", [("f32[2,3]", 24)], 4),
      ("all-gather", [("f32[8,3]", 96)], 4),
      ("reduce-scatter", [("f32[2,3]", 24)], 4),
      ("collective-permute", [("s32[2,3]", 24)], None),
      ("all-to-all", [("f32[2,3]", 24)] * 4, 4)])
  # Replicating a ('data', 'model')-split array: only all-gathers, the last giving it whole.
  ops = compiled["resharding"]
  assert {op["kind"] for op in ops} == {"all-gather"}
  assert ops[-1]["arrays"] == [["f32[8,6]", 192]]


@dataclasses.dataclass(frozen=True)
class Expected:
  """What a step's collectives must be.

  counts: collective kind -> instructions (exact).
  ceiling: (parameter, divisor): no array in any collective holds more than that parameter's
    bytes / divisor.
  fsdp: parameter -> its partition spec: each is all-gathered over 'data' to its full size
    along the 'data'-split dimension, the 'model' split kept.
  gradient_sync: the all-reduces over 'data' carry at most the parameters' bytes with their
    'data' split undone and their 'model' split kept (one copy of the gradients).
  """
  counts: dict
  ceiling: tuple
  fsdp: dict = dataclasses.field(default_factory=dict)
  gradient_sync: bool = False


_CLIP_FSDP = {f"{tower}/encoder/layers_{i}/{name}/kernel": spec
              for tower in ("vision_model", "text_model") for i in (0, 1)
              for name, spec in (("self_attn/q_proj", ("data", "model")),
                                 ("self_attn/out_proj", ("model", "data")),
                                 ("mlp/fc1", ("data", "model")),
                                 ("mlp/fc2", ("model", "data")))}
EXPECTED = {
    # Everything replicated but the classifier (its classes over 'model'): the largest array
    # is the gradient of the largest (replicated) weight, all-reduced over 'data'.
    "ytb8m_transformer_late": Expected(
        counts={"all-reduce": 5, "all-gather": 3},
        ceiling=("rgb_tower/input_projection/kernel", 1), gradient_sync=True),
    # The hidden kernels (data x model): gathered over 'data' to [rows, columns / 2]; their
    # gradients all-reduced at that size (no reduce-scatter on CPU); nothing bigger.
    "ytb8m_netvlad_late": Expected(
        counts={"all-reduce": 18, "all-gather": 64, "all-to-all": 19, "collective-permute": 2},
        ceiling=("rgb_tower/netvlad_hidden/kernel", MODEL),
        fsdp={f"{tower}_tower/netvlad_hidden/kernel": ("data", "model")
              for tower in ("rgb", "audio")}, gradient_sync=True),
    # The token embedding (vocabulary over 'data') is never gathered: the lookup is sharded;
    # its gradient shard is all-reduced over 'model', the largest array of the step. (136
    # all-gathers before mmjax.nn.dense wrote the weight gradients as (g^T x)^T for the
    # narrower x: 4 more small ones, none above the ceiling.)
    "clip_contrastive": Expected(
        counts={"all-reduce": 64, "all-gather": 140, "reduce-scatter": 2, "all-to-all": 13,
                "collective-permute": 5},
        ceiling=("text_model/embeddings/token_embedding/embedding", DATA),
        fsdp={**_CLIP_FSDP, "visual_projection/kernel": ("data", "model"),
              "text_projection/kernel": ("data", "model")}),
}


def _param_bytes(params, name, divisor=1):
  shape, _ = params[name]
  return 4 * math.prod(shape) // divisor  # float32 parameters


def _dims(array_shape):
  return [int(d) for d in re.findall(r"\d+", array_shape.split("[", 1)[1])]


def problems(step, expected: Expected) -> list:
  """What in a compiled step (`compiled['steps'][name]`) breaks `expected`, as messages
  (empty: none)."""
  out = []
  counts = {e["kind"]: e["count"] for e in step["collectives"]}
  for kind in sorted(set(counts) | set(expected.counts)):
    if counts.get(kind, 0) != expected.counts.get(kind, 0):
      out.append(f"{kind}: {counts.get(kind, 0)} instructions, "
                 f"{expected.counts.get(kind, 0)} pinned")
  params = step["params"]
  name, divisor = expected.ceiling
  ceiling = _param_bytes(params, name, divisor)
  for e in step["collectives"]:
    if e["largest_bytes"] > ceiling:
      out.append(f"{e['kind']} moves {e['largest_shape']} ({e['largest_bytes']} B per "
                 f"device), more than {name} {params[name][0]} / {divisor} ({ceiling} B): a "
                 "large tensor is replicated or resharded")
  gathered = {tuple(_dims(shape)) for op in step["ops"] if op["kind"] == "all-gather"
              and op["group_size"] == DATA for shape, _ in op["arrays"]}
  for name, spec in expected.fsdp.items():
    shape = [d // MODEL if axis == "model" else d for d, axis in zip(params[name][0], spec)]
    if tuple(shape) not in gathered:
      out.append(f"no all-gather over 'data' gives {name} as {shape} (FSDP over 'data', "
                 f"spec {spec}); its spec is now {params[name][1]}")
  if expected.gradient_sync:
    bound = sum(_param_bytes(params, p, MODEL if "'model'" in spec else 1)
                for p, (_, spec) in params.items())
    synced = sum(op["bytes"] for op in step["ops"]
                 if op["kind"] == "all-reduce" and op["group_size"] == DATA)
    if synced > bound:
      out.append(f"all-reduces over 'data' carry {synced} B per device, more than one copy "
                 f"of the gradients with the 'data' split undone ({bound} B)")
  return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_train_step_collectives_are_pinned(compiled, name):
  step = compiled["steps"][name]
  found = problems(step, EXPECTED[name])
  assert not found, (f"{name} on a 4 x 2 mesh:\n  " + "\n  ".join(found) + "\ncompiled:\n"
                     + collectives.collectives_table(step["collectives"])
                     + "\n(a deliberate change, or a jax upgrade: re-pin EXPECTED)")


def test_a_replicated_hidden_kernel_fails_the_pins(compiled):
  # configs/ytb8m.py without its netvlad_hidden rule: the kernels stay whole on every device.
  step = compiled["steps"]["ytb8m_netvlad_late_replicated_hidden"]
  assert step["params"]["rgb_tower/netvlad_hidden/kernel"][1] == "P()"
  found = problems(step, EXPECTED["ytb8m_netvlad_late"])
  text = "\n".join(found)
  assert re.search(r"^all-gather: \d+ instructions, 64 pinned", text, re.M), text
  # the whole kernel's gradient is all-reduced: twice the ceiling
  assert "all-reduce moves f32[8192,32]" in text or "all-reduce moves f32[32,8192]" in text, text
  assert "no all-gather over 'data' gives rgb_tower/netvlad_hidden/kernel" in text, text
