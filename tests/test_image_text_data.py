"""Tests for mmjax.data.images (CLIP preprocessing), mmjax.data.tables and
mmjax.data.image_text (image-text list files, grain pipelines, synthetic pairs)."""

import json
import os
import zlib

import grain
import numpy as np
import pytest
from helpers.batches import assert_batches_equal, take
from PIL import Image

from mmjax.data import image_text, images, sharded_stream

SIZE = 32
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
CONTEXT = 8


def fake_tokenizer(captions):
  """[BOS, word ids..., EOS] padded with 0 to CONTEXT; mask 1 on real tokens."""
  ids = np.zeros((len(captions), CONTEXT), np.int32)
  mask = np.zeros_like(ids)
  for i, caption in enumerate(captions):
    words = [zlib.crc32(w.encode()) % 1000 + 3 for w in caption.split()][:CONTEXT - 2]
    tokens = [1] + words + [2]
    ids[i, :len(tokens)], mask[i, :len(tokens)] = tokens, 1
  return {"input_ids": ids, "attention_mask": mask}


def random_image(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def reference(pixels):
  """Independent normalization (float64)."""
  return (pixels.astype(np.float64) / 255 - MEAN) / STD


# ------------------------------------------------------------------------------------------
# Preprocessing.


def test_constants():
  np.testing.assert_array_equal(images.CLIP_MEAN, MEAN.astype(np.float32))
  np.testing.assert_array_equal(images.CLIP_STD, STD.astype(np.float32))


@pytest.mark.parametrize("height,width,left,top", [
    (SIZE, 64, 16, 0),  # wide: no resize, central columns
    (SIZE, 37, 2, 0),  # odd margin: round(2.5) = 2, as torchvision's center_crop
    (50, SIZE, 0, 9),  # tall
    (SIZE, SIZE, 0, 0)])
def test_center_crop_without_resize(height, width, left, top):
  pixels = random_image((height, width, 3))
  out = images.preprocess_array(pixels, SIZE)
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, reference(pixels[top:top + SIZE, left:left + SIZE]), atol=1e-5)


def test_resize_shorter_side_bicubic_then_crop():
  pixels = random_image((40, 70, 3), seed=1)
  resized = np.asarray(Image.fromarray(pixels).resize((56, SIZE), Image.BICUBIC))  # 32*70/40
  np.testing.assert_allclose(images.preprocess_array(pixels, SIZE),
                             reference(resized[:, 12:12 + SIZE]), atol=1e-5)
  # Upsampling a constant image keeps it constant: only the normalization remains.
  constant = np.full((20, 24, 3), (200, 10, 90), np.uint8)
  out = images.preprocess_array(constant, SIZE)
  np.testing.assert_allclose(out, np.broadcast_to(reference(constant[0, 0]), out.shape),
                             atol=1e-5)


def test_load_image_modes_and_errors(tmp_path):
  pixels = random_image((36, 45, 3), seed=2)
  Image.fromarray(pixels).save(tmp_path / "rgb.png")
  np.testing.assert_array_equal(images.load_image(tmp_path / "rgb.png", SIZE),
                                images.preprocess_array(pixels, SIZE))
  gray = pixels[..., 0]
  Image.fromarray(gray).save(tmp_path / "gray.png")
  np.testing.assert_array_equal(images.load_image(str(tmp_path / "gray.png"), SIZE),
                                images.preprocess_array(np.stack([gray] * 3, -1), SIZE))
  rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 7, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(images.load_image(tmp_path / "rgba.png", SIZE),
                                images.preprocess_array(pixels, SIZE))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    images.load_image(tmp_path / "missing.png", SIZE)
  (tmp_path / "bad.jpg").write_bytes(b"not an image")
  with pytest.raises(ValueError, match=r"bad\.jpg: cannot read the image"):
    images.load_image(tmp_path / "bad.jpg", SIZE)
  with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
    images.preprocess_array(np.zeros((4, 4), np.uint8), SIZE)


