"""Tests for mmjax.data.youtube8m: parsing real-format YouTube-8M records without TensorFlow.

Records are built here directly with the tfds copies of the TF protos (independent of the
synthetic writer).
"""

import re

import jax
import numpy as np
import pytest
from conftest import load_config
from tensorflow_datasets.proto import tf_example_generated_pb2 as tf_example

from mmjax.data import tfrecord, youtube8m
from mmjax.data.tfrecord import RecordError
from mmjax.data.youtube8m import RecordSpec, dequantize, read_frame_records, read_records
from mmjax.projects.youtube8m.model import dequantize_frames


def frame_record(video_id=b"abcd", labels=(3, 7), rgb=None, audio=None, id_key="id",
                 labels_key="labels", num_frames=5, rgb_size=1024, audio_size=128, seed=0):
  """A frame-level SequenceExample as in the YouTube-8M release; rgb/audio: uint8 [T, D]."""
  rng = np.random.default_rng(seed)
  if rgb is None:
    rgb = rng.integers(0, 256, (num_frames, rgb_size), dtype=np.uint8)
  if audio is None:
    audio = rng.integers(0, 256, (num_frames, audio_size), dtype=np.uint8)
  seq = tf_example.SequenceExample()
  if id_key:
    seq.context.feature[id_key].bytes_list.value.append(video_id)
  if labels_key:
    seq.context.feature[labels_key].int64_list.value.extend(labels)
  for name, frames in (("rgb", rgb), ("audio", audio)):
    if frames is False:
      continue
    fl = seq.feature_lists.feature_list[name]
    for frame in frames:
      fl.feature.add().bytes_list.value.append(bytes(frame))
  return seq.SerializeToString(), rgb, audio


def video_record(video_id=b"vid1", labels=(1,), mean_rgb=None, mean_audio=None):
  rng = np.random.default_rng(1)
  mean_rgb = rng.normal(size=1024).astype(np.float32) if mean_rgb is None else mean_rgb
  mean_audio = rng.normal(size=128).astype(np.float32) if mean_audio is None else mean_audio
  ex = tf_example.Example()
  ex.features.feature["id"].bytes_list.value.append(video_id)
  ex.features.feature["labels"].int64_list.value.extend(labels)
  ex.features.feature["mean_rgb"].float_list.value.extend(mean_rgb.tolist())
  ex.features.feature["mean_audio"].float_list.value.extend(mean_audio.tolist())
  return ex.SerializeToString(), mean_rgb, mean_audio


def write(tmp_path, name, records):
  path = str(tmp_path / name)
  tfrecord.write_tfrecord(path, records)
  return path


def test_dequantize_matches_starter_code():
  q = np.array([0, 1, 128, 254, 255], np.uint8)
  x = dequantize(q)
  assert x.dtype == np.float32
  # Starter code: feat * (4 / 255) + (4 / 512 - 2), in float32.
  expected = q.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)
  np.testing.assert_array_equal(x, expected)
  assert x[0] == np.float32(-2 + 4 / 512) == np.float32(-1.9921875)
  assert x[-1] == np.float32(np.float32(255) * np.float32(4 / 255) + np.float32(-1.9921875))
  np.testing.assert_allclose(x[-1], 2 + 4 / 512, atol=1e-6)  # 2.0078125, not 2
  np.testing.assert_allclose(x, q.astype(np.float64) * 4 / 255 + 4 / 512 - 2, atol=1e-6)
  # quantize is the release quantizer; dequantize is not its exact inverse (+4/512 offset).
  values = np.linspace(-2, 2, 101, dtype=np.float32)
  err = dequantize(youtube8m.quantize(values)) - values
  assert np.abs(err - 4 / 512).max() <= 2 / 255 + 1e-6
  assert youtube8m.quantize(np.array([-5.0, 5.0])).tolist() == [0, 255]


