"""Flax HuBERT against transformers' PyTorch HubertModel on tiny random checkpoints written by
transformers (safetensors): both feature-encoder / encoder variants, every hidden state, padded
batches, and the import's errors."""

import json

import jax
import numpy as np
import pytest
from helpers import hf_hubert

from mmjax.models import hubert
from mmjax.models.clip.weights import read_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 2e-5
VARIANTS = {  # HuBERT-base's layout and HuBERT-large's
    "group_postnorm": dict(feat_extract_norm="group", do_stable_layer_norm=False,
                           conv_bias=False),
    "layer_stable": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                         num_conv_pos_embeddings=15),
}


@pytest.fixture(name="checkpoint", scope="module", params=sorted(VARIANTS))
def fixture_checkpoint(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param))
  reference = hf_hubert.write_checkpoint(path, **VARIANTS[request.param])
  model, variables = hubert.from_pretrained(path)
  return path, reference, model, variables


def _waveforms(batch: int, length: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, length)).astype(np.float32)


def _reference(reference, values, mask=None):
  with torch.no_grad():
    out = reference(torch.tensor(values), output_hidden_states=True,
                    attention_mask=None if mask is None else torch.tensor(mask))
  return [h.numpy() for h in out.hidden_states], out.last_hidden_state.numpy()


def test_every_hidden_state_matches_transformers(checkpoint):
  _, reference, model, variables = checkpoint
  values = _waveforms(2, 1000)
  expected, expected_last = _reference(reference, values)
  out = jax.jit(model.apply)(variables, values)
  assert len(out["hidden_states"]) == len(expected) == 3
  for i, (ours, theirs) in enumerate(zip(out["hidden_states"], expected)):
    np.testing.assert_allclose(ours, theirs, atol=ATOL, err_msg=f"hidden_states[{i}]")
  np.testing.assert_allclose(out["last_hidden_state"], expected_last, atol=ATOL)
  assert np.asarray(out["frame_mask"]).all()
  assert out["last_hidden_state"].shape[1] == hubert.num_frames(model.config, 1000) == 99


def test_padded_batch_equals_each_utterance_alone(checkpoint):
  """Each row of a padded batch gives, on its valid frames, transformers' output for the
  utterance alone; for the layer-norm variant also transformers' padded output (its group-norm
  variant lets the padding into the GroupNorm statistics, ours does not)."""
  _, reference, model, variables = checkpoint
  lengths = (1000, 700, 431)
  values, mask = _waveforms(3, 1000, seed=1), np.zeros((3, 1000), np.int64)
  for row, length in enumerate(lengths):
    values[row, length:], mask[row, :length] = 0, 1
  out = jax.jit(model.apply)(variables, values, mask)
  padded, _ = _reference(reference, values, mask)
  for row, length in enumerate(lengths):
    frames = hubert.num_frames(model.config, length)
    np.testing.assert_array_equal(np.asarray(out["frame_mask"])[row].sum(), frames)
    alone, _ = _reference(reference, values[row:row + 1, :length])
    for i, ours in enumerate(out["hidden_states"]):
      np.testing.assert_allclose(np.asarray(ours)[row, :frames], alone[i][0], atol=ATOL,
                                 err_msg=f"row {row}, hidden_states[{i}]")
      if model.config.feat_extract_norm == "layer":
        np.testing.assert_allclose(np.asarray(ours)[row, :frames], padded[i][row, :frames],
                                   atol=ATOL, err_msg=f"row {row}, hidden_states[{i}]")


def test_frame_counts_and_receptive_field():
  config = hubert.HubertConfig()  # HuBERT-base's conv stack
  assert hubert.min_samples(config) == 400  # 25 ms at 16 kHz
  assert hubert.num_frames(config, 400) == 1 and hubert.num_frames(config, 399) == 0
  assert hubert.num_frames(config, 16000) == 49  # 20 ms per frame
  assert hubert.num_frames(config, 10) == 0


def test_normalisation_and_preprocessor_config_follow_transformers(tmp_path):
  waveform = _waveforms(1, 3000)[0] * 0.3 + 0.1
  extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
  expected = extractor(waveform, sampling_rate=16000, return_tensors="np").input_values[0]
  np.testing.assert_allclose(hubert.normalize_waveform(waveform), expected, atol=1e-6)
  assert hubert.read_preprocessing(str(tmp_path)) == hubert.Preprocessing()  # no file
  transformers.Wav2Vec2FeatureExtractor(do_normalize=False, sampling_rate=8000).save_pretrained(
      str(tmp_path))
  read = hubert.read_preprocessing(str(tmp_path))
  assert (read.sampling_rate, read.do_normalize) == (8000, False)
  assert read.source.endswith("preprocessor_config.json")


def test_legacy_weight_norm_names_and_task_model_prefix_load(checkpoint):
  """Hub checkpoints store weight_g/weight_v; task models prefix 'hubert.' and add heads."""
  _, _, model, variables = checkpoint
  state = {}
  for name, value in read_state_dict(checkpoint[0]).items():
    name = name.replace("parametrizations.weight.original0", "weight_g")
    state["hubert." + name.replace("parametrizations.weight.original1", "weight_v")] = value
  state["classifier.weight"] = np.zeros((4, 32), np.float32)
  loaded = hubert.params_from_state_dict(state, model)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_checkpoint_errors_name_the_file_and_tensor(checkpoint, tmp_path):
  path, _, model, _ = checkpoint
  state = read_state_dict(path)
  del state["encoder.layer_norm.bias"]
  state["encoder.layers.0.attention.q_proj.weight"] = np.zeros((32, 31), np.float32)
  with pytest.raises(ValueError, match=r"some/model.safetensors: cannot load.*\n.*missing "
                     r"tensor 'encoder.layer_norm.bias'"):
    hubert.params_from_state_dict(state, model, source="some/model.safetensors")
  with pytest.raises(ValueError, match=r"'encoder.layers.0.attention.q_proj.weight' has shape "
                     r"\(32, 31\)"):
    hubert.params_from_state_dict(state, model)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
  with pytest.raises(ValueError, match=r"config.json: model_type 'wav2vec2', expected "
                     r"'hubert'"):
    hubert.read_config(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert"}))
  with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
    hubert.from_pretrained(str(tmp_path))
  with pytest.raises(ValueError, match="feat_extract_norm='batch'"):
    hubert.HubertConfig(feat_extract_norm="batch")
