"""TFRecord framing without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

  uint64 length           (little endian)
  uint32 masked_crc32c(length bytes)
  bytes  data[length]
  uint32 masked_crc32c(data)

with `masked_crc32c(b) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32)`, `c = crc32c(b)`.

This module writes such files atomically, indexes them by reading only the 12-byte headers
(so a global random-access index over thousands of shards is cheap) and reads single records
by (offset, length), verifying the data checksum. Errors name the file and the record index.
"""

from __future__ import annotations

import collections
import errno
import glob
import logging
import os
import struct
import tempfile
import threading
from typing import Iterable, Iterator, Sequence

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # length, masked crc of the 8 length bytes
_FOOTER = struct.Struct("<I")  # masked crc of the data
_LENGTH = struct.Struct("<Q")
HEADER_SIZE = _HEADER.size  # 12
FOOTER_SIZE = _FOOTER.size  # 4


class RecordError(ValueError):
  """A record that cannot be read or parsed; the message names the file and the record.

  Attributes:
    path: the file.
    index: the record's index within the file (0-based; -1 if unknown).
    reason: what is wrong, without the file and index.
  """

  def __init__(self, path: str, index: int, reason: str):
    self.path = os.fspath(path)
    self.index = int(index)
    self.reason = reason
    super().__init__(f"{self.path}: record {self.index}: {reason}")

  def __reduce__(self):
    return (type(self), (self.path, self.index, self.reason))


class FramingError(RecordError):
  """The framing breaks at record `index` (truncated file or corrupt length header).

  Records after it cannot be located. Records before it are intact; their index
  (as returned by `index_tfrecord`) is in `valid_index` ([index, 2] int64).
  """

  def __init__(self, path: str, index: int, reason: str, valid_index: np.ndarray | None = None):
    super().__init__(path, index, reason)
    if valid_index is None:
      valid_index = np.zeros((0, 2), np.int64)
    self.valid_index = valid_index

  def __reduce__(self):
    return (type(self), (self.path, self.index, self.reason, self.valid_index))


def masked_crc32c(data: bytes) -> int:
  """Returns the TFRecord masked CRC-32C of `data` (an int in [0, 2^32))."""
  crc = google_crc32c.value(bytes(data))
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
  """Returns `data` framed as one TFRecord (header + data + footer)."""
  data = bytes(data)
  length = _LENGTH.pack(len(data))
  return (length + _FOOTER.pack(masked_crc32c(length)) + data +
          _FOOTER.pack(masked_crc32c(data)))


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
  """Writes `records` to a TFRecord file atomically.

  The records go to a temporary file in the same directory, which is fsynced and then
  renamed onto `path` (`os.replace`), so readers never see a partial file.

  Args:
    path: destination file; its directory must exist.
    records: serialized records (e.g. `SequenceExample.SerializeToString()`).

  Returns:
    The number of records written.
  """
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
  count = 0
  try:
    with os.fdopen(fd, "wb") as f:
      for data in records:
        f.write(frame_record(data))
        count += 1
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  return count


def _open(path: str):
  try:
    return open(path, "rb", buffering=0)  # pylint: disable=consider-using-with
  except FileNotFoundError:
    raise FileNotFoundError(errno.ENOENT, "TFRecord file not found", path) from None


def _pread(f, size: int, offset: int) -> bytes:
  """Reads up to `size` bytes at `offset` (fewer only at end of file)."""
  if hasattr(os, "pread"):
    chunks = []
    while size > 0:
      chunk = os.pread(f.fileno(), size, offset)
      if not chunk:
        break
      chunks.append(chunk)
      size -= len(chunk)
      offset += len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
  f.seek(offset)
  return f.read(size)


