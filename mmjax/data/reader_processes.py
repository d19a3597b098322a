"""Batches read in worker processes and handed to the consumer through shared memory.

Why: reading, parsing and collating a batch is mostly Python work that holds the GIL, so on a
2-core AMD EPYC a second reader thread made the YouTube-8M pipeline slower, not faster
(2026-12-03, batches of 128 x 300 frames: 4,750-5,150 records/s with one thread, 3,850-4,460
with two; 18,800 voluntary context switches per 100 batches against 560). Worker processes do
not share a GIL. grain's `mp_prefetch` copies every element into a fresh shared-memory block;
on the same files that gave 2,050 and 2,590 records/s with 1 and 2 workers (the copy, and the
page faults of every fresh block). Here each worker's `BufferPool`s allocate their buffers in
shared memory (`buffers.set_allocator`) and `collate` writes the batch into them directly; the
consumer maps them without a copy, and hands a buffer back once nothing refers to its view any
more (the same reference-count rule as `BufferPool`), so the worker's pool reuses it.

Protocol with worker w (a spawned process: no copy of the consumer's threads or XLA state):
  consumer -> w: ('read', start) | ('release', [segment names]) | None (stop)
  w -> consumer, one message per 'read', in order:
    (start, ('ok', chunk, skip-counter delta)) | (start, ('error', exception))
Arrays of the chunk that live in w's segments travel as `_Shared(name, shape, dtype)`;
everything else is pickled.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import mmap
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import weakref
from multiprocessing import shared_memory
from typing import Any, Callable

import cloudpickle
import numpy as np

from mmjax.data import buffers

__all__ = ["WorkerPool"]

_POLL_S = 1.0  # how often a consumer waiting for a batch checks that its worker is alive
_JOIN_S = 5.0  # how long `close` waits for a worker to exit before terminating it
# Where only `WorkerPool._lent` refers to a view: the list entry's attribute, the local name
# and getrefcount's own argument.
_FREE_REFCOUNT = 3


@dataclasses.dataclass(frozen=True)
class _Shared:
  """An array in the worker's shared-memory segment `name`."""
  name: str
  shape: tuple[int, ...]
  dtype: str


def _map_tree(tree: Any, leaf: Callable[[Any], Any]) -> Any:
  """`leaf` applied to every non-container value of dicts, lists and (named) tuples."""
  if isinstance(tree, dict):
    return {k: _map_tree(v, leaf) for k, v in tree.items()}
  if isinstance(tree, list):
    return [_map_tree(v, leaf) for v in tree]
  if isinstance(tree, tuple):
    items = [_map_tree(v, leaf) for v in tree]
    return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
  return leaf(tree)


def _map_segment(segment: shared_memory.SharedMemory, shape: tuple[int, ...],
                 dtype: np.dtype) -> np.ndarray:
  """An array on a mapping of its own of `segment`, which it keeps alive (numpy holds the
  mmap): SharedMemory.close() would fail while any view of its buffer is alive, so `segment`
  is closed here at once and the mapping goes with the last view."""
  mapping = mmap.mmap(segment._fd, segment.size)  # pylint: disable=protected-access
  segment.close()
  return np.frombuffer(mapping, dtype, count=int(np.prod(shape))).reshape(shape)


# Worker side.


