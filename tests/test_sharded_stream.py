"""The training stream's order and the batch reader (mmjax.data.sharded_stream)."""

import os
import signal
import threading

import grain
import numpy as np
import pytest

from mmjax.data import sharded_stream


@pytest.mark.parametrize("process_index,process_count", [(0, 1), (2, 3)])
def test_train_stream_is_grains_shuffle_and_repeat(process_index, process_count):
  """Positions map to grain's `source(entries).shuffle(shuffle_seed(seed)).repeat()` (the
  order earlier versions read, so their saved positions resume the same records), process p
  reading the p-th block of every global batch; over several epochs."""
  entries = np.arange(100, 137, dtype=np.int64)[:, None] * np.array([1, 10])
  batch = 4
  stream = sharded_stream.train_stream(entries, seed=5, process_index=process_index,
                                       process_count=process_count, batch_size=batch)
  reference = grain.MapDataset.source(entries).shuffle(
      seed=sharded_stream.shuffle_seed(5)).repeat()
  positions = range(0, 4 * len(entries))
  expected = np.stack([
      reference[(i // batch * process_count + process_index) * batch + i % batch]
      for i in positions])
  np.testing.assert_array_equal(stream.rows(0, len(positions)), expected)
  np.testing.assert_array_equal(stream.rows(37, 50), expected[37:87])
  np.testing.assert_array_equal(stream[41], expected[41])


def _reader(data_config, *, length=None, batch=4, skip=lambda v: False, fail_at=None,
            skip_none=True):
  """A BatchReader over the stream 0, 1, 2, ... whose examples are the positions' values
  (None where `skip`), collated into arrays; `fail_at` raises on reading that value."""
  def read(row):
    value = int(row)
    if value == fail_at:
      raise ValueError(f"bad record {value}")
    if value < 0 or skip(value):
      return None
    return value

  def collate(examples):
    return np.array([-1 if ex is None else ex for ex in examples])

  def rows(start, count):
    return np.arange(start, start + count, dtype=np.int64)

  return sharded_stream.BatchReader(rows, length, read, collate, batch_size=batch,
                                    num_threads=sharded_stream.num_threads(data_config),
                                    skip_none=skip_none,
                                    num_workers=sharded_stream.num_workers(data_config))


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_batch_reader_fills_skipped_records_and_resumes_exactly(threads):
  """Skipped (None) examples are dropped and the batch is filled from the positions after
  them, chunks coming back in order whatever the threads; the state is the position after
  the last record used, and restoring any state (also in the middle of a carried chunk)
  gives the same next batches."""
  skip = lambda v: v % 7 == 3 or 20 <= v < 27  # pylint: disable=unnecessary-lambda-assignment
  ds = _reader({"num_threads": threads}, skip=skip)
  kept = [v for v in range(200) if not skip(v)]
  iterator = iter(ds)
  states, batches = [], []
  for _ in range(12):
    states.append(iterator.get_state())
    batches.append(next(iterator))
  expected = [np.array(kept[4 * k:4 * k + 4]) for k in range(12)]
  for got, want in zip(batches, expected):
    np.testing.assert_array_equal(got, want)
  for k, state in enumerate(states):
    # After the last record used so far, at or before the first one not yet used.
    assert (kept[4 * k - 1] + 1 if k else 0) <= state["next_index"] <= kept[4 * k]
    resumed = iter(ds)
    resumed.set_state(state)
    for got, want in zip(_take(resumed, 3), expected[k:k + 3]):
      np.testing.assert_array_equal(got, want)
    resumed.close()
  iterator.close()


def test_batch_reader_state_counts_positions_without_skips():
  ds = _reader({"num_threads": 2}, skip_none=False)
  iterator = iter(ds)
  _take(iterator, 5)
  assert iterator.get_state() == {"next_index": 20}
  iterator.set_state({"next_index": 6})  # not a chunk boundary: chunks start where it says
  np.testing.assert_array_equal(next(iterator), [6, 7, 8, 9])
  np.testing.assert_array_equal(next(iterator), [10, 11, 12, 13])
  iterator.close()


@pytest.mark.parametrize("threads", [0, 2])
def test_batch_reader_evaluation_pads_and_ends(threads):
  """Evaluation: None reaches collate (padding), the last batch is short, then StopIteration."""
  ds = _reader({"num_threads": threads}, length=10, skip=lambda v: v == 5, skip_none=False)
  batches = list(iter(ds))
  assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, -1, 6, 7], [8, 9]]