def index_tfrecord(path: str | os.PathLike) -> np.ndarray:
  """Indexes a TFRecord file by reading only the record headers.

  Verifies each length checksum and that every record lies inside the file; the data
  checksums are verified later, when a record is read.

  Args:
    path: a TFRecord file.

  Returns:
    int64 array [num_records, 2]: (byte offset of the record's data, data length).

  Raises:
    FileNotFoundError: `path` does not exist.
    FramingError: a header or a record's data runs past the end of the file (truncated
      file), or a length checksum mismatches. `.valid_index` holds the records before it.
  """
  path = os.fspath(path)
  offsets, lengths = [], []
  with _open(path) as f:
    size = os.fstat(f.fileno()).st_size
    pos = 0
    while pos < size:
      reason = None
      if pos + HEADER_SIZE > size:
        reason = (f"truncated file: the record header at byte {pos} runs past the end of the "
                  f"file ({size} bytes)")
      else:
        header = _pread(f, HEADER_SIZE, pos)
        length, length_crc = _HEADER.unpack(header)
        end = pos + HEADER_SIZE + length + FOOTER_SIZE
        if masked_crc32c(header[:8]) != length_crc:
          reason = f"length crc mismatch at byte {pos} (corrupt file?)"
        elif end > size:
          reason = (f"truncated file: the record ({length} bytes at byte {pos + HEADER_SIZE}) "
                    f"runs past the end of the file ({size} bytes)")
      if reason is not None:
        raise FramingError(path, len(offsets), reason, _as_index(offsets, lengths))
      offsets.append(pos + HEADER_SIZE)
      lengths.append(length)
      pos = end
  return _as_index(offsets, lengths)


def _as_index(offsets, lengths) -> np.ndarray:
  return np.stack([np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)], 1).reshape(-1, 2)


def _read_verified(f, path: str, index: int, offset: int, length: int) -> bytes:
  # Two reads (data, then its checksum) rather than one and a slice: slicing would copy data.
  data = _pread(f, length, offset)
  footer = _pread(f, FOOTER_SIZE, offset + length)
  if len(data) < length or len(footer) < FOOTER_SIZE:
    raise RecordError(path, index, f"truncated file: the record ({length} bytes at byte {offset}) "
                      "runs past the end of the file")
  (crc,) = _FOOTER.unpack(footer)
  if masked_crc32c(data) != crc:
    raise RecordError(path, index, "data crc mismatch (corrupt file?)")
  return data


def read_record(path: str | os.PathLike, index: np.ndarray, i: int) -> bytes:
  """Reads record `i` of a TFRecord file and verifies its data checksum.

  Args:
    path: the TFRecord file.
    index: its index from `index_tfrecord` ([num_records, 2]).
    i: the record's position in the file.

  Returns:
    The record's data.

  Raises:
    RecordError: data checksum mismatch or truncated data (names the file and `i`).
  """
  path = os.fspath(path)
  offset, length = (int(v) for v in index[i])
  with _open(path) as f:
    return _read_verified(f, path, i, offset, length)


def iter_tfrecord(path: str | os.PathLike) -> Iterator[bytes]:
  """Yields the records of one TFRecord file in order, verifying every checksum."""
  path = os.fspath(path)
  index = index_tfrecord(path)
  with _open(path) as f:
    for i, (offset, length) in enumerate(index.tolist()):
      yield _read_verified(f, path, i, offset, length)


class TFRecordReader:
  """Thread-safe random-access record reader over a list of files.

  Each thread keeps a small LRU of open files, so concurrent reads need no lock and the
  number of open files stays bounded. Picklable (open files are not pickled).

  Args:
    paths: the files; records are addressed by the position of their file in this list.
    max_open_files: open files kept per thread.
  """

  def __init__(self, paths: Sequence[str], max_open_files: int = 16):
    self.paths = tuple(os.fspath(p) for p in paths)
    self._max_open_files = max_open_files
    self._local = threading.local()

  def __getstate__(self):
    return {"paths": self.paths, "_max_open_files": self._max_open_files}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def _file(self, file_index: int):
    cache = getattr(self._local, "files", None)
    if cache is None:
      cache = self._local.files = collections.OrderedDict()
    f = cache.get(file_index)
    if f is None:
      f = _open(self.paths[file_index])
      cache[file_index] = f
      while len(cache) > self._max_open_files:
        cache.popitem(last=False)[1].close()
    else:
      cache.move_to_end(file_index)
    return f

  def read(self, file_index: int, record_index: int, offset: int, length: int) -> bytes:
    """Reads and verifies one record.

    Args:
      file_index: position of the file in `paths`.
      record_index: the record's position within its file (for error messages).
      offset: byte offset of the record's data (from `index_tfrecord`).
      length: data length in bytes.

    Returns:
      The record's data.

    Raises:
      RecordError: data checksum mismatch or truncated data.
    """
    return _read_verified(self._file(file_index), self.paths[file_index], record_index,
                          offset, length)


