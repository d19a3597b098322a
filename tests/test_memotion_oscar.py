"""OSCAR for Memotion 3: the word-tag-region model against its definition, the region files,
its inputs, and BERT weights loading into the task."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import bert
from mmjax.projects.memotion3 import meme_data, regions, synthetic_bert, synthetic_memes
from mmjax.projects.memotion3.models import Classifier, OscarClassifier
from mmjax.tasks import get_task
from tests.conftest import load_config

CONFIG = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=24, max_position_embeddings=32)


def _batch(rng, batch=2, tokens=7, num_regions=3, dim=5):
  mask = np.ones((batch, tokens), np.int32)
  mask[1, 5:] = 0
  region_mask = np.array([[1, 1, 1], [1, 0, 0]], np.int32)
  types = np.zeros((batch, tokens), np.int32)
  types[:, 4:] = 1
  return {"bert_input_ids": rng.integers(1, 50, (batch, tokens)).astype(np.int32),
          "bert_token_type_ids": types, "bert_attention_mask": mask,
          "region_features": rng.normal(size=(batch, num_regions, dim)).astype(np.float32),
          "region_boxes": rng.random((batch, num_regions, 6)).astype(np.float32),
          "region_mask": region_mask}


@pytest.fixture(scope="module")
def oscar():
  model = OscarClassifier(CONFIG, num_classes=3)
  batch = _batch(np.random.default_rng(0))
  params = model.init(jax.random.PRNGKey(0), batch)
  return model, params, batch


def test_oscar_is_bert_over_tokens_and_projected_regions(oscar):
  model, params, batch = oscar
  p = params["params"]
  regions_in = np.concatenate([batch["region_features"], batch["region_boxes"]], -1)
  projected = regions_in @ np.asarray(p["region_projection"]["kernel"]) + np.asarray(
      p["region_projection"]["bias"])
  out = bert.BertModel(CONFIG).apply({"params": p["bert"]}, batch["bert_input_ids"],
                                     batch["bert_attention_mask"], batch["bert_token_type_ids"],
                                     jnp.asarray(projected), batch["region_mask"])
  expected = Classifier(CONFIG.hidden_size, 3).apply({"params": p["head"]}, out["pooled"])
  np.testing.assert_allclose(model.apply(params, batch)["oscar"], expected, atol=1e-5)
  changed = dict(batch, region_features=batch["region_features"].copy())
  changed["region_features"][1, 1:] = 100.0  # padded regions of example 1
  np.testing.assert_allclose(model.apply(params, changed)["oscar"],
                             model.apply(params, batch)["oscar"], atol=1e-6)


def test_region_files_round_trip_and_errors(tmp_path):
  image = str(tmp_path / "7.jpg")
  features = np.arange(12, dtype=np.float16).reshape(2, 6)
  boxes = np.full((2, 6), 0.5, np.float32)
  regions.write_regions(image, features, boxes, ["face", "star"])
  got = regions.read_regions(image, feature_dim=6)
  np.testing.assert_array_equal(got[0], features.astype(np.float32))
  assert got[0].dtype == np.float32 and got[2] == ["face", "star"]
  with pytest.raises(ValueError, match=r"7.features.npy: features of shape \(2, 6\), expected "
                     r"\[regions, 2048\]"):
    regions.read_regions(image, feature_dim=2048)
  with open(tmp_path / "7.tags.json", "w", encoding="utf-8") as f:
    json.dump(["face"], f)
  with pytest.raises(ValueError, match=r"7.tags.json: expected a list of 2 strings"):
    regions.read_regions(image, feature_dim=6)
  os.remove(tmp_path / "7.boxes.npy")
  with pytest.raises(FileNotFoundError, match=r"7.boxes.npy: no such file"):
    regions.read_regions(image, feature_dim=6)


def test_oscar_inputs_pair_text_and_tags(tmp_path, cache_dir):
  del cache_dir
  tokenizer = bert.load_tokenizer(synthetic_bert.synthetic_bert_checkpoint(log=lambda _: None))
  directory = synthetic_memes.write_synthetic_memes(
      str(tmp_path), num_train=6, num_val=2, num_test=0, image_size=32, label_noise=0.0, seed=1,
      log=lambda _: None)
  data = dict(images=os.path.join(directory, "image"))
  table = meme_data.memotion_table.read_memotion(
      os.path.join(directory, "memotion3", "train.csv"), "train", data)
  inputs = meme_data.OscarInputs(tokenizer, max_tokens=24, max_regions=2, feature_dim=64)
  examples = [inputs.load(table, 0), None]
  batch = inputs.collate(examples)
  assert batch["bert_input_ids"].shape == (2, 24)
  assert batch["region_features"].shape == (2, 2, 64) and batch["region_boxes"].shape == (2, 2, 6)
  np.testing.assert_array_equal(batch["region_mask"], [[1, 1], [0, 0]])
  ids, types = batch["bert_input_ids"][0], batch["bert_token_type_ids"][0]
  tokens = tokenizer.convert_ids_to_tokens(ids[batch["bert_attention_mask"][0] > 0])
  assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
  second = tokens.index("[SEP]") + 1
  assert tokens[second:-1] == examples[0]["tags"].split()  # the tags: 'text face'
  assert types[second] == 1 and types[1] == 0
  assert "[UNK]" not in tokens  # the synthetic vocabulary covers the synthetic memes


def test_the_task_loads_the_bert_checkpoint(cache_dir):
  del cache_dir
  config = load_config("memotion3", "oscar,tiny")
  task = get_task(config)
  params = task.model.init(jax.random.PRNGKey(3), task.example_batch(2))["params"]
  loaded = task.pretrained_params(params)
  expected = bert.read_state_dict(task.bert_checkpoint)
  np.testing.assert_array_equal(loaded["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                expected["embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(
      loaded["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"],
      expected["encoder.layer.0.attention.self.query.weight"].T)
  np.testing.assert_array_equal(loaded["head"]["out"]["kernel"], params["head"]["out"]["kernel"])
