"""Tests for mmjax.data.labelled_video (MER-layout labelled clips) and mmjax.data.sharded_stream."""

import colorsys
import json
import os

import grain
import numpy as np
import pytest
from helpers.batches import assert_batches_equal, take
from PIL import Image

from mmjax.data import images, labelled_video, sharded_stream

SIZE = 32
NUM_FRAMES = 3
CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")


# ------------------------------------------------------------------------------------------
# Sharded streams.


@pytest.mark.parametrize("process_count", [2, 3])
def test_train_stream_global_batches(process_count):
  entries = np.arange(10, dtype=np.int64) * 7
  block = 2
  streams = [sharded_stream.train_stream(entries, seed=1, process_index=p,
                                         process_count=process_count, batch_size=block)
             for p in range(process_count)]
  single = sharded_stream.train_stream(entries, seed=1, process_index=0, process_count=1,
                                       batch_size=block * process_count)
  for b in range(12):
    joined = [int(streams[p][b * block + k]) for p in range(process_count) for k in range(block)]
    assert joined == [int(single[b * block * process_count + k])
                      for k in range(block * process_count)]
  epochs = [[int(single[e * 10 + k]) for k in range(10)] for e in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == entries.tolist() and epochs[0] != epochs[1]


def test_eval_entries_pads_every_process_equally():
  entries = np.arange(14, dtype=np.int64).reshape(7, 2)
  parts = [sharded_stream.eval_entries(entries, batch_size=2, process_index=p, process_count=3)
           for p in range(3)]
  assert [p[1:] for p in parts] == [(2, 7)] * 3  # ceil(ceil(7 / 3) / 2) batches each
  np.testing.assert_array_equal(parts[0][0], [[0, 1], [2, 3], [4, 5], [-1, -1]])
  np.testing.assert_array_equal(parts[2][0], [[12, 13], [-1, -1], [-1, -1], [-1, -1]])
  padded, num_batches, num = sharded_stream.eval_entries(entries[:, 0], batch_size=4,
                                                         process_index=1, process_count=2,
                                                         max_examples=5)
  assert (num_batches, num) == (1, 5) and padded.tolist() == [6, 8, -1, -1]


# ------------------------------------------------------------------------------------------
# Frames.


def test_sample_frame_indices():
  f = labelled_video.sample_frame_indices
  assert f(10, 5).tolist() == [1, 3, 5, 7, 9]
  assert f(2, 4).tolist() == [0, 0, 1, 1]
  assert f(1, 3).tolist() == [0, 0, 0]
  assert f(6, 6).tolist() == list(range(6))
  assert f(7, 3).tolist() == [1, 3, 5]
  for t in range(1, 30):
    for n in range(1, 12):  # the centre of segment k of T/F frames, floored
      assert f(t, n).tolist() == [int(np.floor((k + 0.5) * t / n)) for k in range(n)]
  with pytest.raises(ValueError, match="at least one frame"):
    f(0, 4)


def make_frames(num_frames, seed):
  return np.random.default_rng(seed).integers(0, 256, (num_frames, 36, 44, 3), dtype=np.uint8)


def save_clip(frames_dir, name, frames, as_npy):
  os.makedirs(frames_dir, exist_ok=True)
  if as_npy:
    np.save(os.path.join(frames_dir, f"{name}.npy"), frames)
  else:
    os.makedirs(os.path.join(frames_dir, name))
    for t, frame in enumerate(frames):  # names sort in time order; other files are ignored
      Image.fromarray(frame).save(os.path.join(frames_dir, name, f"img_{t:04d}.png"))
    open(os.path.join(frames_dir, name, "notes.txt"), "w").close()


def test_npy_and_directory_clips_load_the_same(tmp_path):
  frames = make_frames(7, seed=0)
  save_clip(tmp_path, "a", frames, as_npy=True)
  save_clip(tmp_path, "b", frames, as_npy=False)
  npy, directory = (labelled_video.find_frames(str(tmp_path), n) for n in "ab")
  assert npy == str(tmp_path / "a.npy") and directory == str(tmp_path / "b")
  expected = np.stack([images.preprocess_array(frames[t], SIZE) for t in (0, 2, 4, 6)])
  for path in (npy, directory):
    clip = labelled_video.load_clip(path, 4, SIZE)  # 7 frames, 4 segments: 0, 2, 4, 6
    assert clip.shape == (4, SIZE, SIZE, 3) and clip.dtype == np.float32
    np.testing.assert_array_equal(clip, expected)
  with pytest.raises(FileNotFoundError, match=rf"clip 'c': no frames: neither {tmp_path}/c\.npy "
                     rf"nor the directory {tmp_path}/c/ exists"):
    labelled_video.find_frames(str(tmp_path), "c")
  np.save(tmp_path / "bad.npy", np.zeros((3, 4, 4), np.uint8))
  with pytest.raises(ValueError, match=r"bad\.npy: expected uint8 \[T, H, W, 3\]"):
    labelled_video.load_clip(str(tmp_path / "bad.npy"), 2, SIZE)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match="empty: no image files"):
    labelled_video.load_clip(str(tmp_path / "empty"), 2, SIZE)


