"""YouTube-8M records: parsing, (de)quantization and batching, without TensorFlow.

Formats (google/youtube-8m starter code):

* Frame level: `tf.train.SequenceExample`; context `id` (bytes; 2017 data: `video_id`) and
  `labels` (int64 list); feature lists `rgb` and `audio`, one bytes value per frame holding
  1024 / 128 quantized uint8 values; 1 frame per second, at most the first 300 s.
* Video level: `tf.train.Example` with `id`, `labels`, `mean_rgb` (1024 floats) and
  `mean_audio` (128 floats), already float: no dequantization.

One `RecordSpec` (built from `config.data`) holds the parsing settings, so the grain pipeline
and `read_frame_records` share a single parser.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterator, Sequence

import numpy as np
from google.protobuf import message as protobuf_message
from tensorflow_datasets.proto import tf_example_generated_pb2 as tf_example
from tensorflow_datasets.proto import tf_feature_generated_pb2 as tf_feature

from mmjax.data import tfrecord
from mmjax.data.buffers import BufferPool
from mmjax.data.tfrecord import RecordError

# Starter code `utils.Dequantize(feat, max_quantized_value=2, min_quantized_value=-2)`.
_DEQUANT_SCALE = np.float32(4.0 / 255.0)
_DEQUANT_BIAS = np.float32(4.0 / 512.0 - 2.0)


def dequantize(q: np.ndarray) -> np.ndarray:
  """Dequantizes YouTube-8M uint8 features exactly as the starter code does.

  `x = q * 4/255 + 4/512 - 2`, computed in float32 (the +4/512 offset is not an exact
  inverse of `quantize`; kept because users compare numbers with the starter code).

  Args:
    q: quantized features, any shape (e.g. uint8 [frames, dim]).

  Returns:
    float32 array of the same shape.
  """
  return np.asarray(q).astype(np.float32) * _DEQUANT_SCALE + _DEQUANT_BIAS


def quantize(x: np.ndarray) -> np.ndarray:
  """Quantizes features like the YouTube-8M release: `q = round((clip(x, -2, 2) + 2) * 255/4)`.

  Args:
    x: float features, any shape.

  Returns:
    uint8 array of the same shape.
  """
  x = np.clip(np.asarray(x, np.float32), -2.0, 2.0)  # a new array: updated in place below
  x += np.float32(2.0)
  x *= np.float32(255.0 / 4.0)
  return np.rint(x, out=x).astype(np.uint8)


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


@functools.lru_cache(maxsize=None)
def _frame_header(size: int) -> np.ndarray:
  """Wire bytes before each frame's data in a serialized FeatureList whose every frame is one
  bytes value of `size` bytes: Feature tag, len, BytesList tag, len, value tag, len."""
  value = b"\x0a" + _varint(size)
  bytes_list = b"\x0a" + _varint(len(value) + size) + value
  feature = b"\x0a" + _varint(len(bytes_list) + size) + bytes_list
  return np.frombuffer(feature, np.uint8)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  """(value, position after it) of the protobuf varint at `data[pos]`; IndexError past the
  end."""
  value = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
    if shift > 63:
      raise IndexError("varint longer than 10 bytes")


def _length_delimited(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
  """(tag, start, stop) of the length-delimited field at `data[pos]` within `end`, or None
  unless the field has wire type 2 and fits."""
  tag, pos = _read_varint(data, pos)
  if tag & 7 != 2:
    return None
  length, pos = _read_varint(data, pos)
  stop = pos + length
  return (tag, pos, stop) if stop <= end else None


_Span = tuple[int, int]  # (start, stop) byte positions


def _scan_sequence_example(data: bytes) -> tuple[_Span, dict[str, _Span]] | None:
  """Locates the parts of a serialized SequenceExample without decoding it.

  Wire layout (tensorflow/core/example/example.proto): SequenceExample {1: context Features,
  2: feature_lists FeatureLists}; FeatureLists {1: repeated map entry {1: key, 2: FeatureList}}.

  Returns:
    ((start, stop) of the context's bytes, {feature list name: (start, stop) of its FeatureList
    bytes}), or None for anything but the plain layout (an unknown or repeated field, a repeated
    key, a map entry out of order): the caller then parses the record with protobuf, which
    applies the merge rules and names what is wrong.
  """
  try:
    context = lists = None
    pos, end = 0, len(data)
    while pos < end:
      field = _length_delimited(data, pos, end)
      if field is None:
        return None
      tag, start, pos = field
      if tag == 0x0A and context is None:
        context = (start, pos)
      elif tag == 0x12 and lists is None:
        lists = (start, pos)
      else:
        return None
    found = {}
    if lists is not None:
      pos, end = lists
      while pos < end:
        entry = _length_delimited(data, pos, end)
        if entry is None or entry[0] != 0x0A:
          return None
        _, pos, entry_end = entry
        key = _length_delimited(data, pos, entry_end)
        value = key and _length_delimited(data, key[2], entry_end)
        if not value or key[0] != 0x0A or value[0] != 0x12 or value[2] != entry_end:
          return None
        name = data[key[1]:key[2]].decode("utf-8")
        if name in found:
          return None
        found[name] = value[1:]
        pos = entry_end
    return (context or (0, 0)), found
  except (IndexError, UnicodeDecodeError):
    return None


def _canonical_frames(data: bytes, start: int, stop: int, size: int) -> np.ndarray | None:
  """uint8 [frames, size]: a view of the frames of the FeatureList at `data[start:stop]` when
  every frame is exactly one bytes value of `size` bytes (then the bytes are `frames x (header +
  data)` with one fixed header, checked vectorized for every frame), else None."""
  header = _frame_header(size)
  row = len(header) + size
  if (stop - start) % row:
    return None
  rows = np.frombuffer(data, np.uint8, count=stop - start, offset=start).reshape(-1, row)
  if not (rows[:, :len(header)] == header).all():
    return None
  return rows[:, len(header):]


def _parse_message(message_class, data: bytes, path: str, index: int):
  """`data` parsed as a `tf.train.<message_class>` (Example or SequenceExample); RecordError
  naming the record if it is not one."""
  message = message_class()
  try:
    message.ParseFromString(data)
  except protobuf_message.DecodeError as e:
    raise RecordError(path, index,
                      f"cannot parse as tf.train.{message_class.__name__} ({e})") from None
  return message


DEQUANTIZATION_TABLE = dequantize(np.arange(256, dtype=np.uint8))  # float32 [256]: q -> value
_LEVELS = ("frame", "video")


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """How to parse and batch YouTube-8M records; built from `config.data` by `from_config`.

  Attributes:
    level: 'frame' (SequenceExample with per-frame uint8 features) or 'video'
      (Example with per-video float features).
    id_key: context/feature key of the video id ('id' in 2018 v2 data, 'video_id' in 2017).
    labels_key: key of the int64 label list.
    feature_names: feature lists (frame level, e.g. ('rgb', 'audio')) or float features
      (video level, e.g. ('mean_rgb', 'mean_audio')).
    feature_sizes: dimension of each feature, e.g. (1024, 128).
    num_classes: labels must lie in [0, num_classes) (3862 in 2018 v2, 4716 in 2017).
    max_frames: frames kept per video (the first ones); batches are padded to it.
  """

  level: str = "frame"
  id_key: str = "id"
  labels_key: str = "labels"
  feature_names: tuple[str, ...] = ("rgb", "audio")
  feature_sizes: tuple[int, ...] = (1024, 128)
  num_classes: int = 3862
  max_frames: int = 300

  def __post_init__(self):
    names = self.feature_names
    if isinstance(names, str):
      names = tuple(n.strip() for n in names.split(",") if n.strip())
    object.__setattr__(self, "feature_names", tuple(str(n) for n in names))
    object.__setattr__(self, "feature_sizes", tuple(int(s) for s in self.feature_sizes))
    if self.level not in _LEVELS:
      raise ValueError(f"data.level must be one of {_LEVELS}, got {self.level!r}")
    if len(self.feature_names) != len(self.feature_sizes) or not self.feature_names:
      raise ValueError(f"data.feature_names {self.feature_names} and data.feature_sizes "
                       f"{self.feature_sizes} must be non-empty and of equal length")
    if len(set(self.output_names)) != len(self.output_names):
      raise ValueError(f"data.feature_names {self.feature_names} give duplicate batch keys "
                       f"{self.output_names}")
    if self.num_classes <= 0 or self.max_frames <= 0:
      raise ValueError(f"data.num_classes ({self.num_classes}) and data.max_frames "
                       f"({self.max_frames}) must be positive")

  @classmethod
  def from_config(cls, data_config: Any) -> "RecordSpec":
    """Builds the spec from `config.data` (keys level, id_key, labels_key, num_classes,
    feature_names, feature_sizes, max_frames)."""
    return cls(
        level=str(data_config.level),
        id_key=str(data_config.id_key),
        labels_key=str(data_config.labels_key),
        feature_names=data_config.feature_names,
        feature_sizes=tuple(data_config.feature_sizes),
        num_classes=int(data_config.num_classes),
        max_frames=int(data_config.max_frames),
    )

  @property
  def output_names(self) -> tuple[str, ...]:
    """Feature keys in parsed examples and batches.

    Frame level: `feature_names`. Video level: `feature_names` without a 'mean_' prefix
    ('mean_rgb' -> 'rgb'), so models read 'rgb'/'audio' at both levels.
    """
    if self.level == "frame":
      return self.feature_names
    return tuple(n[len("mean_"):] if n.startswith("mean_") else n for n in self.feature_names)

  @property
  def num_frames(self) -> int:
    """Frames per example in a batch: `max_frames` (frame level) or 1 (video level)."""
    return self.max_frames if self.level == "frame" else 1

  # ---------------------------------------------------------------------------------------
  # Parsing.

  def parse_raw(self, data: bytes, *, path: str = "<bytes>", index: int = -1) -> dict:
    """Parses one serialized record without dequantizing.

    Args:
      data: a serialized SequenceExample (frame level) or Example (video level).
      path: the file, for error messages.
      index: the record's index within the file, for error messages.

    Returns:
      `{'id': str, 'labels': int64 [num_labels], 'features': {name: array [T, dim]}}` with
      uint8 arrays (frame level, T = min(frames, max_frames), the minimum over modalities)
      or float32 arrays with T = 1 (video level), keyed by `output_names`.

    Raises:
      RecordError: undecodable protobuf, missing id/labels/feature, a frame of the wrong
        byte length, a label outside [0, num_classes), or no frames. The message names
        the file, the record index and the key.
    """
    if self.level == "frame":
      return self._parse_frame(data, path, index)
    return self._parse_video(data, path, index)

  def parse(self, data: bytes, *, path: str = "<bytes>", index: int = -1) -> dict:
    """Parses and dequantizes one record.

    Args:
      data: a serialized record (see `parse_raw`).
      path: the file, for error messages.
      index: the record's index within the file, for error messages.

    Returns:
      `{'id': str, 'labels': int64 [num_labels], name: float32 [T, dim], ...}` with
      `name` in `output_names`.
    """
    raw = self.parse_raw(data, path=path, index=index)
    out = {"id": raw["id"], "labels": raw["labels"]}
    for name, x in raw["features"].items():
      out[name] = dequantize(x) if x.dtype == np.uint8 else x
    return out

  def _id_and_labels(self, features, path, index, where: str, hint: str) -> tuple[str, np.ndarray]:
    if self.id_key not in features:
      raise RecordError(
          path, index,
          f"missing {where} feature {self.id_key!r} (the video id); the record's {where} has "
          f"{sorted(features)}. YouTube-8M 2018 (v2) uses 'id', 2017 uses 'video_id': set "
          f"--config.data.id_key{hint}")
    ids = features[self.id_key].bytes_list.value
    if len(ids) != 1:
      raise RecordError(path, index, f"{where} feature {self.id_key!r} has {len(ids)} bytes "
                        "values, expected 1")
    video_id = ids[0].decode("utf-8", "replace")
    if self.labels_key not in features:
      raise RecordError(
          path, index,
          f"missing {where} feature {self.labels_key!r} (int64 list of class indices); the "
          f"record's {where} has {sorted(features)}: set --config.data.labels_key{hint}")
    values = features[self.labels_key].int64_list.value
    labels = np.fromiter(values, np.int64, count=len(values))
    bad = (labels < 0) | (labels >= self.num_classes)
    if bad.any():
      raise RecordError(
          path, index,
          f"label {int(labels[bad][0])} in {self.labels_key!r} is out of range "
          f"[0, {self.num_classes}) (YouTube-8M 2018 has 3862 classes, 2017 has 4716: set "
          "--config.data.num_classes)")
    return video_id, labels

  def _parse_frame(self, data, path, index) -> dict:
    parsed = self._parse_frame_wire(data, path, index)
    return parsed if parsed is not None else self._parse_frame_protobuf(data, path, index)

  def _parse_frame_wire(self, data, path, index) -> dict | None:
    """The fast path of `parse_raw` at frame level: the frames are views of `data` located by
    `_scan_sequence_example` and checked by `_canonical_frames`; only the small context is
    decoded by protobuf. None when the record is not in the plain layout (or is bad): then
    `_parse_frame_protobuf` decides, with its error messages."""
    scan = _scan_sequence_example(data)
    if scan is None:
      return None
    (context_start, context_stop), lists = scan
    frames = []
    for name, size in zip(self.feature_names, self.feature_sizes):
      q = _canonical_frames(data, *lists[name], size) if name in lists else None
      if q is None:
        return None
      frames.append(q)
    num = min(min(len(q) for q in frames), self.max_frames)
    if num == 0:
      return None
    try:
      context = tf_feature.Features.FromString(data[context_start:context_stop])
    except protobuf_message.DecodeError:
      return None
    video_id, labels = self._id_and_labels(context.feature, path, index, "context", "")
    return {"id": video_id, "labels": labels,
            "features": {name: q[:num] for name, q in zip(self.output_names, frames)}}

  def _parse_frame_protobuf(self, data, path, index) -> dict:
    seq = _parse_message(tf_example.SequenceExample, data, path, index)
    lists = seq.feature_lists.feature_list
    hint = ""
    if not lists:
      hint = " (no feature lists: a video-level tf.train.Example? set --config.data.level=video)"
    video_id, labels = self._id_and_labels(seq.context.feature, path, index, "context", hint)
    frames = []
    for name in self.feature_names:
      if name not in lists:
        raise RecordError(path, index, f"missing feature list {name!r}; the record has feature "
                          f"lists {sorted(lists)}{hint}")
      frames.append(lists[name].feature)
    num = min(min(len(f) for f in frames), self.max_frames)
    if num == 0:
      raise RecordError(path, index, f"no frames in feature lists {self.feature_names} "
                        f"(lengths {[len(f) for f in frames]})")
    features = {}
    for name, out_name, size, fl in zip(self.feature_names, self.output_names,
                                        self.feature_sizes, frames):
      values = [f.bytes_list.value for f in fl[:num]]
      joined = b"".join([v[0] for v in values if len(v) == 1])
      if len(joined) != num * size:
        self._frame_error(path, index, name, size, fl, values)
      features[out_name] = np.frombuffer(joined, np.uint8).reshape(num, size)
    return {"id": video_id, "labels": labels, "features": features}

  @staticmethod
  def _frame_error(path, index, name, size, feature_list, values):
    for t, v in enumerate(values):
      if len(v) != 1:
        kind = feature_list[t].WhichOneof("kind")
        raise RecordError(path, index, f"feature list {name!r} frame {t}: {len(v)} bytes "
                          f"values (kind {kind!r}), expected one bytes string of {size} uint8")
      if len(v[0]) != size:
        raise RecordError(path, index, f"feature list {name!r} frame {t}: {len(v[0])} bytes, "
                          f"expected {size} (one uint8 per dimension)")
    raise AssertionError("unreachable")

  def _parse_video(self, data, path, index) -> dict:
    example = _parse_message(tf_example.Example, data, path, index)
    feats = example.features.feature
    hint = ""
    if not any(name in feats for name in self.feature_names):
      hint = (" (a frame-level tf.train.SequenceExample? set --config.data.level=frame and "
              "--config.data.feature_names=\"('rgb','audio')\")")
    video_id, labels = self._id_and_labels(feats, path, index, "features", hint)
    features = {}
    for name, out_name, size in zip(self.feature_names, self.output_names, self.feature_sizes):
      if name not in feats:
        raise RecordError(path, index, f"missing feature {name!r}; the record has features "
                          f"{sorted(feats)}{hint}")
      values = feats[name].float_list.value
      if len(values) != size:
        raise RecordError(path, index, f"feature {name!r} has {len(values)} floats, expected "
                          f"{size}")
      features[out_name] = np.fromiter(values, np.float32, count=size).reshape(1, size)
    return {"id": video_id, "labels": labels, "features": features}

  # ---------------------------------------------------------------------------------------
  # Batching.

  def collate(self, examples: Sequence[dict | None], *,
              buffers: BufferPool | None = None) -> dict[str, np.ndarray]:
    """Stacks parsed examples (from `parse_raw`) into a padded batch.

    Frame-level features stay quantized: the batch carries the records' uint8 bytes (a quarter
    of float32's size) and the model dequantizes them inside the compiled step
    (`mmjax.projects.youtube8m.model.dequantize_frames`, the same float32 values as
    `dequantize`). Video-level features are float32 already.

    Args:
      examples: B examples from `parse_raw`; None marks a padding example (weight 0).
      buffers: where the feature arrays come from (reused once nothing refers to them; see
        `mmjax.data.buffers`); default: new arrays.

    Returns:
      A dict of numpy arrays, T = `num_frames` (max_frames; 1 at video level):
        name (each of `output_names`): uint8 [B, T, dim] at frame level, float32 [B, 1, dim] at
          video level; zero after the real frames;
        'mask': float32 [B, T], 1 for real frames;
        'labels': float32 [B, num_classes], multi-hot;
        'weight': float32 [B], 1 for real examples, 0 for padding.
    """
    size = len(examples)
    num_frames = self.num_frames
    dtype = np.uint8 if self.level == "frame" else np.float32
    # Uninitialised, each row written once (frames, then zeros after them): zero-filling whole
    # buffers first would write every byte of the batch twice.
    empty = buffers.empty if buffers is not None else np.empty
    batch = {name: empty((size, num_frames, dim), dtype)
             for name, dim in zip(self.output_names, self.feature_sizes)}
    mask = np.zeros((size, num_frames), np.float32)
    labels = np.zeros((size, self.num_classes), np.float32)
    weight = np.zeros((size,), np.float32)
    for i, ex in enumerate(examples):
      if ex is None:
        for x in batch.values():
          x[i] = 0
        continue
      num = num_frames
      for x in ex["features"].values():
        num = min(num, x.shape[0])
      for name, x in ex["features"].items():
        batch[name][i, :num] = x[:num]
        batch[name][i, num:] = 0
      mask[i, :num] = 1.0
      labels[i, ex["labels"]] = 1.0
      weight[i] = 1.0
    batch.update(mask=mask, labels=labels, weight=weight)
    return batch


def read_records(paths: str | os.PathLike | Sequence[str], spec: RecordSpec, *,
                 skip_counter: tfrecord.SkipCounter | None = None) -> Iterator[dict]:
  """Reads, verifies and parses YouTube-8M TFRecord files in order.

  Args:
    paths: a file, a glob pattern (comma-separated patterns allowed) or a list of them;
      files are read in sorted order.
    spec: the record spec.
    skip_counter: if given, bad records are skipped and counted there instead of raising
      (a truncated file yields its intact records first).

  Yields:
    Dicts from `RecordSpec.parse`: `{'id', 'labels', name: float32 [T, dim], ...}`.

  Raises:
    FileNotFoundError: nothing matches `paths`.
    RecordError: a bad record (if `skip_counter` is None); names the file and record.
  """
  for path in tfrecord.list_files(paths):
    try:
      index = tfrecord.index_tfrecord(path)
      truncation = None
    except tfrecord.FramingError as e:
      if skip_counter is None:
        raise
      index, truncation = e.valid_index, e
    reader = tfrecord.TFRecordReader([path], max_open_files=1)
    for i, (offset, length) in enumerate(index.tolist()):
      try:
        yield spec.parse(reader.read(0, i, offset, length), path=path, index=i)
      except RecordError as e:
        if skip_counter is None:
          raise
        skip_counter.add(e)
    if truncation is not None:
      skip_counter.add(truncation)


def read_frame_records(paths: str | os.PathLike | Sequence[str], *, id_key: str = "id",
                       labels_key: str = "labels",
                       feature_names: Sequence[str] = ("rgb", "audio"),
                       feature_sizes: Sequence[int] = (1024, 128), num_classes: int = 3862,
                       max_frames: int = 300) -> Iterator[dict]:
  """Reads frame-level YouTube-8M files (SequenceExample) in file order.

  Args:
    paths: a file, a glob pattern or a list of them.
    id_key: context key of the video id ('id' in 2018 v2, 'video_id' in 2017).
    labels_key: context key of the int64 labels.
    feature_names: feature lists to read.
    feature_sizes: uint8 values per frame of each feature list.
    num_classes: labels must lie in [0, num_classes).
    max_frames: frames kept per video (the first ones).

  Yields:
    `{'id': str, 'labels': int64 [num_labels], name: float32 [T, size], ...}` for each
    name in `feature_names`, T = min(frames, max_frames), dequantized like the starter code.

  Raises:
    FileNotFoundError: nothing matches `paths`.
    RecordError: a bad record; the message names the file, the record index and the key.
  """
  spec = RecordSpec(level="frame", id_key=id_key, labels_key=labels_key,
                    feature_names=tuple(feature_names), feature_sizes=tuple(feature_sizes),
                    num_classes=num_classes, max_frames=max_frames)
  yield from read_records(paths, spec)
