"""Tests for mmjax.data.tfrecord: TF-free TFRecord framing, indexing and reading."""

import logging
import os
import pickle
import struct
import threading

import google_crc32c
import numpy as np
import pytest

from mmjax.data import tfrecord
from mmjax.data.tfrecord import FramingError, RecordError


def _mask(crc):
  # The TFRecord spec, spelled out independently of the module.
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def _by_hand(records):
  out = b""
  for data in records:
    length = struct.pack("<Q", len(data))
    out += length
    out += struct.pack("<I", _mask(google_crc32c.value(length)))
    out += data
    out += struct.pack("<I", _mask(google_crc32c.value(data)))
  return out


def test_crc32c_known_values():
  assert google_crc32c.value(b"123456789") == 0xE3069283
  assert tfrecord.masked_crc32c(b"123456789") == _mask(0xE3069283)
  # mask by hand: rotate right by 15 bits, add the delta.
  rotated = ((0xE3069283 >> 15) | (0xE3069283 << 17)) & 0xFFFFFFFF
  assert tfrecord.masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) & 0xFFFFFFFF
  assert tfrecord.masked_crc32c(b"") == 0xA282EAD8  # crc32c(b"") = 0


def test_written_file_matches_hand_framing(tmp_path):
  records = [b"", b"a", b"hello world", bytes(range(256)) * 40]
  path = tmp_path / "x.tfrecord"
  assert tfrecord.write_tfrecord(path, records) == 4
  assert path.read_bytes() == _by_hand(records)
  # A file written by hand reads back.
  hand = tmp_path / "hand.tfrecord"
  hand.write_bytes(_by_hand(records))
  assert list(tfrecord.iter_tfrecord(hand)) == records


def test_index_and_random_access(tmp_path):
  records = [os.urandom(n) for n in (0, 1, 100, 5000, 3)]
  path = tmp_path / "x.tfrecord"
  tfrecord.write_tfrecord(path, iter(records))
  index = tfrecord.index_tfrecord(path)
  assert index.shape == (5, 2) and index.dtype == np.int64
  np.testing.assert_array_equal(index[:, 1], [len(r) for r in records])
  assert index[0, 0] == 12 and index[1, 0] == 12 + 0 + 4 + 12
  for i in reversed(range(5)):
    assert tfrecord.read_record(path, index, i) == records[i]
  reader = tfrecord.TFRecordReader([str(path)], max_open_files=1)
  assert reader.read(0, 3, *index[3]) == records[3]
  reader = pickle.loads(pickle.dumps(reader))
  assert reader.read(0, 2, *index[2]) == records[2]


def test_empty_file(tmp_path):
  path = tmp_path / "empty.tfrecord"
  tfrecord.write_tfrecord(path, [])
  assert path.stat().st_size == 0
  assert tfrecord.index_tfrecord(path).shape == (0, 2)


def test_write_is_atomic(tmp_path):
  path = tmp_path / "x.tfrecord"
  tfrecord.write_tfrecord(path, [b"old"])

  def failing():
    yield b"new"
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError):
    tfrecord.write_tfrecord(path, failing())
  assert list(tfrecord.iter_tfrecord(path)) == [b"old"]
  assert os.listdir(tmp_path) == ["x.tfrecord"]


def test_missing_file_and_pattern(tmp_path):
  missing = str(tmp_path / "nope.tfrecord")
  with pytest.raises(FileNotFoundError, match="nope.tfrecord"):
    tfrecord.index_tfrecord(missing)
  with pytest.raises(FileNotFoundError, match=r"train\*\.tfrecord"):
    tfrecord.list_files(str(tmp_path / "train*.tfrecord"))
  with pytest.raises(FileNotFoundError, match="nope.tfrecord"):
    tfrecord.list_files([missing])


def test_list_files(tmp_path):
  for name in ("b-1.tfrecord", "a-0.tfrecord", "c.txt"):
    (tmp_path / name).write_bytes(b"")
  expected = [str(tmp_path / "a-0.tfrecord"), str(tmp_path / "b-1.tfrecord")]
  assert tfrecord.list_files(str(tmp_path / "*.tfrecord")) == expected
  assert tfrecord.list_files(f"{tmp_path}/b-*.tfrecord,{tmp_path}/a-0.tfrecord") == expected
  assert tfrecord.list_files(expected[::-1]) == expected