# ------------------------------------------------------------------------------------------
# Labels.


def test_read_labels_mer_format(tmp_path):
  (tmp_path / "label.csv").write_text("name,discrete,valence\nsample_1,happy,1.5\n"
                                      "sample_2, Sad ,-2\nsample_3,neutral,0\n")
  assert labelled_video.read_labels(str(tmp_path / "label.csv"), CLASSES) == [
      ("sample_1", 2), ("sample_2", 3), ("sample_3", 0)]
  (tmp_path / "bad.csv").write_text("name,discrete\nx,happy\ny,bored\n")
  with pytest.raises(ValueError, match=r"bad\.csv: line 3: clip 'y' has unknown label 'bored'; "
                     r"data.class_names are \['neutral', 'angry'"):
    labelled_video.read_labels(str(tmp_path / "bad.csv"), CLASSES)
  (tmp_path / "cols.csv").write_text("name,valence\nx,1\n")
  with pytest.raises(ValueError, match=r"cols\.csv: line 1: missing column\(s\) \['discrete'\]"):
    labelled_video.read_labels(str(tmp_path / "cols.csv"), CLASSES)
  with pytest.raises(ValueError, match="data.class_names is empty"):
    labelled_video.read_labels(str(tmp_path / "label.csv"), ())


# ------------------------------------------------------------------------------------------
# Pipelines.

NUM_TRAIN, NUM_EVAL = 8, 5


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """A MER-layout directory: labels CSVs, frames/ with half .npy and half frame directories."""
  directory = tmp_path_factory.mktemp("mer")
  rng = np.random.default_rng(0)
  for split, num in (("train", NUM_TRAIN), ("eval", NUM_EVAL)):
    rows = ["name,discrete,valence"]
    for i in range(num):
      name = f"{split}_{i:02d}"
      frames = make_frames(int(rng.integers(1, 6)), seed=100 * (split == "eval") + i)
      save_clip(str(directory / "frames"), name, frames, as_npy=i % 2 == 0)
      rows.append(f"{name},{CLASSES[i % len(CLASSES)]},0.0")
    (directory / f"{split}.csv").write_text("\n".join(rows) + "\n")
  return str(directory)


def make_config(directory, **overrides):
  config = dict(train_labels=os.path.join(directory, "train.csv"),
                eval_labels=os.path.join(directory, "eval.csv"), frames_dir="frames",
                class_names=CLASSES, num_frames=NUM_FRAMES, image_size=SIZE, num_threads=2,
                prefetch_batches=2, eval_max_examples=0)
  config.update(overrides)
  return config


def train(config, batch_size=4, seed=0, process_index=0, process_count=1):
  return labelled_video.make_train_dataset(config, batch_size=batch_size, seed=seed,
                                           process_index=process_index,
                                           process_count=process_count)


def reference_clips(directory, split):
  labels = labelled_video.read_labels(os.path.join(directory, f"{split}.csv"), CLASSES)
  return [(labelled_video.load_clip(labelled_video.find_frames(
      os.path.join(directory, "frames"), name), NUM_FRAMES, SIZE), label)
          for name, label in labels]


def test_train_batches(clips):
  ds = train(make_config(clips))
  assert isinstance(ds, grain.IterDataset) and ds.num_records == NUM_TRAIN
  batches = take(ds, 2)  # one epoch
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {
      "pixel_values": ((4, NUM_FRAMES, SIZE, SIZE, 3), np.float32), "label": ((4,), np.int32),
      "weight": ((4,), np.float32)}
  expected = reference_clips(clips, "train")
  seen = []
  for batch in batches:
    assert (batch["weight"] == 1).all()
    for pixels, label in zip(batch["pixel_values"], batch["label"]):
      (index,) = [i for i, (p, _) in enumerate(expected) if np.array_equal(p, pixels)]
      assert expected[index][1] == label
      seen.append(index)
  assert sorted(seen) == list(range(NUM_TRAIN))


def test_train_determinism_resume_and_processes(clips):
  config = make_config(clips)
  first = take(train(config, seed=2), 4)
  assert_batches_equal(first, take(train(make_config(clips, num_threads=0), seed=2), 4))
  it = iter(train(config, seed=2))
  take(it, 1)
  state = it.get_state()
  json.dumps(state)
  resumed = iter(train(config, seed=2))
  resumed.set_state(state)
  assert_batches_equal(first[1:], take(resumed, 3))
  parts = [take(train(config, batch_size=2, seed=2, process_index=p, process_count=2), 4)
           for p in range(2)]
  for b, batch in enumerate(first):
    for key in batch:
      np.testing.assert_array_equal(batch[key],
                                    np.concatenate([parts[0][b][key], parts[1][b][key]]))


