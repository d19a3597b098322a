"""Sharded training equals single-device training: 8 fake CPU devices as a 4 x 2 (data x model)
mesh, parameters partitioned by the config's rules (NetVLAD's hidden kernel over both axes; the
cross-modal Transformer and attention RNN with the correlation tower; CLIP's
attention and MLP kernels tensor-parallel over 'model' and FSDP over 'data')."""

import json
import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))


def _run_equivalence(config_name, *overrides, cache_dir, optimizers=("adam", "sgd")):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             MMJAX_CACHE=cache_dir, JAX_PLATFORMS="cpu")
  command = [sys.executable, os.path.join(TESTS, "helpers", "sharding_equivalence.py"), TESTS,
             config_name, f"--optimizers={','.join(optimizers)}", *overrides]
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["devices"] == 8
  for optimizer in optimizers:
    result = summary[optimizer]
    for sharded, single in zip(result["losses_sharded"], result["losses_single"]):
      assert abs(sharded - single) <= 1e-5 * max(1.0, abs(single)), summary
  assert summary["max_output_diff"] < 1e-5, summary
  assert summary["sgd"]["max_param_diff"] < 1e-5, summary
  return summary


# transformer/cmc: the cross-modal Transformer with the correlation tower and CM-C's context
# layers (the tower's weights need not be loaded for this comparison); attention_rnn/cmg: the
# LSTM scans and the gated crossed attention units; netvlad/cmc: the crossed soft assignments
# with the sharded hidden kernels of both streams; SGD only (parameters compared exactly;
# Adam's sharded state: the NetVLAD case).
@pytest.mark.parametrize("model,fusion,optimizers", [("netvlad", "late", ("adam", "sgd")),
                                                     ("transformer", "cmc", ("sgd",)),
                                                     ("attention_rnn", "cmg", ("sgd",)),
                                                     ("netvlad", "cmc", ("sgd",))])
def test_4x2_mesh_matches_one_device(model, fusion, optimizers, cache_dir):
  summary = _run_equivalence("ytb8m", f"model.name={model}", f"model.fusion={fusion}",
                             "model.correlation.workdir=unused", cache_dir=cache_dir,
                             optimizers=optimizers)
  if model == "netvlad":  # the NetVLAD hidden kernel of each stream over both mesh axes
    hidden = ("rgb_tower/netvlad_hidden" if fusion == "late" else "rgb_netvlad_hidden")
    assert summary["specs"][f"{hidden}/kernel"] == "P('data', 'model')"
    assert summary["specs"]["classifier/kernel"] == "P(None, 'model')"


@pytest.mark.parametrize("config_name", ["clip_pretrain", "emovclip"])
def test_clip_on_4x2_mesh_matches_one_device(config_name, cache_dir):
  # SGD only (parameters compared exactly); Adam's sharded state: the YouTube-8M cases above.
  summary = _run_equivalence(config_name, cache_dir=cache_dir, optimizers=("sgd",))
  specs = summary["specs"]
  layer = "vision_model/encoder/layers_0"
  assert specs[f"{layer}/self_attn/q_proj/kernel"] == "P('data', 'model')"
  assert specs[f"{layer}/self_attn/out_proj/kernel"] == "P('model', 'data')"
  assert specs[f"{layer}/mlp/fc1/kernel"] == "P('data', 'model')"
  assert specs[f"{layer}/mlp/fc2/kernel"] == "P('model', 'data')"
  assert specs["text_model/embeddings/token_embedding/embedding"] == "P('data', None)"


# MER fusion (seeds 003 and 004): every kernel's output nodes over 'model'; MER2024 with modality
# dropout (the same keys drop the same modalities on 8 devices as on 1).
@pytest.mark.parametrize("config_name,overrides", [("mer2023", ()),
                                                   ("mer2024", ("model.modality_dropout=0.3",))])
def test_mer_fusion_on_4x2_mesh_matches_one_device(config_name, overrides, cache_dir):
  summary = _run_equivalence(config_name, *overrides, cache_dir=cache_dir, optimizers=("sgd",))
  hidden = "s0_hubert18_0" if config_name == "mer2023" else "audio_0"
  assert summary["specs"][f"{hidden}/kernel"] == "P(None, 'model')"