@pytest.mark.parametrize("cut", [3, 10, 30])  # inside the last header, data, footer
def test_truncated_file(tmp_path, cut):
  records = [b"x" * 20, b"y" * 20, b"z" * 20]
  full = _by_hand(records)
  path = tmp_path / "t.tfrecord"
  path.write_bytes(full[:2 * 36 + cut])
  with pytest.raises(FramingError, match=r"t\.tfrecord: record 2: truncated file") as e:
    tfrecord.index_tfrecord(path)
  assert isinstance(e.value, RecordError) and e.value.index == 2
  np.testing.assert_array_equal(e.value.valid_index, [[12, 20], [48, 20]])


def test_corrupt_data_and_length(tmp_path):
  records = [b"a" * 10, b"b" * 10, b"c" * 10]
  raw = bytearray(_by_hand(records))
  path = tmp_path / "c.tfrecord"
  raw[26 + 12 + 5] ^= 0x01  # a data byte of record 1
  path.write_bytes(bytes(raw))
  index = tfrecord.index_tfrecord(path)  # headers are fine
  assert tfrecord.read_record(path, index, 0) == records[0]
  with pytest.raises(RecordError, match=r"c\.tfrecord: record 1: data crc mismatch \(corrupt"):
    tfrecord.read_record(path, index, 1)
  with pytest.raises(RecordError, match="record 1: data crc mismatch"):
    list(tfrecord.iter_tfrecord(path))
  raw = bytearray(_by_hand(records))
  raw[2 * 26 + 1] ^= 0x40  # a length byte of record 2
  path.write_bytes(bytes(raw))
  with pytest.raises(FramingError, match="record 2: length crc mismatch"):
    tfrecord.index_tfrecord(path)


def test_record_error_pickles():
  e = pickle.loads(pickle.dumps(RecordError("/a/b", 17, "data crc mismatch (corrupt file?)")))
  assert str(e) == "/a/b: record 17: data crc mismatch (corrupt file?)"
  f = pickle.loads(pickle.dumps(FramingError("/a", 2, "truncated", np.zeros((2, 2), np.int64))))
  assert f.index == 2 and f.valid_index.shape == (2, 2)


def test_reader_threads(tmp_path):
  paths = []
  for k in range(3):
    paths.append(str(tmp_path / f"{k}.tfrecord"))
    tfrecord.write_tfrecord(paths[-1], [bytes([k, i]) * 50 for i in range(20)])
  indexes = [tfrecord.index_tfrecord(p) for p in paths]
  reader = tfrecord.TFRecordReader(paths, max_open_files=2)
  errors = []

  def work(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
      k, i = int(rng.integers(3)), int(rng.integers(20))
      if reader.read(k, i, *indexes[k][i]) != bytes([k, i]) * 50:
        errors.append((k, i))

  threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors


def test_skip_counter_logs(caplog):
  counter = tfrecord.SkipCounter(max_examples=2)
  with caplog.at_level(logging.WARNING, logger="mmjax.data"):
    for i in range(3):
      counter.add(RecordError("/f", i, "bad"))
    counter.add_good()
  assert counter.count == 3 and counter.good == 1
  assert counter.examples == ["/f: record 0: bad", "/f: record 1: bad"]
  # The first max_examples are logged one by one, then only counted.
  assert "/f: record 1: bad" in caplog.text and "/f: record 2: bad" not in caplog.text
  assert "further bad records are counted" in caplog.text
  assert counter.take_window() == (3, 1)
  counter.add(RecordError("/f", 3, "bad"))
  assert counter.take_window() == (1, 0) and counter.take_window() == (0, 0)
  assert pickle.loads(pickle.dumps(counter)).count == 4


def test_skip_counter_deltas_carry_a_copys_counts_to_the_original(caplog):
  """A reader worker process counts in a pickled copy; `take_delta` gives what it counted
  since it was copied (then since the last delta) and `add_delta` adds that to the
  original, logging the messages as `add` does."""
  original = tfrecord.SkipCounter(max_examples=2)
  original.add("before the copy")
  copy = pickle.loads(pickle.dumps(original))
  assert copy.take_delta() == (0, 0, [])
  copy.add("f: record 3: bad")
  copy.add_good()
  copy.add_good()
  delta = copy.take_delta()
  assert delta == (1, 2, ["f: record 3: bad"])
  for _ in range(3):
    copy.add("later")  # past max_examples: counted, not kept
  assert copy.take_delta() == (3, 0, [])
  with caplog.at_level(logging.WARNING, logger="mmjax.data"):
    original.add_delta(delta)
    original.add_delta((3, 0, []))
  assert (original.count, original.good) == (5, 2)
  assert original.examples == ["before the copy", "f: record 3: bad"]
  assert "f: record 3: bad" in caplog.text
