"""Tests for mmjax.data.pipeline (grain input pipelines) and mmjax.data.synthetic."""

import json
import logging
import os
import shutil

import grain
import ml_collections
import numpy as np
import pytest
from conftest import load_config
from helpers.batches import assert_batches_equal, take
from tensorflow_datasets.proto import tf_example_generated_pb2 as tf_example

from mmjax.data import pipeline, synthetic, tfrecord
from mmjax.data.tfrecord import RecordError
from mmjax.data.youtube8m import RecordSpec, dequantize, read_records
from mmjax.metrics import read_taxonomy

NUM_TRAIN, NUM_EVAL, NUM_CLASSES = 64, 24, 64
SIZES = (16, 8)  # small feature dims keep the tests fast
MAX_FRAMES = 12


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_synthetic_youtube8m(
      directory, num_train=NUM_TRAIN, num_eval=NUM_EVAL, num_classes=NUM_CLASSES,
      num_labelled_classes=12, min_frames=4, max_frames=16, num_shards=3, seed=7,
      feature_sizes=SIZES, log=lambda msg: None)
  return directory


def make_config(directory, **overrides):
  config = ml_collections.ConfigDict(dict(
      train_pattern=os.path.join(directory, "train-*.tfrecord"),
      eval_pattern=os.path.join(directory, "validate-*.tfrecord"),
      level="frame", id_key="id", labels_key="labels", num_classes=NUM_CLASSES,
      feature_names=("rgb", "audio"), feature_sizes=SIZES, max_frames=MAX_FRAMES,
      skip_bad_records=False, num_threads=2, prefetch_batches=2, eval_max_examples=0,
      taxonomy_file=""))
  config.update(overrides)
  return config


def fingerprints(batch):
  """One bytes key per real example (its first rgb frame identifies the video)."""
  return [dequantize(batch["rgb"][i, 0]).tobytes() for i in np.nonzero(batch["weight"])[0]]


def all_fingerprints(pattern, max_frames=MAX_FRAMES):
  spec = RecordSpec(feature_sizes=SIZES, num_classes=NUM_CLASSES, max_frames=max_frames)
  return [r["rgb"][0].tobytes() for r in read_records(pattern, spec)]


# ------------------------------------------------------------------------------------------
# Training pipeline.


def test_train_batch_format(dataset_dir):
  config = make_config(dataset_dir)
  ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  assert isinstance(ds, grain.IterDataset) and ds.num_records == NUM_TRAIN
  (batch,) = take(ds, 1)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      "rgb": ((8, MAX_FRAMES, 16), np.uint8), "audio": ((8, MAX_FRAMES, 8), np.uint8),
      "mask": ((8, MAX_FRAMES), np.float32), "labels": ((8, NUM_CLASSES), np.float32),
      "weight": ((8,), np.float32)}
  assert (batch["weight"] == 1).all()
  lengths = batch["mask"].sum(1)
  assert (lengths >= 4).all() and (lengths <= MAX_FRAMES).all()
  assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
  for i, t in enumerate(lengths.astype(int)):  # mask is a prefix; padding is zero
    assert batch["mask"][i, :t].all() and not batch["rgb"][i, t:].any()
  assert ((batch["labels"].sum(1) >= 1) & (batch["labels"].sum(1) <= 4)).all()
  # Frames stay quantized (the model dequantizes them in the step): the records' own bytes.
  records = list(read_records(config.train_pattern, RecordSpec.from_config(config)))
  for i, t in enumerate(lengths.astype(int)):
    assert any(r["rgb"].shape[0] == t and np.array_equal(dequantize(batch["rgb"][i, :t]), r["rgb"])
               for r in records)


def test_train_determinism_and_seeds(dataset_dir):
  config = make_config(dataset_dir)
  make = lambda seed, threads: pipeline.make_train_dataset(
      make_config(dataset_dir, num_threads=threads), batch_size=8, seed=seed, process_index=0,
      process_count=1)
  first = take(make(0, 2), 10)  # 80 > 64 records: crosses an epoch boundary
  assert_batches_equal(first, take(make(0, 0), 10))  # thread count does not matter
  assert_batches_equal(first, take(make(0, 3), 10))
  other = take(make(1, 2), 10)
  assert not np.array_equal(first[0]["rgb"], other[0]["rgb"])
  # One epoch = each record once; the next epoch is a different permutation.
  epoch0 = [f for b in first[:8] for f in fingerprints(b)]
  assert sorted(epoch0) == sorted(all_fingerprints(config.train_pattern))
  epoch1_start = [f for b in first[8:] for f in fingerprints(b)]
  assert epoch1_start != epoch0[:16]


