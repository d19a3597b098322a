"""Memotion 3 task: Table 3's losses from the config, the batches the pipeline makes from the
release's files, and the blended loss (seed 000, eq. 7)."""

import csv
import logging
import os

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from mmjax import losses
from mmjax.models.clip import load_tokenizer
from mmjax.projects.memotion3 import meme_data, memotion_table
from mmjax.tasks.blended_heads import BlendedHeads
from tests.conftest import load_config

HEADER = ["", "Image_URL", "humour", "sarcastic", "offensive", "motivational", "overall", "ocr"]


@pytest.mark.parametrize("variants,loss,mode,heads", [
    ("text", "cross_entropy", "off", {"text": 1.0}),
    ("image", "cross_entropy", "off", {"image": 1.0}),
    ("text,humour", "focal", "off", {"text": 1.0}),
    ("humour,text", "focal", "off", {"text": 1.0}),
    ("image,motivational", "focal", "off", {"image": 1.0}),
    ("multi,sarcasm", "cross_entropy", "online", {"multi": 1.0}),
    ("", "cross_entropy", "online", {"multi": 1.0}),
    ("no_gb", "cross_entropy", "off", {"multi": 1.0}),
    ("offensive,no_gb,multi", "cross_entropy", "off", {"multi": 1.0}),
])
def test_table3_losses_follow_model_and_target(variants, loss, mode, heads):
  config = load_config("memotion3", variants)
  assert config.loss.name == loss and config.loss.gblend.mode == mode
  assert dict(config.loss.head_weights) == heads
  online = mode == "online"
  assert ("gblend_train" in config.evals) == online
  assert ("gblend_holdout" in config.evals) == online
  assert config.data.holdout_fraction == (0.2 if online else 0.0)
  assert config.data.train_subset == ("train" if online else "all")


def _write_release(root, rows, split="val"):
  """A Memotion 3 label file with JPEG images (one colour each) under root/image/<split>/."""
  os.makedirs(root / "memotion3", exist_ok=True)
  os.makedirs(root / "image" / split, exist_ok=True)
  with open(root / "memotion3" / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, delimiter="\t")
    writer.writerow(HEADER)
    for i, (labels, text) in enumerate(rows):
      writer.writerow([str(i), f"https://x.invalid/{i}.jpg", *labels, text])
      Image.new("RGB", (40, 32), (10 * i, 100, 200)).save(root / "image" / split / f"{i}.jpg")
  return str(root / "memotion3" / f"{split}.csv")


def _data_config(path, **overrides):
  config = load_config("memotion3", "tiny").data
  with config.unlocked():
    config.train_file = config.eval_file = path
    for key, value in overrides.items():
      config[key] = value
  return config


def _clip_inputs():
  return meme_data.ClipInputs(load_tokenizer(), 32)


def _first_batch(dataset):
  return next(iter(dataset))


def test_batches_from_the_release_format(tmp_path):
  labels = [("funny", "general", "slight", "motivational", "very_positive"),
            ("not_funny", "not_sarcastic", "not_offensive", "not_motivational", "negative"),
            ("hilarious", "very_twisted", "hateful_offensive", "not_motivational", "neutral")]
  long_text = " ".join(["word"] * 300)  # longer than CLIP's 77-token context
  path = _write_release(tmp_path, [(labels[0], "hello\nworld"), (labels[1], long_text),
                                   (labels[2], "meme")])
  tokenizer = load_tokenizer()
  for target, expected in (("task_a", [2, 0, 1]), ("humour", [1, 0, 3]),
                           ("sarcasm", [1, 0, 3]), ("motivational", [1, 0, 0])):
    data = _data_config(path, target=target)
    batch = _first_batch(meme_data.make_eval_dataset(data, meme_data.ClipInputs(tokenizer, 32),
                                                     batch_size=4,
                                                     process_index=0, process_count=1))
    assert batch["pixel_values"].shape == (4, 32, 32, 3)
    assert batch["pixel_values"].dtype == np.float32
    assert batch["input_ids"].shape == (4, 77) and batch["attention_mask"].shape == (4, 77)
    np.testing.assert_array_equal(batch["label"][:3], expected)
    np.testing.assert_array_equal(batch["weight"], [1, 1, 1, 0])  # the 4th row pads
  # The long OCR text fills the context and still ends with the end-of-text token.
  assert batch["attention_mask"][1].sum() == 77
  assert batch["input_ids"][1, -1] == tokenizer.eot_token_id
  # The newline became a space: the same tokens as 'hello world'.
  hello = tokenizer(["hello world"])["input_ids"][0]
  np.testing.assert_array_equal(batch["input_ids"][0], hello)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "I;16"])
def test_images_of_any_mode_are_converted(tmp_path, mode):
  path = _write_release(tmp_path, [(("funny", "general", "slight", "motivational",
                                     "positive"), "text")])
  image = Image.new("RGB", (40, 32), (200, 30, 60)).convert(mode if mode != "I;16" else "L")
  if mode == "I;16":
    image = image.convert("I;16")
  fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"  # a PNG named .jpg, as memes often are
  image.save(tmp_path / "image" / "val" / "0.jpg", format=fmt)
  batch = _first_batch(meme_data.make_eval_dataset(_data_config(path), _clip_inputs(),
                                                   batch_size=1, process_index=0,
                                                   process_count=1))
  assert batch["pixel_values"].shape == (1, 32, 32, 3)
  assert np.isfinite(batch["pixel_values"]).all()