def test_read_frame_records(tmp_path):
  r0, rgb0, audio0 = frame_record(b"vid0", (5, 1), num_frames=4, seed=0)
  r1, rgb1, audio1 = frame_record(b"vid1", (3861,), num_frames=7, seed=1)
  write(tmp_path, "train-00001.tfrecord", [r1])
  write(tmp_path, "train-00000.tfrecord", [r0])
  out = list(read_frame_records(str(tmp_path / "train-*.tfrecord")))
  assert [o["id"] for o in out] == ["vid0", "vid1"]  # sorted file order
  assert sorted(out[0]) == ["audio", "id", "labels", "rgb"]
  np.testing.assert_array_equal(out[0]["labels"], [5, 1])
  assert out[0]["labels"].dtype == np.int64
  assert out[0]["rgb"].shape == (4, 1024) and out[0]["rgb"].dtype == np.float32
  assert out[1]["audio"].shape == (7, 128)
  np.testing.assert_array_equal(out[0]["rgb"], dequantize(rgb0))
  np.testing.assert_array_equal(out[1]["audio"], dequantize(audio1))
  # A list of paths works too.
  assert len(list(read_frame_records([str(tmp_path / "train-00001.tfrecord")]))) == 1


def test_2017_video_id_and_cropping(tmp_path):
  rec, rgb, _ = frame_record(b"old", (4715,), id_key="video_id", num_frames=320)
  path = write(tmp_path, "2017.tfrecord", [rec])
  (out,) = read_frame_records(path, id_key="video_id", num_classes=4716)
  assert out["id"] == "old" and out["rgb"].shape == (300, 1024) and out["audio"].shape == (300, 128)
  np.testing.assert_array_equal(out["rgb"], dequantize(rgb[:300]))
  (out,) = read_frame_records(path, id_key="video_id", num_classes=4716, max_frames=10)
  assert out["rgb"].shape == (10, 1024)


def test_modalities_of_different_length_use_min(tmp_path):
  rng = np.random.default_rng(0)
  rec, _, _ = frame_record(rgb=rng.integers(0, 256, (6, 1024), dtype=np.uint8),
                           audio=rng.integers(0, 256, (4, 128), dtype=np.uint8))
  (out,) = read_frame_records(write(tmp_path, "x.tfrecord", [rec]))
  assert out["rgb"].shape == (4, 1024) and out["audio"].shape == (4, 128)


def test_video_level(tmp_path):
  rec, mean_rgb, mean_audio = video_record(labels=(0, 2))
  path = write(tmp_path, "video.tfrecord", [rec])
  spec = RecordSpec(level="video", feature_names=("mean_rgb", "mean_audio"))
  assert spec.output_names == ("rgb", "audio") and spec.num_frames == 1
  (out,) = read_records(path, spec)
  assert out["id"] == "vid1"
  np.testing.assert_array_equal(out["rgb"], mean_rgb[None])  # no dequantization
  np.testing.assert_array_equal(out["audio"], mean_audio[None])
  batch = spec.collate([spec.parse_raw(rec), None])
  assert batch["rgb"].shape == (2, 1, 1024) and batch["mask"].tolist() == [[1.0], [0.0]]
  np.testing.assert_array_equal(batch["labels"][0].nonzero()[0], [0, 2])
  # Frame-level spec on a video-level record: the error hints at data.level.
  with pytest.raises(RecordError, match=r"video\.tfrecord: record 0: missing feature list 'rgb'"
                     r".*level=video"):
    list(read_frame_records(path))
  rec, _, _ = video_record(mean_rgb=np.zeros(1000, np.float32))
  with pytest.raises(RecordError,
                     match="record 0: feature 'mean_rgb' has 1000 floats, expected 1024"):
    list(read_records(write(tmp_path, "bad.tfrecord", [rec]), spec))


def test_spec_from_config():
  config = load_config("ytb8m")
  spec = RecordSpec.from_config(config.data)
  assert spec == RecordSpec()
  config.data.level = "video"
  config.data.feature_names = ("mean_rgb", "mean_audio")
  assert RecordSpec.from_config(config.data).output_names == ("rgb", "audio")
  with pytest.raises(ValueError, match="level"):
    RecordSpec(level="clip")
  with pytest.raises(ValueError, match="equal length"):
    RecordSpec(feature_names=("rgb",))