def test_reused_batch_buffers_never_change_a_batch_still_held(dataset_dir):
  """Batch buffers come back once released (mmjax.data.buffers): a consumer that drops each
  batch sees the same batches as one that holds them all, a held view keeps its buffer out of
  the pool, and the buffers are in fact reused."""
  make = lambda: pipeline.make_train_dataset(  # pylint: disable=unnecessary-lambda-assignment
      make_config(dataset_dir), batch_size=8, seed=0, process_index=0, process_count=1)
  held = take(make(), 12)
  iterator = iter(make())
  copies, buffer_ids = [], set()
  for k in range(12):
    batch = next(iterator)
    buffer_ids.add(id(batch["rgb"]))
    if k == 3:
      view = batch["rgb"][2:5]
      view_copy = view.copy()
    copies.append({key: value.copy() for key, value in batch.items()})
    del batch
  iterator.close()
  assert_batches_equal(held, copies)
  np.testing.assert_array_equal(view, view_copy)
  assert len(buffer_ids) < 12


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_disjoint_and_covering(dataset_dir, process_count):
  index = pipeline.build_record_index(os.path.join(dataset_dir, "train-*.tfrecord"))
  block = 2
  streams = [pipeline.train_entries(index, seed=3, process_index=p, process_count=process_count,
                                    batch_size=block) for p in range(process_count)]
  single = pipeline.train_entries(index, seed=3, process_index=0, process_count=1,
                                  batch_size=block * process_count)
  num_batches = 3 * NUM_TRAIN // (block * process_count)  # about three epochs
  for b in range(num_batches):
    joined = [tuple(streams[p][b * block + k][:2]) for p in range(process_count)
              for k in range(block)]
    expected = [tuple(single[b * block * process_count + k][:2])
                for k in range(block * process_count)]
    assert joined == expected  # the global batch does not depend on the process count
  for epoch in range(2):
    epoch_entries = [tuple(single[epoch * NUM_TRAIN + k][:2]) for k in range(NUM_TRAIN)]
    assert len(set(epoch_entries)) == NUM_TRAIN  # each epoch is a permutation
  # The same through the full pipeline: 2 processes x 4 batches of 8 = one epoch.
  config = make_config(dataset_dir)
  prints = [[f for b in take(pipeline.make_train_dataset(config, batch_size=8, seed=3,
                                                         process_index=p, process_count=2), 4)
             for f in fingerprints(b)] for p in range(2)]
  assert not set(prints[0]) & set(prints[1])
  assert sorted(prints[0] + prints[1]) == sorted(all_fingerprints(config.train_pattern))


def test_iterator_state_resumes_exactly(dataset_dir):
  ds = pipeline.make_train_dataset(make_config(dataset_dir), batch_size=8, seed=5,
                                   process_index=0, process_count=1)
  it = iter(ds)
  take(it, 6)
  state = it.get_state()
  json.dumps(state)  # JSON-able, as grain's checkpoint handler writes it
  expected = take(it, 5)  # crosses the epoch boundary at batch 8
  resumed = iter(ds)
  resumed.set_state(state)
  assert_batches_equal(expected, take(resumed, 5))
  # A freshly built dataset (a restarted job) resumes the same way.
  fresh = iter(pipeline.make_train_dataset(make_config(dataset_dir, num_threads=1), batch_size=8,
                                           seed=5, process_index=0, process_count=1))
  fresh.set_state(state)
  assert_batches_equal(expected, take(fresh, 5))


def test_orbax_checkpoint_roundtrip(dataset_dir, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  ds = pipeline.make_train_dataset(make_config(dataset_dir), batch_size=8, seed=2,
                                   process_index=0, process_count=1)
  it = iter(ds)
  take(it, 3)
  manager = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("ds",))
  manager.save(3, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = take(it, 4)
  restored = iter(ds)
  manager.restore(3, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointRestore(restored)))
  assert_batches_equal(expected, take(restored, 4))
  manager.close()