@pytest.mark.parametrize("threads", [0, 2])
def test_batch_reader_raises_in_stream_order(threads):
  """A read error surfaces when its batch is asked for, after the batches before it."""
  iterator = iter(_reader({"num_threads": threads}, fail_at=9))
  np.testing.assert_array_equal(next(iterator), [0, 1, 2, 3])
  np.testing.assert_array_equal(next(iterator), [4, 5, 6, 7])
  with pytest.raises(ValueError, match="bad record 9"):
    next(iterator)
  iterator.close()


def test_batch_reader_reads_chunks_concurrently_each_in_one_thread():
  """One chunk per thread: the first records of the first two chunks meet at a barrier (only
  possible when two threads read at once), and every example of a batch is read by one
  thread."""
  readers = {}
  lock = threading.Lock()
  barrier = threading.Barrier(2, timeout=30)

  def rows(start, count):
    return np.arange(start, start + count)

  def read(row):
    if int(row) in (0, 8):
      barrier.wait()
    with lock:
      readers.setdefault(int(row) // 8, set()).add(threading.get_ident())
    return int(row)

  ds = sharded_stream.BatchReader(rows, None, read, list, batch_size=8, num_threads=2,
                                  skip_none=False)
  iterator = iter(ds)
  assert _take(iterator, 20)[19] == list(range(152, 160))
  iterator.close()
  assert all(len(threads) == 1 for threads in readers.values())
  assert len(set.union(*readers.values())) == 2


def test_worker_processes_read_skip_resume_and_raise_like_threads():
  """With data.num_workers processes: the same batches as the threads (skipped records
  refilled across chunks, which the workers send back as examples), set_state forwards and
  backwards while chunks are in flight, evaluation padding and its end, and a worker's read
  error raised at its batch, after the batches before it, with the worker named."""
  skip = lambda v: v % 7 == 3 or 20 <= v < 27  # pylint: disable=unnecessary-lambda-assignment
  kept = [v for v in range(300) if not skip(v)]
  expected = [kept[4 * k:4 * k + 4] for k in range(30)]
  iterator = iter(_reader({"num_workers": 2}, skip=skip))
  states, batches = [], []
  for _ in range(10):
    states.append(iterator.get_state())
    batches.append(next(iterator).tolist())
  assert batches == expected[:10]
  for k in (7, 2, 9):
    iterator.set_state(states[k])
    assert [b.tolist() for b in _take(iterator, 4)] == expected[k:k + 4]
  iterator.close()
  ds = _reader({"num_workers": 2}, length=10, skip=lambda v: v == 5, skip_none=False)
  assert [b.tolist() for b in iter(ds)] == [[0, 1, 2, 3], [4, -1, 6, 7], [8, 9]]
  iterator = iter(_reader({"num_workers": 2}, fail_at=9))
  assert [b.tolist() for b in _take(iterator, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  with pytest.raises(ValueError, match="bad record 9") as error:
    next(iterator)
  assert "in reader worker process mmjax-read-0" in "".join(error.value.__notes__)
  iterator.close()


def test_a_killed_worker_process_is_an_error_not_a_hang():
  iterator = iter(_reader({"num_workers": 1}, skip_none=False))
  assert next(iterator).tolist() == [0, 1, 2, 3]
  worker = iterator._pool._workers[0].process  # pylint: disable=protected-access
  os.kill(worker.pid, signal.SIGKILL)
  worker.join(30)
  with pytest.raises(RuntimeError, match=r"mmjax-read-0 \(pid \d+\) exited with code -9"):
    _take(iterator, 3)
  iterator.close()


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_num_threads_config_errors_name_the_key(value):
  with pytest.raises(ValueError, match="data.num_threads"):
    sharded_stream.num_threads({"num_threads": value})
  with pytest.raises(ValueError, match="data.num_workers"):
    sharded_stream.num_workers({"num_workers": value})


def test_prefetch_counts_the_reader_threads_and_starting_it_keeps_the_order():
  """prefetch_batches counts the reader threads' batches: 2 threads and 2 batches leave no
  prefetch thread, even when grain's checkpoint restore calls start_prefetch (whose thread
  would otherwise race `__next__` for the parent's batches)."""
  ds = sharded_stream.prefetch(_reader({"num_threads": 2}, skip_none=False),
                               {"prefetch_batches": 2})
  iterator = iter(ds)
  iterator.set_state({"next_index": 8})
  iterator.start_prefetch()
  assert [next(iterator).tolist() for _ in range(30)] == [
      list(range(k, k + 4)) for k in range(8, 128, 4)]
  iterator.close()
  more = iter(sharded_stream.prefetch(_reader({"num_threads": 1}, skip_none=False),
                                      {"prefetch_batches": 3}))
  assert [next(more).tolist() for _ in range(5)] == [list(range(k, k + 4)) for k in range(0, 20, 4)]
  more.close()