def test_collate_pads_and_keeps_frames_quantized():
  spec = RecordSpec(feature_sizes=(6, 2), num_classes=10, max_frames=4)
  rng = np.random.default_rng(0)
  examples = []
  for t in (2, 4):
    rec, _, _ = frame_record(labels=(t, 9), rgb=rng.integers(0, 256, (t + 1, 6), dtype=np.uint8),
                             audio=rng.integers(0, 256, (t + 1, 2), dtype=np.uint8))
    examples.append(spec.parse_raw(rec))
  batch = spec.collate(examples + [None])
  assert {k: v.shape for k, v in batch.items()} == {
      "rgb": (3, 4, 6), "audio": (3, 4, 2), "mask": (3, 4), "labels": (3, 10), "weight": (3,)}
  assert {k: v.dtype for k, v in batch.items()} == {
      "rgb": np.uint8, "audio": np.uint8, "mask": np.float32, "labels": np.float32,
      "weight": np.float32}
  assert batch["mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
  assert batch["weight"].tolist() == [1, 1, 0]
  np.testing.assert_array_equal(batch["labels"][1].nonzero()[0], [4, 9])
  np.testing.assert_array_equal(batch["rgb"][0, :3], examples[0]["features"]["rgb"])
  assert not batch["rgb"][0, 3:].any() and not batch["audio"][2].any()
  np.testing.assert_array_equal(batch["audio"][1], examples[1]["features"]["audio"][:4])
  # Inside the step the model sees the starter code's float32 values, zero at padding.
  rgb = np.asarray(dequantize_frames(batch["rgb"], batch["mask"]))
  assert rgb.dtype == np.float32
  np.testing.assert_array_equal(rgb[0, :3], dequantize(examples[0]["features"]["rgb"]))
  assert not rgb[0, 3:].any() and not rgb[2].any()


def test_device_dequantization_is_bit_identical_to_the_starter_code():
  q = np.arange(256, dtype=np.uint8).reshape(1, 256, 1)
  mask = np.ones((1, 256), np.float32)
  expected = q.astype(np.float32) * np.float32(4.0 / 255.0) + np.float32(4.0 / 512.0 - 2.0)
  got = jax.jit(dequantize_frames)(q, mask)
  np.testing.assert_array_equal(np.asarray(got), expected)
  floats = np.ones((1, 2, 3), np.float32)  # video level: already float, passed through
  assert dequantize_frames(floats, mask[:, :2]) is floats


def test_non_canonical_frames_fall_back(tmp_path):
  # A frame stored as two bytes values is rejected by the exact (slow) path.
  seq = tf_example.SequenceExample.FromString(frame_record(num_frames=3)[0])
  seq.feature_lists.feature_list["audio"].feature[1].bytes_list.value.append(b"\x00")
  path = write(tmp_path, "x.tfrecord", [seq.SerializeToString()])
  with pytest.raises(RecordError, match="feature list 'audio' frame 1: 2 bytes values"):
    list(read_frame_records(path))


BAD_CASES = {
    "missing_id": (dict(id_key="video_id"),
                   r"missing context feature 'id' .*\['labels', 'video_id'\]"),
    "missing_labels": (dict(labels_key=None), r"missing context feature 'labels'"),
    "missing_rgb": (dict(rgb=False),
                    r"missing feature list 'rgb'; the record has feature lists \['audio'\]"),
    "frame_length": (dict(rgb=np.zeros((3, 1000), np.uint8)),
                     r"feature list 'rgb' frame 0: 1000 bytes, expected 1024"),
    "label_too_big": (dict(labels=(2, 3862)),
                      r"label 3862 in 'labels' is out of range \[0, 3862\)"),
    "label_negative": (dict(labels=(-1,)), r"label -1 in 'labels' is out of range"),
    "no_frames": (dict(num_frames=0), r"no frames"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_records_name_file_and_index(tmp_path, case):
  kwargs, message = BAD_CASES[case]
  good = frame_record()[0]
  bad = frame_record(**kwargs)[0]
  path = write(tmp_path, f"{case}.tfrecord", [good, bad, good])
  with pytest.raises(RecordError, match=rf"{case}\.tfrecord: record 1: {message}"):
    list(read_frame_records(path))
  counter = tfrecord.SkipCounter()
  out = list(read_records(path, RecordSpec(), skip_counter=counter))
  assert len(out) == 2 and counter.count == 1
  assert counter.examples[0].startswith(f"{path}: record 1: ")


def test_undecodable_record(tmp_path):
  path = write(tmp_path, "garbage.tfrecord", [frame_record()[0], b"\xff\xff\xff\xff"])
  with pytest.raises(RecordError, match=r"garbage\.tfrecord: record 1: cannot parse as "
                     r"tf\.train\.SequenceExample"):
    list(read_frame_records(path))


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing-here"):
    list(read_frame_records(str(tmp_path / "nothing-here*.tfrecord")))


def test_truncated_and_corrupt_files(tmp_path):
  records = [frame_record(seed=i)[0] for i in range(3)]
  path = write(tmp_path, "t.tfrecord", records)
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:-10])
  with pytest.raises(RecordError, match=r"t\.tfrecord: record 2: truncated file"):
    list(read_frame_records(path))
  counter = tfrecord.SkipCounter()
  assert len(list(read_records(path, RecordSpec(), skip_counter=counter))) == 2
  assert counter.count == 1
  flipped = bytearray(data)
  flipped[len(records[0]) + 16 + 12 + 100] ^= 0xFF  # inside record 1's data
  with open(path, "wb") as f:
    f.write(bytes(flipped))
  with pytest.raises(RecordError, match=r"t\.tfrecord: record 1: data crc mismatch"):
    list(read_frame_records(path))


def _wire_variants():
  """Serializations of frame-level records that protobuf parses, each built differently from
  the plain layout, with the parse protobuf gives them: the wire scanner must agree or defer."""
  base = tf_example.SequenceExample.FromString(frame_record(num_frames=4, rgb_size=6,
                                                            audio_size=2)[0])
  context = base.context.SerializeToString()
  lists = base.feature_lists.SerializeToString()

  def field(number, payload):
    return bytes([number << 3 | 2]) + youtube8m._varint(len(payload)) + payload

  extra = tf_example.SequenceExample()
  extra.CopyFrom(base)
  extra.feature_lists.feature_list["other"].feature.add().int64_list.value.append(1)
  uneven = tf_example.SequenceExample()
  uneven.CopyFrom(base)
  uneven.feature_lists.feature_list["audio"].feature.pop()  # 4 rgb frames, 3 audio frames
  split = tf_example.SequenceExample()
  split.CopyFrom(base)
  split.feature_lists.feature_list["rgb"].feature[2].bytes_list.value[0] = b"\x01\x02\x03"
  split.feature_lists.feature_list["rgb"].feature[2].bytes_list.value.append(b"\x04\x05\x06")
  return {
      "plain": base.SerializeToString(),
      "lists first": field(2, lists) + field(1, context),
      "context twice (merged)": field(1, context) + field(2, lists) + field(1, context),
      "lists twice (merged)": field(1, context) + field(2, lists) + field(2, lists),
      "unknown field": field(1, context) + field(2, lists) + field(9, b"xyz"),
      "extra feature list": extra.SerializeToString(),
      "uneven lengths": uneven.SerializeToString(),
      "frame split in two values": split.SerializeToString(),
  }


@pytest.mark.parametrize("name", list(_wire_variants()))
def test_wire_scanner_agrees_with_protobuf(name):
  data = _wire_variants()[name]
  spec = RecordSpec(feature_sizes=(6, 2), num_classes=10, max_frames=3)
  try:
    expected = spec._parse_frame_protobuf(data, "f", 0)
  except RecordError as e:
    with pytest.raises(RecordError, match=re.escape(str(e).split(": ", 2)[-1])):
      spec.parse_raw(data, path="f", index=0)
    return
  got = spec.parse_raw(data, path="f", index=0)
  assert got["id"] == expected["id"]
  np.testing.assert_array_equal(got["labels"], expected["labels"])
  assert got["features"].keys() == expected["features"].keys()
  for key, value in expected["features"].items():
    assert got["features"][key].dtype == np.uint8
    np.testing.assert_array_equal(got["features"][key], value)


def test_wire_scanner_takes_the_fast_path_on_plain_records():
  spec = RecordSpec(feature_sizes=(6, 2), num_classes=10, max_frames=3)
  data = _wire_variants()["plain"]
  fast = spec._parse_frame_wire(data, "f", 0)
  assert fast is not None and fast["features"]["rgb"].shape == (3, 6)
  assert fast["features"]["rgb"].base is not None  # a view of the record, not a copy
  for name in ("lists twice (merged)", "unknown field", "frame split in two values"):
    assert spec._parse_frame_wire(_wire_variants()[name], "f", 0) is None, name
