"""Process-sharded, checkpointable grain streams over a table of record entries.

A dataset is an array of entries (one row per record: an int64 index, or a few int64 fields
such as (file, record, offset, length)); a `read` function turns an entry into an example and a
`collate` function turns a list of examples into a batch. This module decides which entries
each JAX process reads, in which order:

* training (`train_stream`): epoch after epoch of global permutations of all entries (epoch e
  seeded by `seed` and e), cut into global batches; process p reads the p-th block of each, so
  the global batch (the process batches concatenated in process order) does not depend on the
  number of processes;
* evaluation (`eval_entries`): one pass in order, a contiguous block per process, padded with
  -1 entries so that every process yields the same number of batches.

Batches are read by `BatchReader`: each of data.num_threads threads (or data.num_workers
processes) reads, parses and collates a whole batch's records (no per-record hand-offs between
readers), batches in stream order.

Everything is a pure function of (entries, seed, process index/count), so an iterator's
`get_state()` (a few integers) restores it exactly.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import sys
import weakref
from typing import Any, Callable, NamedTuple

import grain
import numpy as np

from mmjax.data import reader_processes
from mmjax.data.tfrecord import SkipCounter

__all__ = [
    "BatchReader", "config_int", "config_value", "eval_batches", "eval_entries", "eval_num_batches",
    "indexed_dataset", "num_threads", "num_workers", "positive_int", "prefetch", "process_info",
    "read_chunk", "shuffle_seed", "train_batches", "train_stream", "TrainStream",
]


def config_value(config: Any, key: str, default: Any = None) -> Any:
  """`config[key]` for a dict, `config.key` otherwise; `default` when absent."""
  if isinstance(config, dict):
    return config.get(key, default)
  return getattr(config, key, default)


def config_int(data_config: Any, key: str, *, minimum: int, default: int | None = None) -> int:
  """data.<key> (`default` when absent), checked to be an int >= `minimum` (the error names the
  config key)."""
  value = config_value(data_config, key, default)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    raise ValueError(f"config key data.{key} must be {wanted}, got {value!r}")
  return int(value)


def positive_int(data_config: Any, key: str) -> int:
  """data.<key>, checked to be a positive int (the error names the config key)."""
  return config_int(data_config, key, minimum=1)


def process_info(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """(process_index, process_count), from `jax` where None; checks 0 <= index < count."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index ({process_index}) < process_count "
                     f"({process_count})")
  return int(process_index), int(process_count)


def shuffle_seed(seed: int) -> int:
  """A 32-bit shuffle seed; hashing keeps seed s's epoch e+1 unrelated to seed s+1's epoch e."""
  return int(np.random.SeedSequence([int(seed) % 2**64, 0x59384D]).generate_state(1)[0])


