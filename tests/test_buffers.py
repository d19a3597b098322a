"""mmjax.data.buffers: a buffer is reused only when nothing else refers to it."""

import pickle
import threading

import numpy as np

from mmjax.data import buffers
from mmjax.data.buffers import BufferPool


def test_released_buffer_is_reused_and_held_ones_are_not():
  pool = BufferPool(max_buffers=4)
  first = pool.empty((3, 4), np.uint8)
  first_id = id(first)
  second = pool.empty((3, 4), np.uint8)
  assert second is not first
  view = first[1:]
  del first
  assert id(pool.empty((3, 4), np.uint8)) != first_id  # a view keeps its base in use
  del view
  again = pool.empty((3, 4), np.uint8)
  assert id(again) == first_id
  assert pool.empty((3, 4), np.float32).dtype == np.float32  # shape and dtype must match
  assert pool.empty((2, 4), np.uint8).shape == (2, 4)


def test_a_reference_in_another_thread_keeps_a_buffer():
  pool = BufferPool()
  holder = {}
  ready, release = threading.Event(), threading.Event()

  def hold():
    holder["array"] = pool.empty((5,), np.int64)
    holder["array"][:] = 7
    ready.set()
    release.wait(10)

  thread = threading.Thread(target=hold)
  thread.start()
  ready.wait(10)
  other = pool.empty((5,), np.int64)
  other[:] = 0
  np.testing.assert_array_equal(holder["array"], 7)
  release.set()
  thread.join()


def test_full_pool_replaces_a_free_buffer_of_another_shape():
  pool = BufferPool(max_buffers=2)
  a = pool.empty((2,), np.uint8)
  pool.empty((3,), np.uint8)  # kept, then free
  c = pool.empty((4,), np.uint8)  # replaces the free (3,) buffer
  assert len(pool) == 2
  del a
  d = pool.empty((4,), np.uint8)
  assert d is not c  # c is still held here
  del c
  assert pool.empty((4,), np.uint8).shape == (4,)


def test_pools_take_new_arrays_from_the_allocator_and_pickle_empty():
  """`set_allocator` is where every pool's new arrays come from (reader worker processes use
  shared memory); a pickled pool (sent to a worker) arrives empty, with its size limit."""
  made = []

  def allocate(shape, dtype):
    made.append((shape, np.dtype(dtype)))
    return np.empty(shape, dtype)

  pool = BufferPool(max_buffers=3)
  kept = pool.empty((2, 3), np.uint8)
  buffers.set_allocator(allocate)
  try:
    pool.empty((4,), np.float32)
  finally:
    buffers.set_allocator(np.empty)
  assert made == [((4,), np.dtype(np.float32))]
  copy = pickle.loads(pickle.dumps(pool))
  assert len(pool) == 2 and len(copy) == 0 and copy._max == 3  # pylint: disable=protected-access
  del kept