def list_files(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
  """Expands file patterns into a sorted, de-duplicated list of files.

  Args:
    pattern: a path, a glob pattern (`/data/yt8m/train*.tfrecord`), several of them in one
      string separated by commas, or a list of paths/patterns.

  Returns:
    The matching files, sorted.

  Raises:
    FileNotFoundError: nothing matches (the message names the pattern), or a plain path
      (without glob characters) does not exist.
  """
  if isinstance(pattern, (str, os.PathLike)):
    parts = [p.strip() for p in os.fspath(pattern).split(",") if p.strip()]
  else:
    parts = [os.fspath(p) for p in pattern]
  files = set()
  for part in parts:
    part = os.path.expanduser(part)
    if glob.has_magic(part):
      matches = [m for m in glob.glob(part) if os.path.isfile(m)]
      if not matches:
        raise FileNotFoundError(errno.ENOENT, "no files match the pattern", part)
      files.update(matches)
    elif os.path.isfile(part):
      files.add(part)
    else:
      raise FileNotFoundError(errno.ENOENT, "TFRecord file not found", part)
  if not files:
    raise FileNotFoundError(errno.ENOENT, "no files match the pattern", str(pattern))
  return sorted(files)


class SkipCounter:
  """Thread-safe count of skipped bad records and of good ones, with the first few reasons.

  The first `max_examples` skips are logged one by one as warnings on
  `logging.getLogger('mmjax.data')` (each names the file, the record and why); later ones are
  only counted (the trainer writes them per logging window to metrics.jsonl as 'bad_records').

  Attributes:
    count: number of records skipped so far (a truncated tail counts once).
    good: number of records read and parsed successfully (by `add_good`).
    examples: the first `max_examples` error messages (each names the file and record).
  """

  def __init__(self, max_examples: int = 5):
    self.max_examples = max_examples
    self.count = 0
    self.good = 0
    self.examples: list[str] = []
    self._window_start = (0, 0)
    self._sent = (0, 0, 0)  # (count, good, len(examples)) at the last `take_delta`
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._sent = (self.count, self.good, len(self.examples))  # deltas of the copy start here
    self._lock = threading.Lock()

  def add(self, error: Exception | str) -> None:
    """Counts one skipped record; logs `error` (which should name file and record) if it is
    among the first `max_examples`."""
    with self._lock:
      self.count += 1
      count = self.count
      if len(self.examples) < self.max_examples:
        self.examples.append(str(error))
    logger = logging.getLogger("mmjax.data")
    if count <= self.max_examples:
      logger.warning("skipped bad record (%d so far): %s", count, error)
    if count == self.max_examples:
      logger.warning("further bad records are counted, not logged one by one ('bad_records' "
                     "in metrics.jsonl)")

  def add_good(self) -> None:
    """Counts one record read and parsed successfully."""
    with self._lock:
      self.good += 1

  def take_delta(self) -> tuple[int, int, list[str]]:
    """(bad, good, new example messages) since the previous call, or since this copy was
    made (unpickled): what a reader worker process sends to the consumer's counter."""
    with self._lock:
      count, good, shown = self._sent
      delta = (self.count - count, self.good - good, self.examples[shown:])
      self._sent = (self.count, self.good, len(self.examples))
    return delta

  def add_delta(self, delta: tuple[int, int, list[str]]) -> None:
    """Adds another copy's `take_delta()`: its messages as `add` does (logged while among the
    first `max_examples`), the rest of its counts silently."""
    bad, good, messages = delta
    for message in messages:
      self.add(message)
    with self._lock:
      self.count += bad - len(messages)
      self.good += good

  def take_window(self) -> tuple[int, int]:
    """(bad, good) records since the previous call (since creation for the first)."""
    with self._lock:
      bad, good = self.count - self._window_start[0], self.good - self._window_start[1]
      self._window_start = (self.count, self.good)
    return bad, good

  def __repr__(self) -> str:
    return f"SkipCounter(count={self.count}, examples={self.examples!r})"