class TrainStream(grain.MapDataset):
  """The infinite sequence of entries that one process reads in training (see `train_stream`).

  Position i of process p is global position g = (i // B * P + p) * B + i % B (B = batch_size,
  P = process_count): process p reads the p-th block of every global batch. Global position g
  is entry `index_shuffle(g mod N, seed + g // N)` of `entries` (N entries): epoch e = g // N
  is a permutation seeded by `shuffle_seed(seed) + e`, the order of grain's
  `MapDataset.source(entries).shuffle(shuffle_seed(seed)).repeat()` (tested against it), so
  iterator positions saved by earlier versions resume the same records. `rows` computes a
  whole range at once, without grain's per-element bookkeeping.
  """

  def __init__(self, entries: np.ndarray, *, seed: int, process_index: int, process_count: int,
               batch_size: int):
    super().__init__()
    if len(entries) == 0:
      raise ValueError("train_stream: no entries to read")
    self._entries = entries
    self._seed = shuffle_seed(seed)
    self._block, self._index, self._count = batch_size, process_index, process_count

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, i):
    if isinstance(i, slice):
      return self.slice(i)
    return self.rows(i, 1)[0]

  def rows(self, start: int, count: int) -> np.ndarray:
    """Entries at positions start, ..., start + count - 1: [count, ...] of `entries`' dtype."""
    step, offset = np.divmod(np.arange(start, start + count, dtype=np.int64), self._block)
    global_position = (step * self._count + self._index) * self._block + offset
    size, seed, index_shuffle = len(self._entries), self._seed, grain.experimental.index_shuffle
    # index_shuffle(index, max_index, seed, rounds), positionally: keywords cost 50 % more.
    shuffled = [index_shuffle(g % size, size - 1, (seed + g // size) % 2**32, 4)
                for g in global_position.tolist()]
    return self._entries[shuffled]

  def __str__(self) -> str:
    return (f"TrainStream(entries={len(self._entries)}, block={self._block}, "
            f"index={self._index}, count={self._count})")


def train_stream(entries: np.ndarray, *, seed: int, process_index: int, process_count: int,
                 batch_size: int) -> TrainStream:
  """The infinite sequence of entries that one process reads in training.

  The global stream is epoch after epoch of global permutations of `entries` (epoch e seeded by
  `seed` and e). It is cut into global batches of batch_size * process_count entries, and
  process p reads the p-th block of batch_size entries of each: the processes read disjoint
  entries, and the global batch (the concatenation of the process batches in process order) is
  exactly the batch a single process would read with the global batch size.

  Args:
    entries: [N, ...] array, one row per record (N >= 1).
    seed: shuffle seed.
    process_index: this process.
    process_count: number of processes.
    batch_size: examples per batch of this process.

  Returns:
    A `TrainStream` (a `grain.MapDataset`) of rows of `entries`.
  """
  return TrainStream(entries, seed=seed, process_index=process_index,
                     process_count=process_count, batch_size=batch_size)


def eval_num_batches(num_examples: int, batch_size: int, process_count: int) -> int:
  """Batches every process yields in evaluation: ceil(ceil(N / P) / batch_size)."""
  per_process = -(-num_examples // process_count)
  return -(-per_process // batch_size)


def eval_entries(entries: np.ndarray, *, batch_size: int, process_index: int,
                 process_count: int, max_examples: int = 0) -> tuple[np.ndarray, int, int]:
  """The entries one process reads in an evaluation pass, padded to whole batches.

  The first N entries (N = `max_examples` if > 0, else all) are split into `process_count`
  contiguous blocks of ceil(N / P); every process gets `eval_num_batches(N, batch_size, P)`
  batches' worth of rows, the missing ones being -1 rows (padding).

  Args:
    entries: [M, ...] array, one row per record, in evaluation order.
    batch_size: examples per batch of this process.
    process_index: this process.
    process_count: number of processes.
    max_examples: if > 0, only the first `max_examples` entries are evaluated.

  Returns:
    (padded entries [num_batches * batch_size, ...] of the dtype of `entries`, num_batches, N).
  """
  num = len(entries)
  if max_examples and max_examples > 0:
    num = min(num, int(max_examples))
  per_process = -(-num // process_count)
  num_batches = eval_num_batches(num, batch_size, process_count)
  lo = min(process_index * per_process, num)
  hi = min(lo + per_process, num)
  padded = np.full((num_batches * batch_size,) + entries.shape[1:], -1, entries.dtype)
  padded[:hi - lo] = entries[lo:hi]
  return padded, num_batches, num


# -------------------------------------------------------------------------------------------
# Reading, batching, prefetching.


def num_threads(data_config: Any) -> int:
  """data.num_threads (default 2): threads that read batches (0: in the consumer's thread)."""
  return config_int(data_config, "num_threads", minimum=0, default=2)


def num_workers(data_config: Any) -> int:
  """data.num_workers (default 0): worker processes that read batches instead of threads
  (`mmjax.data.reader_processes`; 0: data.num_threads threads)."""
  return config_int(data_config, "num_workers", minimum=0, default=0)


class _Chunk(NamedTuple):
  """What a reader (thread or process) makes of the positions [start, stop) of a stream."""
  start: int
  stop: int
  batch: Any  # collate(examples), or None when the chunk is short of a full batch
  kept: list  # [(position, example)] of the examples that were read, where the reader keeps them


class BatchReader(grain.IterDataset):
  """Batches read by whole chunks of consecutive stream positions, one chunk per reader.

  Each of `num_threads` threads (or `num_workers` processes) reads the `batch_size` positions
  of one chunk (rows -> `read` per row) and collates them into a batch in the same thread, so
  reading, parsing and copying into the batch run without per-record hand-offs; the chunks
  come back in stream order, whatever the number of readers. The
  iterator's state is `{'next_index': n}`, the number of stream positions consumed by the
  batches returned so far, as for grain's per-record pipelines, so it restores exactly.

  Args:
    rows: (start, count) -> the `count` entries from stream position `start`.
    length: positions in the stream (None: infinite).
    read: entry -> example, or None.
    collate: list of examples -> batch.
    batch_size: examples per batch.
    num_threads: reader threads (0: read in the thread that asks for the batch).
    num_workers: reader processes instead of threads, when > 0 (`reader_processes`: the
      batches reach this process through shared memory; `rows`, `read` and `collate` are
      pickled to each worker with cloudpickle).
    skip_counter: the `SkipCounter` that `read` counts skipped records in, if any: with
      worker processes, it receives their counts.
    skip_none: training: None examples are dropped and the batch is filled from the positions
      after it (a chunk that comes up short is completed from the next ones, so the reader
      threads keep their examples, a chunk's record bytes, until its batch is out). False
      (evaluation): None is passed to `collate` (padding) and the last batch may be short.
  """

  def __init__(self, rows: Callable[[int, int], np.ndarray], length: int | None,
               read: Callable[[np.ndarray], Any], collate: Callable[[list], Any], *,
               batch_size: int, num_threads: int, skip_none: bool, num_workers: int = 0,
               skip_counter: SkipCounter | None = None):
    super().__init__()
    self.rows, self.length, self.read, self.collate = rows, length, read, collate
    self.batch_size, self.num_threads, self.skip_none = batch_size, num_threads, skip_none
    self.num_workers, self.skip_counter = num_workers, skip_counter

  @property
  def readers(self) -> int:
    """Chunks read at the same time: the worker processes, else the threads."""
    return self.num_workers or self.num_threads

  def __iter__(self) -> "_BatchReadIterator":
    return _BatchReadIterator(self)

  def __str__(self) -> str:
    return (f"BatchReader(batch_size={self.batch_size}, num_threads={self.num_threads}, "
            f"num_workers={self.num_workers}, skip_none={self.skip_none})")


def read_chunk(reader: BatchReader, start: int) -> _Chunk:
  """Reads and collates the chunk of `reader`'s stream at position `start` (in a reader
  thread, a worker process, or the consumer's thread)."""
  count = reader.batch_size
  if reader.length is not None:
    count = max(0, min(count, reader.length - start))
  examples = [reader.read(row) for row in reader.rows(start, count)] if count else []
  if not reader.skip_none:
    return _Chunk(start, start + count, reader.collate(examples) if examples else None, [])
  kept = [(start + i, ex) for i, ex in enumerate(examples) if ex is not None]
  batch = reader.collate([ex for _, ex in kept]) if len(kept) == reader.batch_size else None
  return _Chunk(start, start + count, batch, kept)


class _BatchReadIterator(grain.DatasetIterator):
  """`BatchReader`'s iterator: `reader.readers` chunks in flight, returned in order."""

  def __init__(self, reader: BatchReader):
    super().__init__()
    self._reader = reader
    self._pool = None
    if reader.num_workers > 0:
      self._pool = reader_processes.WorkerPool(read_chunk, reader, reader.num_workers)
      self._submit, self._shutdown = self._pool.submit, self._pool.close
    elif reader.num_threads > 0:
      self._pool = concurrent.futures.ThreadPoolExecutor(reader.num_threads,
                                                         thread_name_prefix="mmjax-read")
      self._submit = functools.partial(self._pool.submit, read_chunk, reader)
      self._shutdown = functools.partial(self._pool.shutdown, wait=False, cancel_futures=True)
    self._position = 0  # positions consumed by the batches returned so far
    self._pending = collections.deque()  # chunk futures, in stream order
    self._next_chunk = 0  # start of the next chunk to submit
    self._carry = []  # [(position, example)] read but not yet batched (skip_none only)
    self._carry_stop = 0  # the position after the chunks that `_carry` came from

  def _take(self) -> _Chunk:
    """The next chunk in stream order (keeping `reader.readers` chunks in flight)."""
    if self._pool is None:
      chunk = read_chunk(self._reader, self._next_chunk)
      self._next_chunk = chunk.start + self._reader.batch_size
      return chunk
    while len(self._pending) < self._reader.readers:
      self._pending.append(self._submit(self._next_chunk))
      self._next_chunk += self._reader.batch_size
    return self._pending.popleft().result()

  def __next__(self):
    self._assert_not_closed()
    size = self._reader.batch_size
    if not self._reader.skip_none:
      chunk = self._take()
      if chunk.batch is None:
        raise StopIteration
      self._position = chunk.stop
      return chunk.batch
    if not self._carry:
      chunk = self._take()
      if chunk.batch is not None:
        self._position = chunk.stop
        return chunk.batch
      if self._reader.num_workers:
        return self._complete_here(chunk)
      self._carry, self._carry_stop = chunk.kept, chunk.stop
    while len(self._carry) < size:
      chunk = self._take()
      if chunk.stop == chunk.start:  # the end of a finite stream
        raise StopIteration
      self._carry.extend(chunk.kept)
      self._carry_stop = chunk.stop
    taken, self._carry = self._carry[:size], self._carry[size:]
    self._position = self._carry[0][0] if self._carry else self._carry_stop
    return self._reader.collate([ex for _, ex in taken])

  def _complete_here(self, chunk: _Chunk):
    """Worker processes: a chunk short of a batch (skipped records) is completed from the
    positions after it, read in this thread, and the chunks restart after the last one used.
    The same batches as the threads' carry (the first `batch_size` examples from the
    position), without sending every later chunk's examples between processes; the chunks
    in flight are dropped, so many bad records make the workers redo work."""
    reader = self._reader
    if chunk.stop == chunk.start:  # the end of a finite stream
      raise StopIteration
    examples = [ex for _, ex in chunk.kept]
    position = chunk.stop
    while len(examples) < reader.batch_size:
      if reader.length is not None and position >= reader.length:
        raise StopIteration
      example = reader.read(reader.rows(position, 1)[0])
      position += 1
      if example is not None:
        examples.append(example)
    self._drop_pending()
    self._position = self._next_chunk = position
    return reader.collate(examples)

  def get_state(self) -> dict:
    return {"next_index": self._position}

  def set_state(self, state: dict) -> None:
    self._drop_pending()
    self._position = self._next_chunk = int(state["next_index"])
    self._carry = []

  def _drop_pending(self) -> None:
    for future in self._pending:
      future.cancel()
    self._pending.clear()

  def close(self) -> None:
    if self._closed:
      return
    self._drop_pending()
    if self._pool is not None:
      self._shutdown()
    super().close()

  def __str__(self) -> str:
    return f"BatchReadIterator(position={self._position})"


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
  """grain's thread-prefetch iterator with an idempotent `close`, and no thread at buffer size
  0 (grain's checkpoint restore calls `start_prefetch`, whose thread would then read into an
  unbounded queue while `__next__` also reads the parent: batches out of order)."""

  def start_prefetch(self):
    if self._target_prefetch_buffer_size > 0:
      super().start_prefetch()

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


def prefetch(ds: BatchReader, data_config: Any) -> grain.IterDataset:
  """`ds` read ahead by max(data.prefetch_batches (default 2), `ds.readers`) batches in all:
  the readers (threads or processes) already hold `ds.readers` batches ahead, and a prefetch
  thread holds the rest, if any."""
  # Always wrapped (0 = no prefetch thread): grain would otherwise inject its own.
  extra = int(config_value(data_config, "prefetch_batches", 2)) - ds.readers
  return _ThreadPrefetchIterDataset(ds, prefetch_buffer_size=max(0, extra))


def train_batches(entries: np.ndarray, read: Callable[[np.ndarray], Any],
                  collate: Callable[[list], Any], data_config: Any, *, batch_size: int,
                  seed: int, process_index: int, process_count: int,
                  skips: bool = False,
                  skip_counter: SkipCounter | None = None) -> grain.IterDataset:
  """The infinite, shuffled training batches of this process.

  `train_stream` -> chunks of `batch_size` positions, each read (`read` per entry) and collated
  by one of data.num_threads threads or data.num_workers processes (`BatchReader`) ->
  data.prefetch_batches batches of thread prefetch. The iterator supports
  `get_state()`/`set_state()` and resumes exactly.

  Args:
    entries: [N, ...] array, one row per record.
    read: entry row -> example; None to skip the record, where `skips`.
    collate: list of `batch_size` examples -> batch.
    data_config: `config.data` (keys num_threads, num_workers, prefetch_batches).
    batch_size: examples per batch of this process.
    seed: shuffle seed.
    process_index: this process.
    process_count: number of processes.
    skips: `read` may return None (a skipped bad record): the batch is then filled from the
      records after it. False: every read returns an example.
    skip_counter: the `SkipCounter` that `read` counts in, if any (see `BatchReader`).

  Returns:
    A `grain.IterDataset` of batches.
  """
  stream = train_stream(entries, seed=seed, process_index=process_index,
                        process_count=process_count, batch_size=batch_size)
  ds = BatchReader(stream.rows, None, read, collate, batch_size=batch_size,
                   num_threads=num_threads(data_config), skip_none=skips,
                   num_workers=num_workers(data_config), skip_counter=skip_counter)
  return prefetch(ds, data_config)


def eval_batches(entries: np.ndarray, read: Callable[[np.ndarray], Any],
                 collate: Callable[[list], Any], data_config: Any, *, batch_size: int,
                 process_index: int, process_count: int,
                 skip_counter: SkipCounter | None = None) -> grain.IterDataset:
  """One evaluation pass of this process (see `eval_entries`), in batches.

  Args:
    entries: [M, ...] array, one row per record, in evaluation order.
    read: entry row -> example; it must return None for padding rows (all -1).
    collate: list of `batch_size` examples, None for padding -> batch (padding weight 0).
    data_config: `config.data` (keys eval_max_examples, num_threads, num_workers,
      prefetch_batches).
    batch_size: examples per batch of this process.
    process_index: this process.
    process_count: number of processes.
    skip_counter: the `SkipCounter` that `read` counts in, if any (see `BatchReader`).

  Returns:
    A finite `grain.IterDataset` of batches with attributes `.num_batches` (the same on every
    process) and `.num_examples` (N, over all processes).
  """
  max_examples = int(config_value(data_config, "eval_max_examples", 0) or 0)
  padded, num_batches, num = eval_entries(entries, batch_size=batch_size,
                                          process_index=process_index,
                                          process_count=process_count, max_examples=max_examples)
  ds = BatchReader(lambda start, count: padded[start:start + count], len(padded), read, collate,
                   batch_size=batch_size, num_threads=num_threads(data_config), skip_none=False,
                   num_workers=num_workers(data_config), skip_counter=skip_counter)
  ds = prefetch(ds, data_config)
  ds.num_batches = num_batches
  ds.num_examples = num
  return ds


def indexed_dataset(data_config: Any, key: str,
                    records: Callable[[Any, str], tuple[int, Callable, Callable]], *,
                    batch_size: int, seed: int | None = None, process_index: int | None = None,
                    process_count: int | None = None) -> grain.IterDataset:
  """The batches of this process over the records 0..N-1 of the list that data.<key> names.

  With a `seed`, the infinite, shuffled training pipeline (`train_batches`): every epoch is a
  global permutation of the records (a function of `seed` and the epoch); each process reads its
  block of every global batch (`train_stream`), so the global batch does not depend on the
  process count. Its iterator supports `get_state()`/`set_state()` and resumes exactly.

  With seed None, one evaluation pass in list order (`eval_batches`): the first M records
  (M = data.eval_max_examples if > 0, else all) are split into contiguous blocks, one per
  process; every process yields `.num_batches` batches, the missing examples being padding with
  weight 0 (see `eval_entries`).

  Records are read in data.num_threads threads.

  Args:
    data_config: `config.data` (keys num_threads, prefetch_batches, eval_max_examples and those
      that `records` reads).
    key: the config key of the list (e.g. 'train_file'), passed on to `records`.
    records: (data_config, key) -> (N, load, collate): `load(i)` returns the example of record
      i (0 <= i < N); `collate` maps a list of examples (None = padding) to a batch. Called
      after the process arguments are checked.
    batch_size: examples per batch of THIS process (training: global batch / process count).
    seed: shuffle seed (non-negative int) of the training pipeline; None: an evaluation pass.
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).

  Returns:
    A `grain.IterDataset` of batches: in training infinite, with attribute `.num_records` (N);
    in evaluation finite, with attributes `.num_batches` and `.num_examples` (M, over all
    processes).
  """
  process_index, process_count = process_info(process_index, process_count)
  num_records, load, collate = records(data_config, key)
  entries = np.arange(num_records, dtype=np.int64)

  def read(entry: np.ndarray) -> Any:
    index = int(entry)
    return None if index < 0 else load(index)

  if seed is None:
    return eval_batches(entries, read, collate, data_config, batch_size=batch_size,
                        process_index=process_index, process_count=process_count)
  ds = train_batches(entries, read, collate, data_config, batch_size=batch_size, seed=seed,
                     process_index=process_index, process_count=process_count)
  ds.num_records = num_records
  return ds