@pytest.mark.parametrize("process_count,batch_size,max_examples", [(1, 2, 0), (2, 2, 0),
                                                                    (3, 4, 4)])
def test_eval_padding_and_batch_counts(clips, process_count, batch_size, max_examples):
  config = make_config(clips, eval_max_examples=max_examples)
  num = max_examples or NUM_EVAL
  expected = reference_clips(clips, "eval")[:num]
  got = []
  for p in range(process_count):
    ds = labelled_video.make_eval_dataset(config, batch_size=batch_size, process_index=p,
                                          process_count=process_count)
    batches = list(ds)
    assert len(batches) == ds.num_batches == sharded_stream.eval_num_batches(
        num, batch_size, process_count)
    assert ds.num_examples == num
    for batch in batches:
      assert batch["pixel_values"].shape == (batch_size, NUM_FRAMES, SIZE, SIZE, 3)
      pad = batch["weight"] == 0
      assert not batch["pixel_values"][pad].any() and not batch["label"][pad].any()
      got += [(batch["pixel_values"][i], batch["label"][i]) for i in np.nonzero(~pad)[0]]
  assert len(got) == num
  for (pixels, label), (want_pixels, want_label) in zip(got, expected):  # file order
    np.testing.assert_array_equal(pixels, want_pixels)
    assert label == want_label


def test_missing_frames_error_names_clip_and_paths(clips, tmp_path):
  (tmp_path / "labels.csv").write_text("name,discrete,valence\nghost,happy,0\n")
  config = make_config(clips, eval_labels=str(tmp_path / "labels.csv"),
                       frames_dir=os.path.join(clips, "frames"))
  ds = labelled_video.make_eval_dataset(config, batch_size=2, process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match=rf"labels\.csv: line 2: clip 'ghost': no frames: "
                     rf"neither {clips}/frames/ghost\.npy nor the directory {clips}/frames/ghost/"):
    list(ds)


def test_config_errors(clips):
  with pytest.raises(ValueError, match="data.num_frames must be a positive int"):
    train(make_config(clips, num_frames=0))
  with pytest.raises(ValueError, match="data.eval_labels is .* but data.train_labels is empty"):
    labelled_video.resolve_files(make_config(clips, train_labels=""))
  with pytest.raises(ValueError, match="data.frames_dir is 'x' but the synthetic clips"):
    labelled_video.resolve_files(make_config(clips, train_labels="", eval_labels="",
                                             frames_dir="x"))


# ------------------------------------------------------------------------------------------
# Synthetic clips.


def test_synthetic_clips_resolve_reuse_and_content(tmp_path):
  config = make_config("", train_labels="", eval_labels="", frames_dir="",
                       synthetic=dict(directory=str(tmp_path / "cache"), num_train=18,
                                      num_eval=6, seed=1, min_frames=2, max_frames=5,
                                      image_size=24))
  logs = []
  train_file, eval_file = labelled_video.resolve_files(config, log=logs.append)
  directory = os.path.dirname(train_file)
  assert os.listdir(tmp_path / "cache") == [os.path.basename(directory)]
  assert any("ready in" in m for m in logs)
  logs = []
  assert labelled_video.resolve_files(config, log=logs.append) == (train_file, eval_file)
  assert logs == [f"synthetic labelled clips: reusing {directory}"]
  assert open(train_file).readline().strip() == "name,discrete,valence"
  frames_dir = os.path.join(directory, labelled_video.FRAMES_DIR)
  labels = labelled_video.read_labels(train_file, CLASSES)
  assert len(labels) == 18 and len(labelled_video.read_labels(eval_file, CLASSES)) == 6
  kinds = [labelled_video.find_frames(frames_dir, n).endswith(".npy") for n, _ in labels]
  assert kinds == [i % 2 == 0 for i in range(18)]  # half .npy, half frame directories
  for name, label in labels:  # the disc's hue is the class's
    path = labelled_video.find_frames(frames_dir, name)
    frames = (np.load(path) if path.endswith(".npy") else
              np.stack([np.asarray(Image.open(os.path.join(path, f)))
                        for f in sorted(os.listdir(path))]))
    assert frames.shape[1:] == (24, 32, 3) and 2 <= len(frames) <= 5
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255
    saturated = pixels[pixels.max(-1) - pixels.min(-1) > 0.5]
    hue = np.median([colorsys.rgb_to_hsv(*p)[0] for p in saturated])
    distance = abs((hue - label / len(CLASSES) + 0.5) % 1 - 0.5)
    assert distance < 0.06, (name, label, hue)
  ds = labelled_video.make_eval_dataset(config, batch_size=4, process_index=0, process_count=1)
  batches = list(ds)
  assert len(batches) == 2 and batches[0]["pixel_values"].shape == (4, NUM_FRAMES, SIZE, SIZE, 3)
