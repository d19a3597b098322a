"""Deterministic, checkpointable grain input pipelines for YouTube-8M TFRecords.

Pipeline (train)::

  global record index over all files (sorted)  -- grain.MapDataset of (file, record, offset, length)
    -> shuffle (a global permutation, reseeded every epoch)
    -> [process_index::process_count]           -- disjoint per JAX process, each epoch
    -> repeat forever -> read + verify + parse (threads) -> batch (per-process batch size)
    -> thread prefetch of `prefetch_batches` batches

Everything is a pure function of (files, seed, process index/count), so the iterator's
`get_state()` (a few integers) restores it exactly; `grain.checkpoint.CheckpointSave/
CheckpointRestore` save/restore it through Orbax.

Batches are dicts of numpy arrays (T = data.max_frames at frame level, 1 at video level):
  'rgb': float32 [B, T, 1024], 'audio': float32 [B, T, 128] (keys: the feature names; at video
  level 'mean_rgb'/'mean_audio' become 'rgb'/'audio'), 'mask': float32 [B, T] (1 = real frame),
  'labels': float32 [B, num_classes] (multi-hot), 'weight': float32 [B] (1 real, 0 padding).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable
import weakref

import grain
import numpy as np

from mmjax.data import synthetic
from mmjax.data import tfrecord
from mmjax.data.tfrecord import RecordError, SkipCounter
from mmjax.data.youtube8m import RecordSpec

__all__ = [
    "DataPatterns", "RecordError", "RecordIndex", "SkipCounter", "build_record_index",
    "eval_num_batches", "make_eval_dataset", "make_train_dataset", "resolve_data_patterns",
    "synthetic_directory", "train_entries",
]

logger = logging.getLogger("mmjax.data")

_STALE_TMP_SECONDS = 24 * 3600
_MIN_BAD_TO_ABORT = 50


def _get(config: Any, key: str, default: Any = None) -> Any:
  if isinstance(config, dict):
    return config.get(key, default)
  return getattr(config, key, default)


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index ({process_index}) < process_count "
                     f"({process_count})")
  return int(process_index), int(process_count)


# -------------------------------------------------------------------------------------------
# Record index.


class RecordIndex:
  """A global index of the records of a set of TFRecord files.

  Attributes:
    files: the files, sorted.
    entries: int64 [num_records, 4]: (file position in `files`, record index within the
      file, byte offset of the data, data length), in file order.
  """

  def __init__(self, files: tuple[str, ...], entries: np.ndarray):
    self.files = files
    self.entries = entries

  def __len__(self) -> int:
    return len(self.entries)

  def __repr__(self) -> str:
    return f"RecordIndex({len(self.files)} files, {len(self.entries)} records)"


def build_record_index(pattern: str | list[str], *, skip_bad_records: bool = False,
                       skip_counter: SkipCounter | None = None,
                       num_threads: int = 16) -> RecordIndex:
  """Indexes every record of the files matching `pattern` (reads only record headers).

  Args:
    pattern: glob pattern(s) or paths (see `tfrecord.list_files`).
    skip_bad_records: if True, a truncated or corrupt file tail is dropped (and counted in
      `skip_counter`) instead of raising.
    skip_counter: where dropped tails are counted.
    num_threads: files indexed in parallel (I/O bound).

  Returns:
    The `RecordIndex`.

  Raises:
    FileNotFoundError: nothing matches `pattern` (the message names it).
    tfrecord.FramingError: a truncated/corrupt file (names the file and record), unless
      `skip_bad_records`.
  """
  files = tuple(tfrecord.list_files(pattern))
  skip_counter = skip_counter if skip_counter is not None else SkipCounter()

  def index_one(path):
    try:
      return tfrecord.index_tfrecord(path), None
    except tfrecord.FramingError as e:
      if not skip_bad_records:
        raise
      return e.valid_index, e

  workers = max(1, min(num_threads, len(files)))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(pool.map(index_one, files))
  parts = []
  for file_index, (index, error) in enumerate(results):
    if error is not None:
      skip_counter.add(error)
    part = np.empty((len(index), 4), np.int64)
    part[:, 0] = file_index
    part[:, 1] = np.arange(len(index))
    part[:, 2:] = index
    parts.append(part)
  entries = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
  return RecordIndex(files, entries)


class _ReadAndParse:
  """grain map: index entry [4] -> example from `RecordSpec.parse_raw`, or None.

  None is returned for padding entries (file position -1) and, with `skip_bad_records`,
  for bad records (counted in the skip counter); otherwise bad records raise RecordError.
  Even when skipping, more bad than good records (after `_MIN_BAD_TO_ABORT` bad ones) raise
  ValueError: that is a wrong config (e.g. id_key), not a few corrupt records.
  """

  def __init__(self, files: tuple[str, ...], spec: RecordSpec, skip_bad_records: bool,
               skip_counter: SkipCounter):
    self._reader = tfrecord.TFRecordReader(files)
    self._files = files
    self._spec = spec
    self._skip = skip_bad_records
    self._counter = skip_counter
    self._num_good = 0
    self._num_bad = 0

  def __call__(self, entry: np.ndarray) -> dict | None:
    file_index, record_index, offset, length = (int(v) for v in entry)
    if file_index < 0:
      return None
    try:
      data = self._reader.read(file_index, record_index, offset, length)
      example = self._spec.parse_raw(data, path=self._files[file_index], index=record_index)
      self._num_good += 1  # approximate under threads; only used for the sanity check
      return example
    except RecordError as e:
      if not self._skip:
        raise
      self._counter.add(e)
      self._num_bad += 1
      if self._num_bad >= _MIN_BAD_TO_ABORT and self._num_bad > self._num_good:
        raise ValueError(
            f"data.skip_bad_records: {self._num_bad} of the {self._num_bad + self._num_good} "
            f"records read so far were bad, e.g. {self._counter.examples[:3]}; check "
            "data.level, id_key, labels_key, feature_names, feature_sizes and num_classes "
            "against the files") from e
      return None


def _read_options(data_config: Any, batch_size: int) -> grain.ReadOptions:
  num_threads = int(_get(data_config, "num_threads", 2))
  buffer = max(batch_size, 4 * num_threads) if num_threads > 0 else 0
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer)


_LIVE_ITERATORS = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  # Stop prefetch threads before interpreter teardown, where grain's __del__ -> close()
  # fails noisily ("'NoneType' object has no attribute ...").
  for iterator in list(_LIVE_ITERATORS):
    try:
      iterator.close()
    except Exception:  # pylint: disable=broad-except
      pass


class _ThreadPrefetchIterator(grain.experimental.ThreadPrefetchDatasetIterator):
  """grain's thread-prefetch iterator with an idempotent `close`."""

  def close(self):
    if getattr(self, "_mmjax_closed", False):
      return
    self._mmjax_closed = True
    super().close()