# ------------------------------------------------------------------------------------------
# Evaluation pipeline.


@pytest.mark.parametrize("process_count,batch_size,max_examples", [
    (1, 5, 0), (2, 5, 0), (3, 4, 0), (2, 8, 10), (5, 3, 0)])
def test_eval_batches_equal_across_processes(dataset_dir, process_count, batch_size,
                                             max_examples):
  config = make_config(dataset_dir, eval_max_examples=max_examples)
  num = max_examples or NUM_EVAL
  per_process = -(-num // process_count)  # ceil division
  expected_batches = -(-per_process // batch_size)
  prints, weights = [], 0.0
  for p in range(process_count):
    ds = pipeline.make_eval_dataset(config, batch_size=batch_size, process_index=p,
                                    process_count=process_count)
    batches = list(ds)
    assert len(batches) == ds.num_batches == expected_batches
    assert ds.num_examples == num
    for b in batches:
      assert b["rgb"].shape == (batch_size, MAX_FRAMES, 16)
      pad = b["weight"] == 0
      assert not b["rgb"][pad].any() and not b["labels"][pad].any() and not b["mask"][pad].any()
      weights += b["weight"].sum()
      prints += fingerprints(b)
  assert weights == num
  assert prints == all_fingerprints(config.eval_pattern)[:num]  # file order, no duplicates


def test_eval_is_repeatable(dataset_dir):
  ds = pipeline.make_eval_dataset(make_config(dataset_dir), batch_size=7, process_index=0,
                                  process_count=1)
  assert_batches_equal(list(ds), list(ds))


# ------------------------------------------------------------------------------------------
# Bad records.


@pytest.fixture()
def corrupt_dir(dataset_dir, tmp_path):
  """A copy of the train split: shard 0 record 2's data flipped, shard 2 truncated."""
  directory = tmp_path / "corrupt"
  directory.mkdir()
  for path in tfrecord.list_files(os.path.join(dataset_dir, "*.tfrecord")):
    shutil.copy(path, directory)
  shard0 = str(directory / "train-00000-of-00003.tfrecord")
  offset, length = tfrecord.index_tfrecord(shard0)[2]
  data = bytearray(open(shard0, "rb").read())
  data[offset + length // 2] ^= 0xFF
  open(shard0, "wb").write(bytes(data))
  shard2 = str(directory / "train-00002-of-00003.tfrecord")
  data = open(shard2, "rb").read()
  open(shard2, "wb").write(data[:-7])
  # A record with a label >= num_classes at the end of shard 1.
  shard1 = str(directory / "train-00001-of-00003.tfrecord")
  records = list(tfrecord.iter_tfrecord(shard1))
  seq = tf_example.SequenceExample.FromString(records[0])
  seq.context.feature["labels"].int64_list.value.append(NUM_CLASSES)
  tfrecord.write_tfrecord(shard1, records + [seq.SerializeToString()])
  return str(directory), len(records)


def test_bad_records_raise_with_file_and_index(corrupt_dir):
  directory, n1 = corrupt_dir
  config = make_config(directory)
  with pytest.raises(RecordError, match=r"train-00002-of-00003\.tfrecord: record \d+: "
                     "truncated file"):
    pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0, process_count=1)
  config.train_pattern = os.path.join(directory, "train-0000[01]-*.tfrecord")
  ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  with pytest.raises(RecordError) as error:
    take(ds, 12)
  message = str(error.value)
  assert (("train-00000-of-00003.tfrecord: record 2: data crc mismatch" in message) or
          (f"train-00001-of-00003.tfrecord: record {n1}: label {NUM_CLASSES} in 'labels' is out"
           in message)), message


def test_bad_records_skipped_and_counted(corrupt_dir, caplog):
  directory, n1 = corrupt_dir
  config = make_config(directory, skip_bad_records=True)
  with caplog.at_level(logging.WARNING, logger="mmjax.data"):
    ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                     process_count=1)
    num_records = ds.num_records  # the truncated tail is not indexed
    assert num_records == NUM_TRAIN  # -1 truncated, +1 bad label
    assert ds.skip_counter.count == 1
    prints = [f for b in take(ds, 2 * num_records // 8) for f in fingerprints(b)]
  assert ds.skip_counter.count >= 3
  assert any("train-00002-of-00003.tfrecord: record" in e and "truncated" in e
             for e in ds.skip_counter.examples)
  assert any("train-00000-of-00003.tfrecord: record 2: data crc mismatch" in e
             for e in ds.skip_counter.examples)
  assert "skipped bad record" in caplog.text and "record 2: data crc mismatch" in caplog.text
  assert len(set(prints)) == num_records - 2  # the two bad ones never appear
  # Eval: bad records become weight-0 padding; batch counts do not change.
  config.eval_pattern = config.train_pattern
  ds = pipeline.make_eval_dataset(config, batch_size=10, process_index=1, process_count=2)
  batches = list(ds)
  assert len(batches) == ds.num_batches == pipeline.eval_num_batches(num_records, 10, 2)
  ds0 = pipeline.make_eval_dataset(config, batch_size=10, process_index=0, process_count=2)
  weights = sum(b["weight"].sum() for b in list(ds0) + batches)
  assert weights == num_records - 2


def _read_all(ds, count):
  iterator = iter(ds)
  batches = [next(iterator) for _ in range(count)]
  return batches, iterator


def test_worker_processes_give_the_threads_batches_and_resume(dataset_dir):
  """data.num_workers = 2 (reader processes, batches in shared memory): the same training
  batches as reading in this thread, exact set_state, batches held by the consumer (views of
  the workers' buffers) never overwritten while the workers go on or after they exit, the
  buffers reused, and the same evaluation pass."""
  make = lambda **kw: pipeline.make_train_dataset(  # pylint: disable=unnecessary-lambda-assignment
      make_config(dataset_dir, **kw), batch_size=8, seed=0, process_index=0, process_count=1)
  expected, reference = _read_all(make(num_threads=0), 16)
  reference.close()
  iterator = iter(make(num_workers=2))
  held = [next(iterator) for _ in range(4)]
  state = iterator.get_state()
  for _ in range(12):
    next(iterator)  # dropped at once: their buffers go back to the workers
  pool = iterator._parent._pool  # pylint: disable=protected-access
  assert len(pool._maps) < 2 * 16  # pylint: disable=protected-access
  iterator.set_state(state)
  held += [next(iterator) for _ in range(12)]
  assert_batches_equal(held, expected)
  iterator.close()
  assert_batches_equal(held, expected)
  config = make_config(dataset_dir, num_threads=0)
  want = list(pipeline.make_eval_dataset(config, batch_size=10, process_index=1, process_count=2))
  config.num_workers = 2
  got = list(pipeline.make_eval_dataset(config, batch_size=10, process_index=1, process_count=2))
  assert_batches_equal(got, want)


def test_worker_processes_skip_count_and_raise_bad_records(corrupt_dir, caplog):
  """Bad records read by worker processes: skipped, the batches the same as with threads
  (a short chunk is completed in the consumer), counted and logged in the consumer's
  counter; or raised as the RecordError that names the file and the record."""
  directory, _ = corrupt_dir
  config = make_config(directory, skip_bad_records=True, num_threads=2)
  threads = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                        process_count=1)
  expected, reference = _read_all(threads, 20)
  reference.close()
  config.num_workers = 2
  with caplog.at_level(logging.WARNING, logger="mmjax.data"):
    ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                     process_count=1)
    got, iterator = _read_all(ds, 20)
    iterator.close()
  assert_batches_equal(got, expected)
  assert ds.skip_counter.count >= 3 and ds.skip_counter.good >= 20 * 8
  assert "record 2: data crc mismatch" in caplog.text
  config = make_config(directory, num_workers=2,
                       train_pattern=os.path.join(directory, "train-0000[01]-*.tfrecord"))
  ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  iterator = iter(ds)
  with pytest.raises(RecordError, match=r"train-0000[01]-of-00003\.tfrecord: record \d+") as error:
    for _ in range(12):
      next(iterator)
  assert "reader worker process" in "".join(error.value.__notes__)
  iterator.close()


def test_missing_files(tmp_path):
  config = make_config(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"train-\*\.tfrecord"):
    pipeline.make_train_dataset(config, batch_size=2, seed=0, process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match=r"validate-\*\.tfrecord"):
    pipeline.make_eval_dataset(config, batch_size=2, process_index=0, process_count=1)


def test_video_level_pipeline(tmp_path):
  records = []
  for i in range(6):
    ex = tf_example.Example()
    ex.features.feature["id"].bytes_list.value.append(f"v{i}".encode())
    ex.features.feature["labels"].int64_list.value.extend([i, 10])
    ex.features.feature["mean_rgb"].float_list.value.extend([float(i)] * 16)
    ex.features.feature["mean_audio"].float_list.value.extend([-float(i)] * 8)
    records.append(ex.SerializeToString())
  tfrecord.write_tfrecord(tmp_path / "train-0.tfrecord", records)
  config = make_config(str(tmp_path), level="video", feature_names=("mean_rgb", "mean_audio"),
                       eval_pattern=str(tmp_path / "train-0.tfrecord"))
  (batch,) = take(pipeline.make_train_dataset(config, batch_size=4, seed=0, process_index=0,
                                              process_count=1), 1)
  assert batch["rgb"].shape == (4, 1, 16) and batch["audio"].shape == (4, 1, 8)
  assert (batch["mask"] == 1).all()
  np.testing.assert_array_equal(batch["audio"][:, 0, 0], -batch["rgb"][:, 0, 0])
  batches = list(pipeline.make_eval_dataset(config, batch_size=4, process_index=0,
                                            process_count=1))
  assert [b["weight"].sum() for b in batches] == [4, 2]
  np.testing.assert_array_equal(batches[0]["rgb"][:, 0, 0], [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------
# Synthetic data.


def test_synthetic_labels_lengths_and_kinds(dataset_dir):
  meta = np.load(os.path.join(dataset_dir, synthetic.META_FILE))
  classes, kinds = meta["labelled_classes"], meta["class_kind"]
  assert len(classes) == 12 and len(set(classes)) == 12
  assert ((classes >= 0) & (classes < NUM_CLASSES)).all()
  assert sorted(np.bincount(kinds, minlength=3)) == [4, 4, 4]
  for split, num in (("train", NUM_TRAIN), ("validate", NUM_EVAL)):
    m = {k[len(split) + 1:]: v for k, v in meta.items() if k.startswith(split + "_")}
    labels, video, audio = m["labels"], m["video_concepts"], m["audio_concepts"]
    assert labels.shape == (num, 12)
    assert ((labels.sum(1) >= 1) & (labels.sum(1) <= 4)).all()
    np.testing.assert_array_equal(labels[:, kinds == 0], video[:, kinds == 0])
    av = kinds == synthetic.AUDIO_VISUAL
    own = ~m["foreign_audio"]
    np.testing.assert_array_equal(labels[own][:, kinds == 1], audio[own][:, kinds == 1])
    np.testing.assert_array_equal(labels[own][:, av], video[own][:, av] & audio[own][:, av])
    assert not video[:, kinds == 1].any() and not audio[:, kinds == 0].any()
    # Foreign audio: another vertical's video's audio track; labels describe the picture.
    foreign = np.flatnonzero(m["foreign_audio"])
    assert len(foreign) and (m["audio_donor"][foreign] >= 0).all()
    assert (m["audio_donor"][own] == -1).all()
    donors = m["audio_donor"][foreign]
    assert (m["vertical"][donors] != m["vertical"][foreign]).all()
    np.testing.assert_array_equal(audio[foreign], audio[donors])
    np.testing.assert_array_equal(m["audio_vertical"][foreign], m["vertical"][donors])
    assert not labels[foreign][:, kinds == 1].any()
    np.testing.assert_array_equal(labels[foreign][:, av], video[foreign][:, av])
    # Audio-visual events: same length, the audio shifted by at most 10 % of the video.
    both = video & audio & own[:, None]
    assert both.any()
    np.testing.assert_allclose(m["audio_length"][both], m["video_length"][both])
    shift = m["audio_start"][both] - m["video_start"][both]
    assert (np.abs(shift) <= 0.1 + 1e-9).all() and np.abs(shift).max() > 0.01
    # Most labels lie under the video's vertical.
    in_vertical = labels & (meta["class_vertical"][None, :] == m["vertical"][:, None])
    assert in_vertical.sum() > 0.5 * labels.sum()
  # Audio-visual classes need both halves: one half alone occurs and is negative.
  labels, video, audio = (np.concatenate([meta[f"{s}_{k}"] for s in ("train", "validate")])
                          for k in ("labels", "video_concepts", "audio_concepts"))
  assert (video[:, av] & ~audio[:, av] & ~labels[:, av]).any()
  assert (audio[:, av] & ~video[:, av] & ~labels[:, av]).any()
  # The records agree with the metadata; labels are in range and lengths within bounds.
  spec = RecordSpec(feature_sizes=SIZES, num_classes=NUM_CLASSES, max_frames=1000)
  records = list(read_records(os.path.join(dataset_dir, "train-*.tfrecord"), spec))
  assert len(records) == NUM_TRAIN
  for i, r in enumerate(records):
    assert r["rgb"].shape[0] == r["audio"].shape[0] == meta["train_num_frames"][i]
    assert 4 <= r["rgb"].shape[0] <= 16
    np.testing.assert_array_equal(r["labels"], classes[meta["train_labels"][i]])
  taxonomy = open(os.path.join(dataset_dir, "taxonomy.csv")).read().splitlines()
  assert taxonomy[0] == "class_index,level,name,parent" and len(taxonomy) == 13
  rows = [line.split(",") for line in taxonomy[1:]]
  assert sorted(int(r[0]) for r in rows) == sorted(classes.tolist())
  assert {int(r[1]) for r in rows} == {0, 1, 2, 3}
  # A hierarchy: every labelled class has a path to a level-0 category (the level-0 classes).
  hierarchy = read_taxonomy(os.path.join(dataset_dir, "taxonomy.csv"), NUM_CLASSES)
  assert len(hierarchy.categories) == 3 and (hierarchy.top[classes] >= 0).all()
  assert (hierarchy.top[np.setdiff1d(np.arange(NUM_CLASSES), classes)] == -1).all()


def test_synthetic_concepts_and_styles_are_in_the_frames(dataset_dir):
  """A video carries its concepts' prototypes in some frames, in both modalities (the audio's
  are the donor's for foreign audio), and its verticals' styles in all frames."""
  meta = np.load(os.path.join(dataset_dir, synthetic.META_FILE))
  spec = RecordSpec(feature_sizes=SIZES, num_classes=NUM_CLASSES, max_frames=1000)
  records = list(read_records(os.path.join(dataset_dir, "validate-*.tfrecord"), spec))
  world = synthetic._World(  # pylint: disable=protected-access
      np.random.default_rng(np.random.SeedSequence(7).spawn(3)[0]), NUM_CLASSES, 12, SIZES)
  np.testing.assert_array_equal(world.classes, meta["labelled_classes"])
  np.testing.assert_array_equal(world.verticals(7), meta["class_vertical"])
  styles = world.styles(7, int(meta["class_vertical"].max()) + 1)
  for modality, (name, key, vertical_key) in enumerate(
      (("rgb", "video_concepts", "vertical"), ("audio", "audio_concepts", "audio_vertical"))):
    frames = [r[name] - 4 / 512 for r in records]
    scores = np.array([(x @ world.prototypes[modality].T).max(0) for x in frames])  # [N, L]
    present = meta[f"validate_{key}"]
    carried = present.any(axis=0)
    pos, neg = scores[:, carried][present[:, carried]], scores[:, carried][~present[:, carried]]
    assert np.median(pos) > np.percentile(neg, 90), name
    style_scores = np.array([x.mean(0) @ styles[modality].T for x in frames])  # [N, K]
    own = np.zeros(style_scores.shape, bool)
    own[np.arange(len(frames)), meta[f"validate_{vertical_key}"]] = True
    # Along its own style a video's mean frame has |s|^2 = 1 more than along the others'.
    assert style_scores[own].mean() - style_scores[~own].mean() > 0.5, name


def test_synthetic_is_deterministic_and_reused(tmp_path):
  kwargs = dict(num_train=6, num_eval=3, num_classes=20, num_labelled_classes=6, min_frames=2,
                max_frames=5, num_shards=2, seed=3, feature_sizes=SIZES)
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  synthetic.write_synthetic_youtube8m(a, log=lambda m: None, **kwargs)
  synthetic.write_synthetic_youtube8m(b, log=lambda m: None, **kwargs)
  for name in sorted(os.listdir(a)):
    if name.endswith(".tfrecord"):
      assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read()
  assert sorted(os.listdir(a)) == [
      "synthetic.json", "synthetic_meta.npz", "taxonomy.csv", "train-00000-of-00002.tfrecord",
      "train-00001-of-00002.tfrecord", "validate-00000-of-00002.tfrecord",
      "validate-00001-of-00002.tfrecord"]
  mtimes = {n: os.stat(os.path.join(a, n)).st_mtime_ns for n in os.listdir(a)}
  logs = []
  synthetic.write_synthetic_youtube8m(a, log=logs.append, **kwargs)
  assert logs == [f"synthetic YouTube-8M: reusing {a}"]
  assert mtimes == {n: os.stat(os.path.join(a, n)).st_mtime_ns for n in os.listdir(a)}
  logs = []
  synthetic.write_synthetic_youtube8m(a, log=logs.append, **dict(kwargs, seed=4))
  assert "reusing" not in logs[0]


def test_resolve_data_patterns_tiny_config(tmp_path, monkeypatch):
  config = load_config("ytb8m", "tiny")
  config.data.synthetic.directory = str(tmp_path / "cache")
  logs = []
  patterns = pipeline.resolve_data_patterns(config.data, log=logs.append)
  train, evaluation = patterns  # unpacks as a pair
  directory = pipeline.synthetic_directory(config.data)
  assert os.path.dirname(directory) == str(tmp_path / "cache")
  assert train == os.path.join(directory, "train-*-of-*.tfrecord")
  assert evaluation == os.path.join(directory, "validate-*-of-*.tfrecord")
  assert patterns.taxonomy_file == os.path.join(directory, "taxonomy.csv")
  assert os.listdir(tmp_path / "cache") == [os.path.basename(directory)]  # no temp dirs left
  assert any("records written" in m for m in logs)
  # Reused, not rewritten.
  mtime = os.stat(os.path.join(directory, "synthetic.json")).st_mtime_ns
  logs = []
  assert pipeline.resolve_data_patterns(config.data, log=logs.append) == patterns
  assert logs == [f"synthetic YouTube-8M: reusing {directory}"]
  assert os.stat(os.path.join(directory, "synthetic.json")).st_mtime_ns == mtime
  # $MMJAX_CACHE is the default root; other settings give another directory.
  config.data.synthetic.directory = ""
  monkeypatch.setenv("MMJAX_CACHE", str(tmp_path / "env"))
  config.data.synthetic.seed += 1
  other = pipeline.synthetic_directory(config.data)
  assert other.startswith(str(tmp_path / "env")) and os.path.basename(other) != os.path.basename(
      directory)
  # The tiny config's pipelines run on it (real feature sizes 1024/128).
  config.data.synthetic.seed -= 1
  config.data.synthetic.directory = str(tmp_path / "cache")
  ds = pipeline.make_train_dataset(config.data, batch_size=config.batch_size, seed=0,
                                   process_index=0, process_count=1)
  (batch,) = take(ds, 1)
  assert batch["rgb"].shape == (8, 24, 1024) and batch["labels"].shape == (8, 64)
  ev = pipeline.make_eval_dataset(config.data, batch_size=8, process_index=0, process_count=1)
  assert len(list(ev)) == ev.num_batches == 3
  # Explicit patterns pass through; the taxonomy file comes from the config.
  config.data.train_pattern, config.data.eval_pattern = "/x/train*", "/x/validate*"
  config.data.taxonomy_file = "/x/tax.csv"
  patterns = pipeline.resolve_data_patterns(config.data)
  assert tuple(patterns) == ("/x/train*", "/x/validate*") and patterns.taxonomy_file == "/x/tax.csv"


def test_skipping_everything_is_an_error(dataset_dir):
  config = make_config(dataset_dir, skip_bad_records=True, id_key="video_id")
  ds = pipeline.make_train_dataset(config, batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  it = iter(ds)
  with pytest.raises(ValueError, match=r"records read so far were bad.*missing context feature "
                     "'video_id'"):
    next(it)
  it.close()