# ------------------------------------------------------------------------------------------
# List files.


def write_images(directory, num, prefix="im"):
  os.makedirs(directory, exist_ok=True)
  names = []
  for i in range(num):
    name = f"{prefix}{i}.png"
    Image.fromarray(random_image((SIZE + 4, SIZE + 8, 3), seed=100 + i)).save(
        os.path.join(directory, name))
    names.append(name)
  return names


def test_read_pairs_formats(tmp_path):
  (tmp_path / "a.csv").write_text('image,caption,extra\nx/1.png,"a dog, running",z\n'
                                  f'{tmp_path}/abs.png,  a cat  ,z\n')
  assert image_text.read_pairs(str(tmp_path / "a.csv")) == [
      (str(tmp_path / "x" / "1.png"), "a dog, running"), (str(tmp_path / "abs.png"), "a cat")]
  (tmp_path / "b.tsv").write_text("file\ttext\n1.png\ta, b\n")
  assert image_text.read_pairs(tmp_path / "b.tsv", "file", "text") == [
      (str(tmp_path / "1.png"), "a, b")]
  (tmp_path / "c.jsonl").write_text('{"image": "1.png", "caption": "one"}\n\n'
                                    '{"image": "2.png", "caption": "two", "id": 3}\n')
  assert image_text.read_pairs(tmp_path / "c.jsonl") == [
      (str(tmp_path / "1.png"), "one"), (str(tmp_path / "2.png"), "two")]


@pytest.mark.parametrize("name,text,message", [
    ("h.csv", "image,text\n1.png,x\n", r"h\.csv: line 1: missing column\(s\) \['caption'\]"),
    ("s.csv", "image,caption\n1.png,x\n2.png\n", r"s\.csv: line 3: too few fields"),
    ("e.csv", "image,caption\n1.png,x\n,y\n", r"e\.csv: line 3: empty 'image'"),
    ("k.jsonl", '{"image": "1.png", "caption": "x"}\n{"image": "2.png"}\n',
     r"k\.jsonl: line 2: missing key\(s\) \['caption'\]"),
    ("j.jsonl", '{"image": "1.png", "caption": "x"}\n{"image": \n', r"j\.jsonl: line 2: invalid"),
    ("l.jsonl", '{"image": "1.png", "caption": ["x"]}\n', r"line 1: 'caption' must be a string"),
    ("n.csv", "image,caption\n", r"n\.csv: no image-text pairs"),
    ("u.txt", "image,caption\n", r"u\.txt: unsupported list file extension '\.txt'")])
def test_read_pairs_errors(tmp_path, name, text, message):
  (tmp_path / name).write_text(text)
  with pytest.raises(ValueError, match=message):
    image_text.read_pairs(str(tmp_path / name))


def test_read_pairs_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    image_text.read_pairs(str(tmp_path / "nope.csv"))


# ------------------------------------------------------------------------------------------
# Pipelines.

NUM_TRAIN, NUM_EVAL = 12, 7


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pairs")
  names = write_images(directory / "imgs", NUM_TRAIN + NUM_EVAL)
  with open(directory / "train.csv", "w") as f:
    f.write("image,caption\n" + "".join(f"imgs/{n},caption number {i}\n"
                                        for i, n in enumerate(names[:NUM_TRAIN])))
  with open(directory / "eval.jsonl", "w") as f:
    for i, n in enumerate(names[NUM_TRAIN:]):
      f.write(json.dumps({"image": f"imgs/{n}", "caption": f"eval caption {i}"}) + "\n")
  return str(directory)


def make_config(directory, **overrides):
  config = dict(train_file=os.path.join(directory, "train.csv"),
                eval_file=os.path.join(directory, "eval.jsonl"), image_key="image",
                caption_key="caption", image_size=SIZE, num_threads=2, prefetch_batches=2,
                eval_max_examples=0)
  config.update(overrides)
  return config


