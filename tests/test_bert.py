"""Flax BERT against transformers' PyTorch BertModel on a tiny random checkpoint written by
transformers (safetensors), including OSCAR's region embeddings appended after the token
embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random tiny BERT saved by transformers (config.json + model.safetensors)."""
  path = str(tmp_path_factory.mktemp("tiny_bert"))
  config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37,
                                   max_position_embeddings=64, type_vocab_size=2)
  torch.manual_seed(0)
  model = transformers.BertModel(config).eval()
  with torch.no_grad():  # non-trivial LayerNorm parameters
    for name, param in model.named_parameters():
      if "LayerNorm" in name:
        param.add_(torch.randn_like(param) * 0.1)
  model.save_pretrained(path, safe_serialization=True)
  return path, model


def _flax(path):
  config = bert.read_config(path)
  module = bert.BertModel(config)
  ids = jnp.zeros((1, 4), jnp.int32)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids))["params"]
  return module, {"params": bert.from_pretrained(path, template)}


def _inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 99, (3, 9)).astype(np.int64)
  mask = np.ones((3, 9), np.int64)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  types = np.zeros((3, 9), np.int64)
  types[:, 5:] = 1
  return ids, mask, types


def test_bert_matches_transformers(checkpoint):
  path, reference = checkpoint
  module, params = _flax(path)
  ids, mask, types = _inputs()
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         token_type_ids=torch.tensor(types))
  out = module.apply(params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
                     jnp.asarray(types, jnp.int32))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(out["sequence"])[real],
                             expected.last_hidden_state.numpy()[real], atol=2e-5)
  np.testing.assert_allclose(out["pooled"], expected.pooler_output.numpy(), atol=2e-5)


def test_appended_embeddings_match_the_encoder_on_the_concatenation(checkpoint):
  """OSCAR's input: [token embeddings; region embeddings] through the encoder, with padded
  regions masked."""
  path, reference = checkpoint
  module, params = _flax(path)
  ids, mask, types = _inputs()
  extra = np.random.default_rng(1).normal(size=(3, 4, 32)).astype(np.float32)
  extra_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.int64)
  with torch.no_grad():
    embedded = reference.embeddings(input_ids=torch.tensor(ids),
                                    token_type_ids=torch.tensor(types))
    joined = torch.cat([embedded, torch.tensor(extra)], dim=1)
    full_mask = torch.tensor(np.concatenate([mask, extra_mask], axis=1))
    extended = (1.0 - full_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    expected = reference.encoder(joined, attention_mask=extended).last_hidden_state.numpy()
  out = module.apply(params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
                     jnp.asarray(types, jnp.int32), jnp.asarray(extra),
                     jnp.asarray(extra_mask, jnp.int32))
  real = np.concatenate([mask, extra_mask], axis=1).astype(bool)
  np.testing.assert_allclose(np.asarray(out["sequence"])[real], expected[real], atol=2e-5)


def test_checkpoint_mismatches_are_named(checkpoint, tmp_path):
  path, _ = checkpoint
  config = bert.read_config(path)
  wider = bert.BertModel(bert.BertConfig(**{**config.__dict__, "intermediate_size": 40}))
  ids = jnp.zeros((1, 4), jnp.int32)
  template = jax.eval_shape(lambda: wider.init(jax.random.PRNGKey(0), ids, ids))["params"]
  with pytest.raises(ValueError, match=r"shape mismatches: .*"
                     r"encoder.layer.0.intermediate.dense.weight: checkpoint \[37, 32\], model "
                     r"expects \[40, 32\]"):
    bert.from_pretrained(path, template)
  state = {"bert." + k: v for k, v in bert.read_state_dict(path).items()}  # a task model's
  module, _ = _flax(path)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids))["params"]
  assert jax.tree.structure(bert.params_from_state_dict(state, template)) == jax.tree.structure(
      template)
  del state["bert.pooler.dense.bias"]
  with pytest.raises(ValueError, match=r"missing tensors: pooler.dense.bias"):
    bert.params_from_state_dict(state, template)
  (tmp_path / "config.json").write_text('{"model_type": "roberta"}')
  with pytest.raises(ValueError, match="model_type 'roberta', expected 'bert'"):
    bert.read_config(str(tmp_path))