class _SegmentAllocator:
  """Arrays in shared-memory segments, one segment per array; lent to the consumer by name.

  A segment lives as long as its array: when the worker's pool drops the array, the segment
  is unlinked (the consumer's mapping, if any, stays valid until its views die)."""

  def __init__(self):
    self._segments: dict[int, tuple[weakref.ref, str]] = {}  # id(array) -> (array, name)
    self._lent: dict[str, np.ndarray] = {}  # held here until the consumer releases them

  def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    segment = shared_memory.SharedMemory(create=True, size=nbytes)
    try:  # reserve the pages now: a full /dev/shm would otherwise be a SIGBUS at first write
      os.posix_fallocate(segment._fd, 0, nbytes)  # pylint: disable=protected-access
    except OSError as e:
      segment.close()
      segment.unlink()
      raise OSError(f"cannot reserve {nbytes} bytes of shared memory for a batch buffer ({e}): "
                    "free or enlarge /dev/shm, or read with threads (config.data.num_workers "
                    "= 0)") from e
    array = _map_segment(segment, shape, dtype)
    key = id(array)
    self._segments[key] = (weakref.ref(array), segment.name)
    weakref.finalize(array, self._drop, key, segment)
    return array

  def _drop(self, key: int, segment: shared_memory.SharedMemory) -> None:
    self._segments.pop(key, None)
    segment.unlink()

  def lend(self, value: Any) -> Any:
    """`value` itself, or its `_Shared` handle (then held until `release`) if it is one of
    this allocator's arrays."""
    if isinstance(value, np.ndarray):
      entry = self._segments.get(id(value))
      if entry is not None and entry[0]() is value:
        self._lent[entry[1]] = value
        return _Shared(entry[1], value.shape, value.dtype.str)
    return value

  def release(self, names: list[str]) -> None:
    for name in names:
      self._lent.pop(name, None)


def _picklable(error: Exception) -> Exception:
  try:
    pickle.loads(pickle.dumps(error))
    return error
  except Exception:  # pylint: disable=broad-except
    return RuntimeError(f"{type(error).__name__}: {error}")


