"""Batch buffers that are reused once nothing refers to them any more.

An input pipeline at YouTube-8M's shapes hands out a 44 MB uint8 batch 30 times a second. A new
numpy array that large is a fresh mmap: the kernel faults in and zeroes every page of it, and
the pages go back at munmap when the batch dies; measured on a 2-core AMD EPYC, that zeroing was
the largest item of the pipeline's system time. A `BufferPool` hands the same memory out again,
but only once the pool holds the sole reference to it: a consumer that still holds the batch, a
view of it (numpy views keep their base alive) or a JAX transfer in progress (which holds a
reference to the array it reads) keeps it out of the pool, so a reused buffer can never be one
that somebody still reads.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["BufferPool", "set_allocator"]

# Where the pool alone refers to a buffer, sys.getrefcount sees: the pool's list, the loop
# variable and getrefcount's own argument.
_FREE_REFCOUNT = 3

# Where every pool of this process gets new arrays: np.empty, or (in a reader worker process,
# `mmjax.data.reader_processes`) arrays in shared memory that the consumer process maps.
_allocate = np.empty


def set_allocator(allocate) -> None:
  """Makes every `BufferPool` of this process get its new arrays from `allocate(shape,
  dtype)` (default np.empty)."""
  global _allocate
  _allocate = allocate


class BufferPool:
  """Thread-safe pool of uninitialised numpy arrays (`empty` is `np.empty` with reuse).

  Args:
    max_buffers: arrays kept for reuse; past that, `empty` allocates arrays it does not keep
      (a free kept array of another shape is replaced first).
  """

  def __init__(self, max_buffers: int = 16):
    self._buffers: list[np.ndarray] = []
    self._max = max_buffers
    self._lock = threading.Lock()

  def __getstate__(self):
    return {"_max": self._max}  # a copy in another process starts empty

  def __setstate__(self, state):
    self.__init__(state["_max"])

  def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape` and `dtype`: a kept one that nothing else refers to
    any more, or a new one (kept if there is room)."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    with self._lock:
      free_other = None
      for i in range(len(self._buffers)):  # (not enumerate: its cached tuple is a reference)
        buf = self._buffers[i]
        if sys.getrefcount(buf) != _FREE_REFCOUNT:
          continue
        if buf.shape == shape and buf.dtype == dtype:
          return buf
        free_other = i if free_other is None else free_other
      new = _allocate(shape, dtype)
      if len(self._buffers) < self._max:
        self._buffers.append(new)
      elif free_other is not None:
        self._buffers[free_other] = new
      return new

  def __len__(self) -> int:
    return len(self._buffers)