class _ThreadPrefetchIterDataset(grain.experimental.ThreadPrefetchIterDataset):
  """grain's thread prefetch (`prefetch_buffer_size` batches), closed at interpreter exit."""

  def __init__(self, parent: grain.IterDataset, *, prefetch_buffer_size: int):
    super().__init__(parent, prefetch_buffer_size=prefetch_buffer_size)
    self._buffer_size = prefetch_buffer_size

  def __iter__(self):
    iterator = _ThreadPrefetchIterator(self._parent.__iter__(), self._buffer_size)
    _LIVE_ITERATORS.add(iterator)
    return iterator


def _prefetch(ds: grain.IterDataset, data_config: Any) -> grain.IterDataset:
  # Always wrapped (0 = no prefetch thread): grain would otherwise inject its own.
  num = int(_get(data_config, "prefetch_batches", 2))
  return _ThreadPrefetchIterDataset(ds, prefetch_buffer_size=max(0, num))


def _shuffle_seed(seed: int) -> int:
  """A 32-bit shuffle seed; hashing keeps seed s's epoch e+1 unrelated to seed s+1's epoch e."""
  return int(np.random.SeedSequence([int(seed) % 2**64, 0x59384D]).generate_state(1)[0])


def _pattern(data_config: Any, key: str) -> str:
  pattern = _get(data_config, key, "")
  if not pattern:
    patterns = resolve_data_patterns(data_config, log=logger.info)
    pattern = patterns[0] if key == "train_pattern" else patterns[1]
  return pattern