def train(config, batch_size=4, seed=0, process_index=0, process_count=1):
  return image_text.make_train_dataset(config, fake_tokenizer, batch_size=batch_size, seed=seed,
                                       process_index=process_index, process_count=process_count)


def expected_pixels(directory, list_file):
  return {caption: images.load_image(path, SIZE)
          for path, caption in image_text.read_pairs(os.path.join(directory, list_file))}


def test_train_batches(lists):
  ds = train(make_config(lists))
  assert isinstance(ds, grain.IterDataset) and ds.num_records == NUM_TRAIN
  batches = take(ds, 3)  # one epoch
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {
      "pixel_values": ((4, SIZE, SIZE, 3), np.float32), "input_ids": ((4, CONTEXT), np.int32),
      "attention_mask": ((4, CONTEXT), np.int32), "weight": ((4,), np.float32)}
  reference_pixels = expected_pixels(lists, "train.csv")
  seen = []
  for batch in batches:
    assert (batch["weight"] == 1).all()
    for i in range(4):  # the tokens identify the caption; the pixels belong to its image
      caption = next(c for c in reference_pixels
                     if (fake_tokenizer([c])["input_ids"][0] == batch["input_ids"][i]).all())
      np.testing.assert_array_equal(batch["pixel_values"][i], reference_pixels[caption])
      seen.append(caption)
  assert sorted(seen) == sorted(reference_pixels)  # each pair once per epoch


def test_train_determinism_and_resume(lists):
  config = make_config(lists)
  first = take(train(config, seed=3), 5)
  assert_batches_equal(first, take(train(make_config(lists, num_threads=0), seed=3), 5))
  assert not np.array_equal(first[0]["input_ids"], take(train(config, seed=4), 1)[0]["input_ids"])
  it = iter(train(config, seed=3))
  take(it, 2)
  state = it.get_state()
  json.dumps(state)
  expected = take(it, 4)  # crosses the epoch boundary
  resumed = iter(train(config, seed=3))
  resumed.set_state(state)
  assert_batches_equal(expected, take(resumed, 4))


def test_two_processes_make_the_single_process_batch(lists):
  config = make_config(lists)
  single = take(train(config, batch_size=4, seed=1), 5)
  parts = [take(train(config, batch_size=2, seed=1, process_index=p, process_count=2), 5)
           for p in range(2)]
  for b, batch in enumerate(single):
    for key in batch:
      np.testing.assert_array_equal(
          batch[key], np.concatenate([parts[0][b][key], parts[1][b][key]]))


@pytest.mark.parametrize("process_count,batch_size,max_examples", [
    (1, 3, 0), (2, 3, 0), (3, 2, 0), (2, 2, 5)])
def test_eval_padding_and_batch_counts(lists, process_count, batch_size, max_examples):
  config = make_config(lists, eval_max_examples=max_examples)
  num = max_examples or NUM_EVAL
  reference_pixels = list(expected_pixels(lists, "eval.jsonl").items())[:num]
  captions, weight = [], 0.0
  for p in range(process_count):
    ds = image_text.make_eval_dataset(config, fake_tokenizer, batch_size=batch_size,
                                      process_index=p, process_count=process_count)
    batches = list(ds)
    assert len(batches) == ds.num_batches == sharded_stream.eval_num_batches(
        num, batch_size, process_count)
    assert ds.num_examples == num
    for batch in batches:
      assert batch["pixel_values"].shape == (batch_size, SIZE, SIZE, 3)
      assert batch["input_ids"].shape == (batch_size, CONTEXT)
      pad = batch["weight"] == 0
      assert not batch["pixel_values"][pad].any()
      np.testing.assert_array_equal(batch["input_ids"][pad],
                                    np.broadcast_to(fake_tokenizer([""])["input_ids"],
                                                    (pad.sum(), CONTEXT)))
      weight += batch["weight"].sum()
      for i in np.nonzero(batch["weight"])[0]:
        captions.append(len(captions))
        caption, pixels = reference_pixels[captions[-1]]
        np.testing.assert_array_equal(batch["input_ids"][i],
                                      fake_tokenizer([caption])["input_ids"][0])
        np.testing.assert_array_equal(batch["pixel_values"][i], pixels)
  assert weight == num and len(captions) == num  # file order, each pair once