def _worker_main(payload: bytes, tasks, results) -> None:
  """A worker's loop: `read_chunk(reader, start)` for every 'read' task, in order."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's to handle
  # Skipped records are logged by the consumer, from the deltas sent with each chunk.
  logging.getLogger("mmjax.data").disabled = True
  read_chunk, reader = cloudpickle.loads(payload)
  allocator = _SegmentAllocator()
  buffers.set_allocator(allocator.empty)
  counter = reader.skip_counter
  try:
    while (message := tasks.get()) is not None:
      if message[0] == "release":
        allocator.release(message[1])
        continue
      start = message[1]
      try:
        chunk = read_chunk(reader, start)
        if chunk.batch is not None:
          chunk = chunk._replace(kept=[])  # the consumer needs them only for a short chunk
        delta = counter.take_delta() if counter is not None else None
        out = ("ok", _map_tree(chunk, allocator.lend), delta)
        del chunk
      except Exception as e:  # pylint: disable=broad-except
        out = ("error", _picklable(e))
      results.put((start, out))
  finally:
    results.cancel_join_thread()  # exit even if the consumer never reads what is queued


# Consumer side.


@dataclasses.dataclass
class _Lent:
  view: np.ndarray
  worker: "_Worker"
  name: str


class _Worker:
  """One worker process and its queues; `expected` are the chunks it still owes, in order."""

  def __init__(self, context, payload: bytes, index: int):
    self.tasks, self.results = context.Queue(), context.Queue()
    self.process = context.Process(target=_worker_main, args=(payload, self.tasks, self.results),
                                   name=f"mmjax-read-{index}", daemon=True)
    self.process.start()
    self.expected: collections.deque[_PendingChunk] = collections.deque()

  def receive(self, start: int):
    while True:
      try:
        return self.results.get(timeout=_POLL_S)
      except queue.Empty:
        if not self.process.is_alive():
          raise RuntimeError(
              f"reader worker process {self.process.name} (pid {self.process.pid}) exited "
              f"with code {self.process.exitcode} before returning the batch at stream "
              f"position {start} (a negative code is the signal that killed it, -9 often "
              "the out-of-memory killer)") from None


class _PendingChunk:
  """A chunk submitted to a worker (`concurrent.futures.Future`'s `result` and `cancel`); the
  pool sets its value (a chunk or an exception) when the worker's answer arrives."""

  def __init__(self, pool: "WorkerPool", worker: _Worker, start: int):
    self._pool, self._worker, self.start = pool, worker, start
    self.cancelled = False
    self.done = False
    self.value = None

  def cancel(self) -> bool:
    self.cancelled = True
    return True

  def result(self):
    while not self.done:
      self._pool.receive_next(self._worker)
    if isinstance(self.value, BaseException):
      raise self.value
    return self.value


class WorkerPool:
  """`num_workers` spawned processes, each running `read_chunk(reader, start)` on request.

  Args:
    read_chunk: (reader, start) -> a NamedTuple chunk (picklable by reference: a module-level
      function).
    reader: its state (pickled with cloudpickle, once per worker); `reader.skip_counter`, a
      `SkipCounter` or None, receives the workers' counts.
    num_workers: processes.
  """

  def __init__(self, read_chunk: Callable[[Any, int], Any], reader: Any, num_workers: int):
    payload = cloudpickle.dumps((read_chunk, reader))
    context = multiprocessing.get_context("spawn")
    self._counter = reader.skip_counter
    self._workers = [_Worker(context, payload, i) for i in range(num_workers)]
    self._next_worker = 0
    self._maps: dict[str, np.ndarray] = {}  # the workers' segments mapped here (bytes), by name
    self._lent: list[_Lent] = []  # views handed out, until nothing else refers to them
    self._closed = False

  def submit(self, start: int) -> _PendingChunk:
    """Asks the next worker (round robin) for the chunk at stream position `start`."""
    self._release_unreferenced()
    worker = self._workers[self._next_worker]
    self._next_worker = (self._next_worker + 1) % len(self._workers)
    worker.tasks.put(("read", start))
    pending = _PendingChunk(self, worker, start)
    worker.expected.append(pending)
    return pending

  def receive_next(self, worker: _Worker) -> None:
    """Receives `worker`'s next chunk (its oldest expected one)."""
    pending = worker.expected[0]
    start, (kind, *value) = worker.receive(pending.start)
    assert start == pending.start, (start, pending.start)
    worker.expected.popleft()
    pending.done = True
    if kind == "error":
      value[0].add_note(f"(in reader worker process {worker.process.name})")
      pending.value = value[0]
      return
    chunk, delta = value
    if pending.cancelled:
      # Nobody takes it: its buffers go straight back to the worker, and its records, read
      # again where the stream restarts, are counted there.
      names = []
      _map_tree(chunk, lambda leaf: isinstance(leaf, _Shared) and names.append(leaf.name))
      worker.tasks.put(("release", names))
      return
    if self._counter is not None and delta is not None:
      self._counter.add_delta(delta)
    pending.value = _map_tree(chunk, lambda leaf: self._view(leaf, worker))

  def _view(self, leaf: Any, worker: _Worker) -> Any:
    if not isinstance(leaf, _Shared):
      return leaf
    base = self._maps.get(leaf.name)
    if base is None:
      base = _map_segment(shared_memory.SharedMemory(name=leaf.name), (-1,), np.uint8)
      self._maps[leaf.name] = base
    view = base[:int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize].view(
        leaf.dtype).reshape(leaf.shape)
    self._lent.append(_Lent(view, worker, leaf.name))
    return view

  def _release_unreferenced(self) -> None:
    """Hands back to their workers the buffers whose views nothing refers to any more."""
    free: dict[int, tuple[_Worker, list[str]]] = {}
    kept = []
    for entry in self._lent:
      view = entry.view
      if sys.getrefcount(view) == _FREE_REFCOUNT:
        free.setdefault(id(entry.worker), (entry.worker, []))[1].append(entry.name)
      else:
        kept.append(entry)
      del view
    self._lent = kept
    for worker, names in free.values():
      worker.tasks.put(("release", names))

  def close(self) -> None:
    """Stops the workers (their segments are unlinked as they exit; views still held here
    stay valid)."""
    if self._closed:
      return
    self._closed = True
    for worker in self._workers:
      worker.tasks.put(None)
    for worker in self._workers:
      worker.process.join(_JOIN_S)
      if worker.process.is_alive():
        worker.process.terminate()
        worker.process.join(_JOIN_S)
      worker.tasks.close()
      worker.results.close()
    self._lent = []
    self._maps = {}