def test_holdout_and_eval_on_train(tmp_path):
  row = (("funny", "general", "slight", "motivational", "positive"), "text")
  path = _write_release(tmp_path, [row] * 10, split="train")
  base = dict(holdout_fraction=0.2, holdout_seed=0, eval_split="train")
  sizes = {}
  for subset in ("all", "train", "holdout"):
    data = _data_config(path, eval_subset=subset, **base)
    sizes[subset] = meme_data.make_eval_dataset(data, _clip_inputs(), batch_size=4,
                                                process_index=0, process_count=1).num_examples
  assert sizes == {"all": 10, "train": 8, "holdout": 2}
  with pytest.raises(ValueError, match=r"config.data.eval_split='bogus'"):
    meme_data.make_eval_dataset(_data_config(path, eval_split="bogus"), _clip_inputs(),
                                batch_size=4, process_index=0, process_count=1)


def test_an_eval_split_without_a_class_is_named(tmp_path, caplog):
  path = _write_release(tmp_path, [(("funny", "general", "slight", "motivational",
                                     "positive"), "a")] * 2)
  with caplog.at_level(logging.WARNING, logger="mmjax.data"):
    meme_data.make_eval_dataset(_data_config(path), _clip_inputs(), batch_size=2,
                                process_index=0, process_count=1)
  assert f"{path}: no example of class(es) ['negative', 'neutral']" in caplog.text


def test_targets_and_class_names():
  data = load_config("memotion3", "tiny").data
  assert meme_data.class_names(data) == ("negative", "neutral", "positive")
  with data.unlocked():
    data.target = "humour"
  assert meme_data.class_names(data) == memotion_table.LABEL_VOCABULARIES["humour"]
  data.target = "bogus"
  with pytest.raises(ValueError, match=r"config.data.target='bogus'; expected one of "
                     r"\('task_a', 'humour', 'sarcasm', 'offensive', 'motivational', "
                     r"'hateful'\)"):
    meme_data.class_names(data)


def test_blended_loss_is_the_weighted_sum_of_per_head_losses():
  """eq. 7: GB = sum_k w_k CE_k; with focal loss each term is the focal loss instead."""
  rng = np.random.default_rng(0)
  outputs = {h: rng.normal(size=(5, 3)).astype(np.float32) for h in ("text", "image", "multi")}
  batch = {"label": np.array([0, 2, 1, 1, 0], np.int32),
           "weight": np.array([1, 1, 1, 1, 0], np.float32)}
  config = load_config("memotion3", "").loss
  with config.unlocked():
    config.gblend.mode = "off"
    config.head_weights = {"text": 0.2, "image": 0.3, "multi": 0.5}
  blended = BlendedHeads(("text", "image", "multi"), "multi", 3, config)
  total, aux = blended.loss(outputs, batch, {})
  expected = 0.0
  for head, w in config.head_weights.items():
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs[head], batch["label"])
    head_loss = float(np.sum(ce * batch["weight"]) / 4)
    np.testing.assert_allclose(aux[f"loss_{head}"], head_loss, rtol=1e-6)
    expected += w * head_loss
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  correct = (outputs["multi"].argmax(-1) == batch["label"])[:4].mean()
  np.testing.assert_allclose(aux["accuracy"], correct)
  config.name = "focal"
  focal_total, _ = BlendedHeads(("text",), "text", 3, _only(config, "text")).loss(
      outputs, batch, {})
  focal = losses.softmax_focal_loss(outputs["text"], batch["label"], gamma=2.0)
  np.testing.assert_allclose(focal_total, np.sum(focal * batch["weight"]) / 4, rtol=1e-5)
  predictions = blended.predictions(outputs)
  np.testing.assert_allclose(predictions["multi"], jax.nn.softmax(outputs["multi"]), rtol=1e-6)


def _only(loss_config, head):
  config = loss_config.copy_and_resolve_references()
  config.head_weights = {head: 1.0}
  return config


def test_a_test_split_without_labels_is_read_for_prediction(tmp_path):
  path = _write_release(tmp_path, [(("funny", "general", "slight", "motivational",
                                     "positive"), "a")] * 3, split="train")
  test_dir = tmp_path / "image" / "test"
  os.makedirs(test_dir)
  with open(tmp_path / "memotion3" / "test.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, delimiter="\t")
    writer.writerow(["", "Image_URL", "ocr"])
    for i in range(2):
      writer.writerow([str(i), "u", f"text {i}"])
      Image.new("RGB", (40, 32)).save(test_dir / f"{i}.jpg")
  data = _data_config(path, test_file=str(tmp_path / "memotion3" / "test.csv"),
                      eval_split="test")
  dataset = meme_data.make_eval_dataset(data, _clip_inputs(), batch_size=4, process_index=0,
                                        process_count=1)
  assert dataset.num_examples == 2
  np.testing.assert_array_equal(_first_batch(dataset)["weight"], [1, 1, 0, 0])


def test_stage_b_reads_the_binary_lists_of_the_synthetic_corpora(cache_dir):
  data = load_config("memotion3", "hateful,text,tiny").data
  train, evaluation = meme_data.resolve_files(data, log=lambda _: None)
  assert os.path.basename(train) == "pretrainuni_train.jsonl"
  with data.unlocked():
    data.train_file, data.eval_file = train, evaluation
  batch = _first_batch(meme_data.make_eval_dataset(data, _clip_inputs(), batch_size=4,
                                                   process_index=0, process_count=1))
  assert set(np.unique(batch["label"])) <= {0, 1}
  assert meme_data.class_names(data) == ("not_hateful", "hateful")
  data.target = "task_a"
  with pytest.raises(ValueError, match=r"config.data.target='task_a' needs a Memotion label "
                     r"file"):
    meme_data.make_eval_dataset(data, _clip_inputs(), batch_size=4, process_index=0,
                                process_count=1)