def test_missing_image_names_list_line_and_path(lists, tmp_path):
  (tmp_path / "list.csv").write_text(f"image,caption\n{lists}/imgs/im0.png,fine\n"
                                     "gone.png,missing\n")
  config = make_config(lists, eval_file=str(tmp_path / "list.csv"))
  ds = image_text.make_eval_dataset(config, fake_tokenizer, batch_size=2, process_index=0,
                                    process_count=1)
  with pytest.raises(FileNotFoundError,
                     match=rf"list\.csv: line 3: {tmp_path}/gone\.png: no such image file"):
    list(ds)


def test_config_errors(lists):
  with pytest.raises(ValueError, match="data.image_size must be a positive int"):
    train(make_config(lists, image_size=0))
  with pytest.raises(ValueError, match="data.eval_file is .* but data.train_file is empty"):
    image_text.resolve_files(make_config(lists, train_file=""))
  with pytest.raises(ValueError, match="config key data.eval_file is empty"):
    image_text.make_eval_dataset(make_config(lists, eval_file=""), fake_tokenizer, batch_size=2,
                                 process_index=0, process_count=1)


# ------------------------------------------------------------------------------------------
# Synthetic pairs.


def nearest(colour, palette):
  return min(palette, key=lambda name: np.abs(np.array(palette[name]) - colour).sum())


def test_synthetic_pairs_resolve_reuse_and_content(tmp_path):
  config = make_config("", train_file="", eval_file="",
                       synthetic=dict(directory=str(tmp_path / "cache"), num_train=24,
                                      num_eval=6, seed=5, image_size=40))
  logs = []
  train_file, eval_file = image_text.resolve_files(config, log=logs.append)
  directory = os.path.dirname(train_file)
  assert os.listdir(tmp_path / "cache") == [os.path.basename(directory)]  # no temp dirs left
  assert train_file.endswith(".csv") and eval_file.endswith(".jsonl")
  assert any("ready in" in m for m in logs)
  mtime = os.stat(train_file).st_mtime_ns
  logs = []
  assert image_text.resolve_files(config, log=logs.append) == (train_file, eval_file)
  assert logs == [f"synthetic image-text: reusing {directory}"]
  assert os.stat(train_file).st_mtime_ns == mtime
  # The same settings give the same content; the caption follows from the pixels.
  other = image_text.write_synthetic_pairs(tmp_path / "again", num_train=24, num_eval=6,
                                           image_size=40, seed=5, log=lambda m: None)
  assert open(other[0]).read() == open(train_file).read()
  pairs = image_text.read_pairs(train_file) + image_text.read_pairs(eval_file)
  assert len(pairs) == 30
  for path, caption in pairs:
    pixels = np.asarray(Image.open(path), np.float64)
    assert pixels.shape == (40, 50, 3)
    background = np.median(pixels[:, :4].reshape(-1, 3), 0)
    shape = pixels[np.abs(pixels - background).sum(-1) > 50].mean(0)
    words = caption.replace(",", "").split()
    assert nearest(shape, image_text.COLOURS) in words
    assert any(s in words for s in image_text.SHAPES)
    if "background" in words or "on" in words:
      assert nearest(background, image_text.BACKGROUNDS) in words
  # The pipelines run on it with the configured (different) image size.
  ds = train(dict(config, train_file=train_file))
  assert take(ds, 1)[0]["pixel_values"].shape == (4, SIZE, SIZE, 3)