# -------------------------------------------------------------------------------------------
# Datasets.


class _BlockShard(grain.MapDataset):
  """Process p's view of a global stream cut into global batches of `block * count` entries:
  position i maps to global position (i // block) * block * count + p * block + i % block."""

  def __init__(self, parent: grain.MapDataset, *, block: int, index: int, count: int):
    super().__init__(parent)
    self._block, self._index, self._count = block, index, count

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, i):
    if isinstance(i, slice):
      return self.slice(i)
    step, offset = divmod(i, self._block)
    return self._parent[(step * self._count + self._index) * self._block + offset]

  def __str__(self) -> str:
    return f"BlockShard(block={self._block}, index={self._index}, count={self._count})"


def train_entries(index: RecordIndex, *, seed: int, process_index: int, process_count: int,
                  batch_size: int) -> grain.MapDataset:
  """The infinite sequence of index entries that one process reads in training.

  The global stream is epoch after epoch of global permutations of all records (epoch e seeded
  by `seed` and e). It is cut into global batches of batch_size * process_count entries, and
  process p reads the p-th block of batch_size entries of each: the processes read disjoint
  records, and the global batch (the concatenation of the process batches in process order) is
  exactly the batch a single process would read with the global batch size. Results therefore do
  not depend on the number of processes.

  Args:
    index: the global record index.
    seed: shuffle seed.
    process_index: this process.
    process_count: number of processes.
    batch_size: examples per batch of this process.

  Returns:
    A `grain.MapDataset` of int64 [4] entries (see `RecordIndex`).
  """
  ds = grain.MapDataset.source(index.entries)
  ds = ds.shuffle(seed=_shuffle_seed(seed)).repeat()
  return _BlockShard(ds, block=batch_size, index=process_index, count=process_count)


def make_train_dataset(data_config: Any, *, batch_size: int, seed: int,
                       process_index: int | None = None, process_count: int | None = None,
                       skip_counter: SkipCounter | None = None) -> grain.IterDataset:
  """Builds the infinite, shuffled training pipeline of this process.

  Every epoch is a fresh global permutation of all records (a function of `seed` and the
  epoch); process p of P takes positions p, p + P, ... of it, so the processes read disjoint
  records that together cover the epoch. Reading and parsing run in `data.num_threads`
  threads of this process (no multiprocessing); the output order does not depend on them.

  Args:
    data_config: `config.data` (keys train_pattern, level, id_key, labels_key, num_classes,
      feature_names, feature_sizes, max_frames, skip_bad_records, num_threads,
      prefetch_batches; an empty train_pattern uses the synthetic dataset, see
      `resolve_data_patterns`).
    batch_size: examples per batch of THIS process (global batch / process count).
    seed: shuffle seed (non-negative int).
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    skip_counter: counts skipped bad records (default: a new one); also available as the
      returned dataset's `.skip_counter`.

  Returns:
    A `grain.IterDataset` of batches (see the module docstring; all weights are 1). Its
    iterator supports `get_state()`/`set_state()` and resumes exactly. Attributes:
    `.skip_counter`, `.spec` (the RecordSpec) and `.num_records` (records in all files).

  Raises:
    FileNotFoundError: nothing matches the pattern.
    RecordError: a bad record while iterating (unless data.skip_bad_records): the message
      names the file and the record index. tfrecord.FramingError (a RecordError) for a
      truncated file, raised here while indexing.
  """
  spec = RecordSpec.from_config(data_config)
  process_index, process_count = _process(process_index, process_count)
  skip = bool(_get(data_config, "skip_bad_records", False))
  counter = skip_counter if skip_counter is not None else SkipCounter()
  pattern = _pattern(data_config, "train_pattern")
  index = build_record_index(pattern, skip_bad_records=skip, skip_counter=counter)
  if len(index) < process_count:
    raise ValueError(f"{pattern}: {len(index)} records for {process_count} processes: every "
                     "process needs at least one")
  ds = train_entries(index, seed=seed, process_index=process_index, process_count=process_count,
                     batch_size=batch_size)
  ds = ds.map(_ReadAndParse(index.files, spec, skip, counter))
  ds = ds.to_iter_dataset(_read_options(data_config, batch_size))  # drops None (skipped)
  ds = ds.batch(batch_size, drop_remainder=True, batch_fn=spec.collate)
  ds = _prefetch(ds, data_config)
  ds.skip_counter = counter
  ds.spec = spec
  ds.num_records = len(index)
  return ds


