"""Deterministic, checkpointable grain input pipelines for YouTube-8M TFRecords.

Pipeline (train)::

  global record index over all files (sorted)  -- rows (file, record, offset, length)
    -> shuffle (a global permutation, reseeded every epoch) -> repeat forever
    -> this process's block of every global batch  -- disjoint per JAX process
       (sharded_stream.TrainStream)
    -> chunks of a batch's records, each read + verified + parsed + batched by one of
       `num_threads` threads (sharded_stream.BatchReader), in order
    -> read ahead by `prefetch_batches` batches in all (the threads' among them)

Everything is a pure function of (files, seed, process index/count), so the iterator's
`get_state()` (a few integers) restores it exactly; `grain.checkpoint.CheckpointSave/
CheckpointRestore` save/restore it through Orbax.

Batches are dicts of numpy arrays (T = data.max_frames at frame level, 1 at video level):
  'rgb': uint8 [B, T, 1024], 'audio': uint8 [B, T, 128] at frame level (the records' quantized
  bytes; the model dequantizes them in the step), float32 at video level (keys: the feature
  names; 'mean_rgb'/'mean_audio' become 'rgb'/'audio'), 'mask': float32 [B, T] (1 = real frame),
  'labels': float32 [B, num_classes] (multi-hot), 'weight': float32 [B] (1 real, 0 padding).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from typing import Any, Callable

import grain
import numpy as np

from mmjax.data import buffers, cache, sharded_stream, synthetic, tfrecord
from mmjax.data.sharded_stream import config_value as _get
from mmjax.data.sharded_stream import eval_num_batches
from mmjax.data.sharded_stream import process_info as _process
from mmjax.data.tfrecord import RecordError, SkipCounter
from mmjax.data.youtube8m import RecordSpec

__all__ = [
    "DataPatterns", "RecordError", "RecordIndex", "SkipCounter", "build_record_index",
    "eval_num_batches", "make_eval_dataset", "make_train_dataset", "resolve_data_patterns",
    "synthetic_directory", "train_entries",
]

logger = logging.getLogger("mmjax.data")

_MIN_BAD_TO_ABORT = 50
_SYNTHETIC_NAME = "youtube8m_synthetic"  # the synthetic dataset's directory prefix in the cache


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
  Good records are counted too (the trainer stops at config.data.max_bad_fraction). Even when
  skipping, more bad than good records (after `_MIN_BAD_TO_ABORT` bad ones) raise ValueError
  here, since no batch might ever be filled: that is a wrong config (e.g. id_key), not a few
  corrupt records.
  """

  def __init__(self, files: tuple[str, ...], spec: RecordSpec, skip_bad_records: bool,
               skip_counter: SkipCounter):
    self._reader = tfrecord.TFRecordReader(files)
    self._files = files
    self._spec = spec
    self._skip = skip_bad_records
    self._counter = skip_counter

  def __call__(self, entry: np.ndarray) -> dict | None:
    file_index, record_index, offset, length = (int(v) for v in entry)
    if file_index < 0:
      return None
    try:
      data = self._reader.read(file_index, record_index, offset, length)
      example = self._spec.parse_raw(data, path=self._files[file_index], index=record_index)
      self._counter.add_good()
      return example
    except RecordError as e:
      if not self._skip:
        raise
      self._counter.add(e)
      bad, good = self._counter.count, self._counter.good
      if bad >= _MIN_BAD_TO_ABORT and bad > good:
        raise ValueError(
            f"data.skip_bad_records: {bad} of the {bad + good} "
            f"records read so far were bad, e.g. {self._counter.examples[:3]}; check "
            "data.level, id_key, labels_key, feature_names, feature_sizes and num_classes "
            "against the files") from e
      return None


def _pattern(data_config: Any, key: str) -> str:
  pattern = _get(data_config, key, "")
  if not pattern:
    patterns = resolve_data_patterns(data_config, log=logger.info)
    pattern = patterns[0] if key == "train_pattern" else patterns[1]
  return pattern


# -------------------------------------------------------------------------------------------
# Datasets.


def train_entries(index: RecordIndex, *, seed: int, process_index: int, process_count: int,
                  batch_size: int) -> grain.MapDataset:
  """The infinite sequence of index entries that one process reads in training.

  `sharded_stream.train_stream` over `index.entries`: epoch after epoch of global
  permutations, process p reading the p-th block of batch_size entries of each global batch,
  so results do not depend on the number of processes.

  Args:
    index: the global record index.
    seed: shuffle seed.
    process_index: this process.
    process_count: number of processes.
    batch_size: examples per batch of this process.

  Returns:
    A `grain.MapDataset` of int64 [4] entries (see `RecordIndex`).
  """
  return sharded_stream.train_stream(index.entries, seed=seed, process_index=process_index,
                                     process_count=process_count, batch_size=batch_size)


def make_train_dataset(data_config: Any, *, batch_size: int, seed: int,
                       process_index: int | None = None, process_count: int | None = None,
                       skip_counter: SkipCounter | None = None) -> grain.IterDataset:
  """Builds the infinite, shuffled training pipeline of this process.

  Every epoch is a fresh global permutation of all records (a function of `seed` and the
  epoch); process p of P takes positions p, p + P, ... of it, so the processes read disjoint
  records that together cover the epoch. Reading and parsing run in `data.num_threads`
  threads of this process, or in `data.num_workers` worker processes; the output order does
  not depend on them.

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
  ds = sharded_stream.train_batches(
      index.entries, _ReadAndParse(index.files, spec, skip, counter),
      functools.partial(spec.collate, buffers=buffers.BufferPool()), data_config,
      batch_size=batch_size, seed=seed, process_index=process_index,
      process_count=process_count, skips=skip, skip_counter=counter)
  ds.skip_counter = counter
  ds.spec = spec
  ds.num_records = len(index)
  return ds


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
  ds = sharded_stream.eval_batches(
      index.entries, _ReadAndParse(index.files, spec, skip, counter),
      functools.partial(spec.collate, buffers=buffers.BufferPool()), data_config,
      batch_size=batch_size, process_index=process_index, process_count=process_count,
      skip_counter=counter)
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
  return cache.dataset_directory(_get(data_config.synthetic, "directory", ""), _SYNTHETIC_NAME,
                                 synthetic_settings(data_config))


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
  directory = cache.ensure_synthetic(data_config.synthetic, _SYNTHETIC_NAME,
                                     synthetic_settings(data_config),
                                     synthetic.write_synthetic_youtube8m,
                                     what="synthetic YouTube-8M", log=log)
  files = synthetic.synthetic_files(directory)
  return DataPatterns(files.train_pattern, files.eval_pattern, taxonomy or files.taxonomy_file)