def eval_num_batches(num_examples: int, batch_size: int, process_count: int) -> int:
  """Batches every process yields in evaluation: ceil(ceil(N / P) / batch_size)."""
  per_process = -(-num_examples // process_count)
  return -(-per_process // batch_size)


def make_eval_dataset(data_config: Any, *, batch_size: int, process_index: int | None = None,
                      process_count: int | None = None,
                      skip_counter: SkipCounter | None = None) -> grain.IterDataset:
  """Builds one evaluation pass over the eval files, in file order, without shuffling.

  The first N records (N = data.eval_max_examples if > 0, else all) are split into
  `process_count` contiguous blocks of ceil(N / P) records; every process yields exactly
  `eval_num_batches(N, batch_size, P)` batches, the missing examples being padding with
  weight 0 (so each jit step is joined by every process). With data.skip_bad_records, bad
  records also become weight-0 padding, so batch counts never change.

  Args:
    data_config: `config.data` (as for `make_train_dataset`, plus eval_pattern and
      eval_max_examples).
    batch_size: examples per batch of THIS process.
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    skip_counter: counts skipped bad records (default: a new one).

  Returns:
    A finite `grain.IterDataset` of batches (module docstring); weight 0 marks padding.
    Attributes: `.num_batches`, `.num_examples` (N, over all processes), `.skip_counter`,
    `.spec`.
  """
  spec = RecordSpec.from_config(data_config)
  process_index, process_count = _process(process_index, process_count)
  skip = bool(_get(data_config, "skip_bad_records", False))
  counter = skip_counter if skip_counter is not None else SkipCounter()
  index = build_record_index(_pattern(data_config, "eval_pattern"), skip_bad_records=skip,
                             skip_counter=counter)
  num = len(index)
  max_examples = int(_get(data_config, "eval_max_examples", 0) or 0)
  if max_examples > 0:
    num = min(num, max_examples)
  per_process = -(-num // process_count)
  num_batches = eval_num_batches(num, batch_size, process_count)
  lo = min(process_index * per_process, num)
  hi = min(lo + per_process, num)
  entries = np.full((num_batches * batch_size, 4), -1, np.int64)
  entries[:hi - lo] = index.entries[lo:hi]
  ds = grain.MapDataset.source(entries)
  ds = ds.map(_ReadAndParse(index.files, spec, skip, counter))
  ds = ds.to_iter_dataset(_read_options(data_config, batch_size), allow_nones=True)
  ds = ds.batch(batch_size, drop_remainder=False, batch_fn=spec.collate)
  ds = _prefetch(ds, data_config)
  ds.num_batches = num_batches
  ds.num_examples = num
  ds.skip_counter = counter
  ds.spec = spec
  return ds


# -------------------------------------------------------------------------------------------
# Data location (real files or the synthetic dataset).


class DataPatterns(tuple):
  """`(train_pattern, eval_pattern)`, unpackable as a pair, plus `.taxonomy_file`."""

  def __new__(cls, train_pattern: str, eval_pattern: str, taxonomy_file: str = ""):
    self = super().__new__(cls, (train_pattern, eval_pattern))
    self.taxonomy_file = taxonomy_file
    return self

  def __getnewargs__(self):
    return (self[0], self[1], self.taxonomy_file)

  @property
  def train_pattern(self) -> str:
    return self[0]

  @property
  def eval_pattern(self) -> str:
    return self[1]

  def __repr__(self) -> str:
    return (f"DataPatterns(train_pattern={self[0]!r}, eval_pattern={self[1]!r}, "
            f"taxonomy_file={self.taxonomy_file!r})")


def synthetic_settings(data_config: Any) -> dict:
  """The settings that determine the synthetic dataset's content (hashed into its path)."""
  syn = data_config.synthetic
  return synthetic.make_settings(
      num_train=syn.num_train, num_eval=syn.num_eval, num_classes=data_config.num_classes,
      num_labelled_classes=syn.num_labelled_classes, min_frames=syn.min_frames,
      max_frames=syn.max_frames, num_shards=syn.num_shards, seed=syn.seed,
      feature_sizes=data_config.feature_sizes, id_key=data_config.id_key)


def synthetic_directory(data_config: Any) -> str:
  """Where the synthetic dataset for `data_config` lives.

  `<root>/youtube8m_synthetic_<hash>`, root = data.synthetic.directory, else $MMJAX_CACHE,
  else ~/.cache/mmjax; the hash covers `synthetic_settings(data_config)`.
  """
  root = (_get(data_config.synthetic, "directory", "") or os.environ.get("MMJAX_CACHE") or
          os.path.join(os.path.expanduser("~"), ".cache", "mmjax"))
  key = hashlib.sha256(json.dumps(synthetic_settings(data_config), sort_keys=True).encode())
  return os.path.join(os.path.expanduser(root), f"youtube8m_synthetic_{key.hexdigest()[:12]}")


def resolve_data_patterns(data_config: Any,
                          log: Callable[[str], None] = print) -> DataPatterns:
  """Returns the train/eval file patterns, writing the synthetic dataset if needed.

  With a non-empty data.train_pattern, returns data.train_pattern and data.eval_pattern
  as they are. With an empty one, makes sure the synthetic frame-level dataset exists
  (written once, atomically: into a temporary directory that is then renamed, so
  concurrent processes are safe; reused when present) and returns its patterns.

  Args:
    data_config: `config.data`.
    log: progress printer.

  Returns:
    `DataPatterns`: unpacks as `(train_pattern, eval_pattern)`; `.taxonomy_file` is
    data.taxonomy_file, or the synthetic `taxonomy.csv` when that is empty and the synthetic
    data are used.
  """
  train, evaluation = _get(data_config, "train_pattern", ""), _get(data_config, "eval_pattern", "")
  taxonomy = _get(data_config, "taxonomy_file", "") or ""
  if train:
    return DataPatterns(train, evaluation, taxonomy)
  if evaluation:
    raise ValueError(f"data.eval_pattern is {evaluation!r} but data.train_pattern is empty (the "
                     "synthetic dataset): set both or neither")
  spec = RecordSpec.from_config(data_config)
  if spec.level != "frame" or spec.feature_names != ("rgb", "audio"):
    raise ValueError("the synthetic YouTube-8M dataset is frame level with feature lists "
                     f"('rgb', 'audio'); got data.level={spec.level!r}, data.feature_names="
                     f"{spec.feature_names}: set data.train_pattern/eval_pattern to real files")
  settings = synthetic_settings(data_config)
  directory = synthetic_directory(data_config)
  if not synthetic.is_complete(directory, settings):
    _write_synthetic_atomically(directory, settings, log)
  else:
    log(f"synthetic YouTube-8M: reusing {directory}")
  files = synthetic.synthetic_files(directory)
  return DataPatterns(files.train_pattern, files.eval_pattern, taxonomy or files.taxonomy_file)


def _write_synthetic_atomically(directory: str, settings: dict,
                                log: Callable[[str], None]) -> None:
  parent, name = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  now = time.time()
  for entry in os.listdir(parent):  # temporary directories of crashed writers
    path = os.path.join(parent, entry)
    if entry.startswith(f".{name}.tmp-") and now - os.path.getmtime(path) > _STALE_TMP_SECONDS:
      shutil.rmtree(path, ignore_errors=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
  try:
    kwargs = {k: v for k, v in settings.items() if k != "version"}
    synthetic.write_synthetic_youtube8m(tmp, log=log, **kwargs)
    os.chmod(tmp, 0o755)
    if os.path.isdir(directory) and not synthetic.is_complete(directory):
      log(f"synthetic YouTube-8M: replacing incomplete {directory}")
      shutil.rmtree(directory)
    try:
      os.rename(tmp, directory)
      log(f"synthetic YouTube-8M: ready in {directory}")
    except OSError:
      if not synthetic.is_complete(directory, settings):
        raise
      log(f"synthetic YouTube-8M: another process wrote {directory} first; using it")
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
