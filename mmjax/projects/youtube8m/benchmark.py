"""YouTube-8M benchmarks (`launch/benchmark.py --suite=youtube8m`): train step, input pipeline
(vs. the TF starter code), metrics.

Each benchmark returns a flat dict of numbers (plus a few strings); `run_suite` gathers them
into the results dict that `report` prints as a table and `records` turns into JSON records
(shared helpers: `mmjax.benchmarking`). What is timed, in short:

* `train_step_benchmark`: the jit-compiled, sharded train step of `mmjax.train.steps` on random
  batches in the real batch format (`mmjax.benchmarking.task_train_step_benchmark`): compile
  time (`lower` + `compile`), then steady-state seconds per step (each step ends with
  `block_until_ready`) -> examples/s.
* `input_pipeline_benchmark`: mmjax's grain training pipeline (`make_train_dataset`: read,
  verify CRC, parse, pad, batch; uint8 frames, dequantized later inside the step) over
  TFRecord files -> records/s, at 1 and 2 threads.
* `tf_data_benchmark`: the reference a user would pick, a tuned graph-mode `tf.data` reader of
  the starter code's kind (parallel map with AUTOTUNE, padding, batching, prefetch) over the
  same files, at 1 and 2 threads -> records/s; the report prints ours / tf.data.
* `tf_starter_benchmark`: for context, the starter code's eager per-record reading of the same
  files -> records/s, and a check that TensorFlow's arrays equal ours. TensorFlow is imported
  inside the functions only; it is not a dependency of mmjax (`pip install mmjax[bench]`).
* `end_to_end_benchmark` (--end_to_end_window): a real training run's examples/s over steady
  windows, against the isolated step.
* with --compare_torch, `torch_reference.torch_train_step_benchmark`: a stock PyTorch eager
  float32 implementation of each model, next to ours, and the float32 matmul peak.
* `metrics_benchmark`: `Youtube8mMetrics.update` over batches of random scores, then
  `compute()`, e.g. at 128k videos x 3862 classes.
* per benchmark, the process peak RSS (`mmjax.benchmarking.run_phase`), and for the run the
  process peak and, on GPU/TPU, the devices' peak bytes in use.

Notes on the input pipeline: see "Input pipeline: what was measured" in mmjax/projects/youtube8m/
README.md.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Sequence

import ml_collections
import numpy as np

from mmjax import benchmarking
from mmjax import metrics as mm_metrics
from mmjax.benchmarking import MB, fmt, log, run_phase
from mmjax.data import pipeline, sharded_stream, tfrecord, youtube8m
from mmjax.projects.youtube8m.model import dequantize_frames

TF_MISSING = "tensorflow not installed: pip install tensorflow-cpu to compare"

# Units of this suite's results keys (None: a setting or a sanity value), see
# `mmjax.benchmarking.to_records`; the train step's keys are in `mmjax.benchmarking.UNITS`.
UNITS: dict[str, str | None] = {
    "frames": None, "fusion": None, "batches": None, "num_threads": None, "num_workers": None,
    "num_files": None,
    "num_records_in_files": None, "num_videos": None, "num_classes": None, "batch": None,
    "gap": None,
    "records": "records", "mean_frames": "frames", "startup_s": "s", "seconds": "s",
    "records_per_s": "records/s", "mb_per_s": "MiB/s", "batch_mb": "MiB",
    "tf_max_abs_diff": "1",
    "update_s": "s", "compute_s": "s", "total_s": "s", "videos_per_s": "videos/s",
    "steps": None, "window": None, "examples_per_s_with_checkpoint": "examples/s",
    "checkpoint_write_s": "s", "wall_s": "s",
}
# Record-name parts of the results sections whose key is not the benchmark's name.
SECTIONS = {"train": "train_step"}
THREADS = (1, 2)  # the input pipelines' thread counts, ours and tf.data's


# -------------------------------------------------------------------------------------------
# Train step.


def random_batch(spec: youtube8m.RecordSpec, batch_size: int, rng: np.random.Generator, *,
                 min_frames: int = 1, labels_per_video: int = 3) -> dict[str, np.ndarray]:
  """A batch in the real format, made by `spec.collate` from random uint8 frame features.

  Args:
    spec: the record spec (feature sizes, num_classes, max_frames).
    batch_size: examples.
    rng: random generator.
    min_frames: shortest video; lengths are uniform in [min_frames, max_frames].
    labels_per_video: positive labels per video (at most num_classes).

  Returns:
    The batch dict (see `mmjax.data.pipeline`): dequantized float32 features, mask, labels,
    weight.
  """
  examples = []
  num_labels = min(labels_per_video, spec.num_classes)
  for i in range(batch_size):
    frames = int(rng.integers(min(min_frames, spec.num_frames), spec.num_frames + 1))
    features = {name: rng.integers(0, 256, (frames, dim), dtype=np.uint8)
                for name, dim in zip(spec.output_names, spec.feature_sizes)}
    labels = rng.choice(spec.num_classes, num_labels, replace=False).astype(np.int64)
    examples.append({"id": f"bench{i}", "labels": labels, "features": features})
  return spec.collate(examples)


def parse_model(name: str) -> tuple[str, str]:
  """(family, fusion) of a benchmarked model: 'transformer' (late fusion) or a row of seed 001's
  tables, '<family>_<fusion>' (e.g. 'netvlad_cmc')."""
  for fusion in ("early", "late", "cmg", "cmc"):
    if name.endswith(f"_{fusion}"):
      return name[:-len(fusion) - 1], fusion
  return name, "late"


def model_config(config, model_name: str, *, batch_size: int, frames: int):
  """A copy of `config` for one benchmarked model: model.name and model.fusion from
  `model_name` (`parse_model`), data.max_frames=`frames`, batch_size=`batch_size`, no
  init_from except, for the cm rows, the correlation tower frozen as in training (randomly
  initialised: no run is loaded, so it runs forward only)."""
  family, fusion = parse_model(model_name)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.name = family
    config.model.fusion = fusion
    config.init_from = ()
    if fusion in ("cmg", "cmc"):
      config.init_from = (ml_collections.ConfigDict(dict(
          source="", step="latest", source_subtree="tower", target_subtree="correlation",
          frozen=True)),)
    config.data.max_frames = int(frames)
    config.batch_size = int(batch_size)
  return config


def train_step_benchmark(config, model_name: str, *, batch_size: int, frames: int, steps: int,
                         warmup: int = 1, num_batches: int = 2) -> dict[str, Any]:
  """Times the sharded train step of one model on random batches.

  The task is built from `config` with model.name and model.fusion from `model_name`
  (`parse_model`) and data.max_frames=`frames`; the batches are in the real format (uint8
  frame features dequantized by `RecordSpec.collate`, lengths uniform in [frames/10, frames],
  3 labels per video, see `random_batch`). For the cm rows the correlation tower (randomly
  initialised: no run is loaded) is frozen as in training, so it runs forward only. What is
  timed: `mmjax.benchmarking.task_train_step_benchmark`.

  Args:
    config: the experiment config (e.g. configs/ytb8m.py); not modified.
    model_name: 'transformer', 'netvlad', 'attention_rnn' (late fusion) or '<family>_<fusion>'.
    batch_size: global batch (divisible by the mesh's data axis).
    frames: frames per video (data.max_frames).
    steps: timed steps (>= 1).
    warmup: untimed steps after the first one.
    num_batches: distinct random batches cycled through.

  Returns:
    {'model', 'fusion', 'frames'} and the result of `task_train_step_benchmark`: 'batch_size',
    'num_devices', 'params', 'init_s', 'compile_s', 'first_step_s', 'step_s', 'step_min_s',
    'examples_per_s', 'final_loss', 'compiler_options' and, where XLA reports them,
    'flops_per_step', 'bytes_accessed_per_step', 'compiled_temp_mb', 'compiled_argument_mb',
    'tflops_per_s'.
  """
  config = model_config(config, model_name, batch_size=batch_size, frames=frames)
  family, fusion = config.model.name, config.model.fusion
  spec = youtube8m.RecordSpec.from_config(config.data)

  def make_batch(task, size, rng):
    del task
    return random_batch(spec, size, rng, min_frames=max(1, frames // 10))

  result, _ = benchmarking.task_train_step_benchmark(
      config, make_batch, batch_size=batch_size, steps=steps, warmup=warmup,
      num_batches=num_batches)
  return {"model": family, "fusion": fusion, "frames": int(frames), **result}


def end_to_end_benchmark(config, model_name: str, *, batch_size: int, frames: int,
                         window: int, workdir: str) -> dict[str, Any]:
  """examples/s of a real training run (`mmjax.train.trainer.train_and_evaluate`) over windows
  of steady steps, to set against the isolated step (`train_step_benchmark`).

  The run trains `model_name` (`model_config`) for 3 * `window` steps on config.data (the
  synthetic default: the grain pipeline reads and parses the TFRecords as in any run), logging
  every `window` steps and saving a checkpoint at step 2 * `window` (async, so its writing
  overlaps window 3) and at the end; evaluation only at the end, on one batch. Window 1 holds
  the compilation and is not used.

  Returns:
    {'model', 'steps', 'window', 'examples_per_s' (window 2: input, transfer and logging
    overlapped with compute), 'examples_per_s_with_checkpoint' (window 3, during the
    checkpoint's writing), 'checkpoint_write_s' (from the start of that save to its commit,
    Orbax's timestamps in the step's metadata: with config.checkpoint_background the write
    may outlast the window), 'checkpoint_background' (the config's setting), 'wall_s' (the
    whole run)}.
  """
  # pylint: disable=import-outside-toplevel
  from mmjax.train.trainer import train_and_evaluate
  config = model_config(config, model_name, batch_size=batch_size, frames=frames)
  with config.unlocked():
    config.total_steps = 3 * window
    config.log_every_steps = window
    config.checkpoint_every_steps = 2 * window
    config.eval_every_steps = 0
    config.eval_batch_size = batch_size
    config.data.eval_max_examples = batch_size
    config.optimizer.reduce_on_plateau = False
    config.best_metric = ""
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  wall_s = time.perf_counter() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  speeds = [row["examples_per_sec"] for row in rows if row.get("split") == "train"]
  if len(speeds) != 3:
    raise RuntimeError(f"{workdir}/metrics.jsonl: expected 3 train rows, got {len(speeds)}")
  with open(os.path.join(workdir, "checkpoints", str(2 * window), "_CHECKPOINT_METADATA")) as f:
    saved = json.load(f)
  return {"model": model_name, "steps": 3 * window, "window": window,
          "examples_per_s": speeds[1], "examples_per_s_with_checkpoint": speeds[2],
          "checkpoint_write_s": (saved["commit_timestamp_nsecs"]
                                 - saved["init_timestamp_nsecs"]) / 1e9,
          "checkpoint_background": config.checkpoint_background, "wall_s": wall_s}


# -------------------------------------------------------------------------------------------
# Input pipelines.


def warm_page_cache(pattern: str) -> int:
  """Reads every file matching `pattern` once (logging the amount) and returns the bytes read,
  so that the input pipelines compared after it read from the OS page cache alike (otherwise
  the first one to run also pays for the disk)."""
  total = 0
  for path in tfrecord.list_files(pattern):
    with open(path, "rb") as f:
      while chunk := f.read(1 << 24):
        total += len(chunk)
  log(f"page cache: {total / MB:,.0f} MB of data files read once")
  return total


def input_pipeline_benchmark(config, pattern: str, *, batch_size: int, num_batches: int,
                             num_threads: int | None = None,
                             num_workers: int | None = None) -> dict[str, Any]:
  """Records/s of mmjax's grain training pipeline over the files matching `pattern`.

  The pipeline is `mmjax.data.pipeline.make_train_dataset(config.data, ...)` with
  data.train_pattern=`pattern` (everything else, e.g. data.num_threads, data.max_frames and
  data.prefetch_batches, from `config`), for one process, seed 0.

  Timed:
    startup_s: building the dataset (indexing every file's record headers) and producing the
      first batch.
    then `num_batches` further batches: records_per_s = num_batches * batch_size / their time
      (read, CRC check, protobuf parse, dequantize, pad to max_frames, batch; numpy output on
      the host, no device transfer). The shuffled order means random reads.

  Args:
    config: the experiment config; not modified.
    pattern: TFRecord file pattern (frame-level YouTube-8M).
    batch_size: records per batch.
    num_batches: timed batches (the dataset repeats, so any number works).
    num_threads: overrides data.num_threads (reader threads) when given.
    num_workers: overrides data.num_workers (reader processes, used instead of the threads
      when > 0) when given.

  Returns:
    {'records', 'batches', 'batch_size', 'num_threads', 'num_workers', 'num_files',
    'num_records_in_files', 'mean_frames', 'startup_s', 'seconds', 'records_per_s',
    'mb_per_s', 'batch_mb'} and the process's resource use over the timed batches
    (`mmjax.benchmarking.resource_usage`; 'user_cpu_s' and 'sys_cpu_s' include the reader
    processes', `benchmarking.children_usage_since`); mean_frames is the mean count of real
    frames per record, batch_mb the bytes of one batch and mb_per_s the batch bytes produced
    per second.
  """
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}")
  data_config = config.data.copy_and_resolve_references()
  with data_config.unlocked():
    data_config.train_pattern = pattern
    if num_threads is not None:
      data_config.num_threads = int(num_threads)
    if num_workers is not None:
      data_config.num_workers = int(num_workers)
  start = time.perf_counter()
  ds = pipeline.make_train_dataset(data_config, batch_size=batch_size, seed=0, process_index=0,
                                   process_count=1)
  iterator = iter(ds)
  batch = next(iterator)
  startup_s = time.perf_counter() - start
  frames = 0.0
  batch_bytes = sum(x.nbytes for x in batch.values())
  usage, children = benchmarking.resource_usage(), benchmarking.children_cpu_seconds()
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator)
    frames += float(batch["mask"].sum())
  seconds = time.perf_counter() - start
  usage = benchmarking.usage_since(usage)
  for key, value in benchmarking.children_usage_since(children).items():
    usage[key] += value
  if hasattr(iterator, "close"):
    iterator.close()
  records = num_batches * batch_size
  return {
      "records": records, "batches": num_batches, "batch_size": batch_size,
      "num_threads": sharded_stream.num_threads(data_config),
      "num_workers": sharded_stream.num_workers(data_config),
      "num_files": len(tfrecord.list_files(pattern)), "num_records_in_files": ds.num_records,
      "mean_frames": frames / records, "startup_s": startup_s, "seconds": seconds,
      "records_per_s": records / seconds, "mb_per_s": num_batches * batch_bytes / MB / seconds,
      "batch_mb": batch_bytes / MB, **usage,
  }


def tf_data_benchmark(pattern: str, *, batch_size: int, num_batches: int, num_threads: int,
                      feature_sizes: tuple[int, int] = (1024, 128), id_key: str = "id",
                      labels_key: str = "labels", num_classes: int = 3862,
                      max_frames: int = 300) -> dict[str, Any] | None:
  """Records/s of a tuned graph-mode `tf.data` reader of the starter code's kind.

  `tf.data.TFRecordDataset(files)` (sorted, repeated) -> `map(parse, num_parallel_calls=
  AUTOTUNE)` -> `batch(batch_size, drop_remainder=True)` -> `prefetch(AUTOTUNE)`, in a private
  thread pool of `num_threads` threads (intra-op parallelism 1), where parse is, per record:
  `tf.io.parse_single_sequence_example` (context id and VarLen labels; sequence features
  FixedLenSequenceFeature([], tf.string)) -> `tf.io.decode_raw(..., tf.uint8)` -> reshape
  [frames, dim] -> the first `max_frames` -> cast float32 -> dequantize (x * 4/255 + 4/512 - 2)
  -> pad to `max_frames` (the starter code's `resize_axis`); a float32 mask of the real frames
  and multi-hot float32 labels [num_classes]. The batch is fetched with `.numpy()`: float32
  [B, max_frames, dim] per feature, the form a float32 train step consumes.

  Timed: `num_batches` batches after 2 untimed ones (the pool is warm) -> records_per_s, and
  the process's resource use over them (`mmjax.benchmarking.resource_usage`: CPU seconds, page
  faults, context switches).

  Returns:
    None (after printing how to install it) without TensorFlow; else {'records', 'batches',
    'batch_size', 'num_threads', 'seconds', 'records_per_s', the resource-use keys,
    'batch_mb', 'tf_version'}.
  """
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(TF_MISSING)
    return None
  parse = _tf_parse(tf, feature_sizes, id_key, labels_key)
  names = ("rgb", "audio")

  def parse_and_pad(serialized):
    out = parse(serialized)
    num = tf.minimum(tf.shape(out["rgb"])[0], max_frames)
    batch = {name: tf.pad(out[name][:num], [[0, max_frames - num], [0, 0]]) for name in names}
    batch["mask"] = tf.pad(tf.ones([num], tf.float32), [[0, max_frames - num]])
    labels = out["labels"]
    batch["labels"] = tf.scatter_nd(labels[:, None], tf.ones_like(labels, tf.float32),
                                    [num_classes])
    return batch

  options = tf.data.Options()
  options.threading.private_threadpool_size = int(num_threads)
  options.threading.max_intra_op_parallelism = 1
  ds = (tf.data.TFRecordDataset(tfrecord.list_files(pattern)).repeat()
        .map(parse_and_pad, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(options))
  iterator = iter(ds)
  for _ in range(2):
    batch = {key: value.numpy() for key, value in next(iterator).items()}
  usage = benchmarking.resource_usage()
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = {key: value.numpy() for key, value in next(iterator).items()}
  seconds = time.perf_counter() - start
  records = num_batches * batch_size
  return {"records": records, "batches": num_batches, "batch_size": batch_size,
          "num_threads": int(num_threads), "seconds": seconds,
          "records_per_s": records / seconds, **benchmarking.usage_since(usage),
          "batch_mb": sum(x.nbytes for x in batch.values()) / MB, "tf_version": tf.__version__}


def _tf_parse(tf, feature_sizes, id_key, labels_key):
  """The starter code's per-record parse (graph-compatible): serialized SequenceExample ->
  {'id', 'labels': int64 [L], 'rgb': float32 [frames, 1024], 'audio': float32 [frames, 128]},
  dequantized (utils.Dequantize: x * 4/255 + 4/512 - 2)."""
  names = ("rgb", "audio")
  context_features = {id_key: tf.io.FixedLenFeature([], tf.string),
                      labels_key: tf.io.VarLenFeature(tf.int64)}
  sequence_features = {name: tf.io.FixedLenSequenceFeature([], dtype=tf.string)
                       for name in names}

  def parse(serialized):
    context, features = tf.io.parse_single_sequence_example(
        serialized, context_features=context_features, sequence_features=sequence_features)
    out = {"id": context[id_key], "labels": context[labels_key].values}
    for name, dim in zip(names, feature_sizes):
      x = tf.reshape(tf.io.decode_raw(features[name], tf.uint8), [-1, dim])
      x = tf.cast(x, tf.float32)
      out[name] = x * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)  # utils.Dequantize
    return out

  return parse


def tf_starter_benchmark(pattern: str, *, num_records: int, check: bool = True,
                         feature_sizes: tuple[int, int] = (1024, 128), id_key: str = "id",
                         labels_key: str = "labels",
                         max_frames: int = 300) -> dict[str, Any] | None:
  """Records/s of the starter code's TensorFlow reader over the same files.

  Per record, eagerly (the starter code parses single examples): `tf.data.TFRecordDataset(files)`
  yields the serialized record -> `tf.io.parse_single_sequence_example` (context `id_key`
  string and `labels_key` VarLenFeature int64; sequence features 'rgb'/'audio'
  FixedLenSequenceFeature([], tf.string)) -> `tf.io.decode_raw(..., tf.uint8)` -> reshape
  [frames, dim] -> cast float32 -> dequantize (x * 4/255 + 4/512 - 2) -> `.numpy()`.
  Frames beyond `max_frames` are not dropped (the starter code's resize_axis): the synthetic
  files have at most 300.

  Timed:
    startup_s: creating the dataset and reading + converting the first record.
    then up to `num_records` further records: records_per_s (as TF schedules eager ops; no
    batching, no padding). For context only: the tuned reference is `tf_data_benchmark`.
  The correctness check (below) runs after the timing and is not timed.

  Args:
    pattern: TFRecord file pattern (files read in sorted order, like mmjax).
    num_records: records to time (fewer if the files hold fewer).
    check: also compare the first record (its first `max_frames` frames) with what mmjax's
      train step sees: `RecordSpec.parse_raw` -> `collate` -> `dequantize_frames`.
    feature_sizes: (rgb, audio) dimensions.
    id_key: context key of the video id.
    labels_key: context key of the labels.
    max_frames: passed to `read_frame_records` for the check.

  Returns:
    None (after printing how to install it) when TensorFlow is not importable; else
    {'records', 'startup_s', 'seconds', 'records_per_s', 'tf_version'} and, with `check`,
    'tf_matches' (same id, labels and float32 features, to 1e-6) and 'tf_max_abs_diff'.
  """
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(TF_MISSING)
    return None
  files = tfrecord.list_files(pattern)
  names = ("rgb", "audio")
  parse = _tf_parse(tf, feature_sizes, id_key, labels_key)

  def convert(serialized):
    return {key: value.numpy() for key, value in parse(serialized).items()}

  start = time.perf_counter()
  iterator = iter(tf.data.TFRecordDataset(files))
  first = convert(next(iterator))
  startup_s = time.perf_counter() - start
  count = 0
  start = time.perf_counter()
  while count < num_records:
    serialized = next(iterator, None)
    if serialized is None:
      break
    convert(serialized)
    count += 1
  seconds = time.perf_counter() - start
  result = {"records": count, "startup_s": startup_s, "seconds": seconds,
            "records_per_s": count / seconds if seconds > 0 else 0.0,
            "tf_version": tf.__version__}

  if check:
    spec = youtube8m.RecordSpec(id_key=id_key, labels_key=labels_key, feature_names=names,
                                feature_sizes=feature_sizes, num_classes=2**31 - 1,
                                max_frames=max_frames)
    path = files[0]
    raw = spec.parse_raw(tfrecord.read_record(path, tfrecord.index_tfrecord(path), 0), path=path,
                         index=0)
    batch = spec.collate([raw])  # what the train step receives, dequantized as it does
    num = int(batch["mask"][0].sum())
    ours = {n: np.asarray(dequantize_frames(batch[n], batch["mask"]))[0, :num] for n in names}
    theirs = {n: first[n][:max_frames] for n in names}
    same_shape = all(ours[n].shape == theirs[n].shape for n in names)
    diff = max(float(np.max(np.abs(ours[n] - theirs[n]))) for n in names) \
        if same_shape else float("inf")
    ours.update(id=raw["id"], labels=raw["labels"])
    result["tf_max_abs_diff"] = diff
    result["tf_matches"] = bool(
        same_shape and diff <= 1e-6 and ours["id"] == first["id"].decode("utf-8", "replace")
        and np.array_equal(np.sort(ours["labels"]), np.sort(first["labels"])))
  return result


# -------------------------------------------------------------------------------------------
# Metrics.


def metrics_benchmark(num_videos: int, num_classes: int, batch: int, *, top_k: int = 20,
                      labels_per_video: int = 3, seed: int = 0) -> dict[str, Any]:
  """Time of `Youtube8mMetrics` (GAP, MAP, PERR, Hit@1) over random predictions.

  Batches of float32 scores [batch, num_classes] (uniform in [0, 1)) and float32 multi-hot
  labels with `labels_per_video` random positives per video (fewer on collisions) are generated
  on the fly from a seeded RNG, so memory stays bounded; generation is not timed.

  Timed:
    update_s: the sum of `Youtube8mMetrics.update(scores, labels)` over all batches (per-video
      top-k selection, PERR, Hit@1);
    compute_s: one `compute()` (pooled ranking for GAP and per-class MAP);
    total_s = update_s + compute_s; videos_per_s = num_videos / total_s.

  Args:
    num_videos: videos in total (e.g. 128_000).
    num_classes: classes (e.g. 3862).
    batch: videos per update.
    top_k: the metrics' k.
    labels_per_video: positives drawn per video.
    seed: RNG seed.

  Returns:
    {'num_videos', 'num_classes', 'batch', 'update_s', 'compute_s', 'total_s',
    'videos_per_s', 'gap'} (gap: a sanity value, ~ chance level).
  """
  rng = np.random.default_rng(seed)
  accumulator = mm_metrics.Youtube8mMetrics(num_classes, top_k=top_k)
  update_s = 0.0
  done = 0
  while done < num_videos:
    size = min(batch, num_videos - done)
    scores = rng.random((size, num_classes), dtype=np.float32)
    labels = np.zeros((size, num_classes), np.float32)
    columns = rng.integers(0, num_classes, (size, labels_per_video))
    labels[np.arange(size)[:, None], columns] = 1.0
    start = time.perf_counter()
    accumulator.update(scores, labels)
    update_s += time.perf_counter() - start
    done += size
  start = time.perf_counter()
  values = accumulator.compute()
  compute_s = time.perf_counter() - start
  total_s = update_s + compute_s
  return {"num_videos": num_videos, "num_classes": num_classes, "batch": batch,
          "update_s": update_s, "compute_s": compute_s, "total_s": total_s,
          "videos_per_s": num_videos / total_s if total_s > 0 else 0.0,
          "gap": float(values["gap"])}


# -------------------------------------------------------------------------------------------
# The suite, its table and its records.


def run_suite(config, *, batch_size: int, frames: int, steps: int, warmup: int,
              pipeline_batches: int, tf_records: int, metric_videos: int, metric_classes: int,
              metric_batch: int, models: Sequence[str], skip_tf: bool,
              compare_torch: bool = False, end_to_end_window: int = 0) -> dict[str, Any]:
  """Every benchmark in turn (metrics, input pipeline, train steps, end-to-end runs, torch,
  then TensorFlow last). The data files are read once before our pipeline's and before
  tf.data's phases (`warm_page_cache`), so both read from the page cache. Progress goes to
  stderr.

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'metrics', 'pipeline' ({'threads_1': result, 'threads_2': result}), 'train' ({model:
    result}), 'end_to_end' ({model: result}, with `end_to_end_window` > 0, except the cm
    rows, whose training needs a trained correlation tower), 'torch' ({model:
    torch result and `torch_reference.comparison`}) and 'matmul_peak' (with `compare_torch`),
    'tf_data' (like 'pipeline') and 'tf_starter' (each None with `skip_tf` or without
    TensorFlow), 'memory', 'load_average_end'.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.max_frames = frames
  results = benchmarking.start_suite({
      "batch_size": batch_size, "frames": frames, "steps": steps, "warmup": warmup,
      "pipeline_batches": pipeline_batches, "metric_videos": metric_videos,
      "metric_classes": metric_classes, "metric_batch": metric_batch})

  start = time.perf_counter()
  pattern = pipeline.resolve_data_patterns(config.data, log=log).train_pattern
  log(f"data: {pattern} ({time.perf_counter() - start:.1f} s)")

  log(f"metrics: {metric_videos} x {metric_classes}")
  results["metrics"] = run_phase(metrics_benchmark, metric_videos, metric_classes, metric_batch)
  warm_page_cache(pattern)
  results["pipeline"] = {}
  for threads in THREADS:
    log(f"input pipeline: {pipeline_batches} batches of {batch_size}, {threads} thread(s)")
    results["pipeline"][f"threads_{threads}"] = run_phase(
        input_pipeline_benchmark, config, pattern, batch_size=batch_size,
        num_batches=pipeline_batches, num_threads=threads, num_workers=0)
  log(f"input pipeline: {pipeline_batches} batches of {batch_size}, {THREADS[-1]} worker "
      "processes")
  results["pipeline"][f"workers_{THREADS[-1]}"] = run_phase(
      input_pipeline_benchmark, config, pattern, batch_size=batch_size,
      num_batches=pipeline_batches, num_workers=THREADS[-1])
  results["train"] = {}
  for model in models:
    log(f"train step: {model}, batch {batch_size}, {frames} frames")
    results["train"][model] = run_phase(
        train_step_benchmark, config, model, batch_size=batch_size, frames=frames,
        steps=steps, warmup=warmup)
  results["end_to_end"] = {}
  for model in models if end_to_end_window > 0 else ():
    if parse_model(model)[1] in ("cmg", "cmc"):
      log(f"end to end: {model} skipped (a training run would load a trained correlation tower)")
      continue
    log(f"end to end: {model}, {3 * end_to_end_window} training steps")
    with tempfile.TemporaryDirectory(prefix="mmjax_bench_") as workdir:
      results["end_to_end"][model] = run_phase(
          end_to_end_benchmark, config, model, batch_size=batch_size, frames=frames,
          window=end_to_end_window, workdir=workdir)
  results["torch"] = {}
  if compare_torch:
    # pylint: disable=import-outside-toplevel
    from mmjax.projects.youtube8m import torch_reference
    log("matmul peak (float32), JAX and torch")
    results["matmul_peak"] = torch_reference.matmul_peak_benchmark()
    for model in models:
      log(f"torch train step: {model}, batch {batch_size}, {frames} frames")
      torch_result = run_phase(
          torch_reference.torch_train_step_benchmark, config, model, batch_size=batch_size,
          frames=frames, steps=steps, warmup=warmup)
      results["torch"][model] = {**torch_result, **torch_reference.comparison(
          results["train"][model], torch_result, results["matmul_peak"])}
  results["tf_data"] = results["tf_starter"] = None
  if not skip_tf:
    tf_settings = {"feature_sizes": tuple(config.data.feature_sizes),
                   "id_key": config.data.id_key, "labels_key": config.data.labels_key}
    warm_page_cache(pattern)
    results["tf_data"] = {}
    for threads in THREADS:
      log(f"tuned tf.data reader: {pipeline_batches} batches of {batch_size}, {threads} "
          "thread(s)")
      results["tf_data"][f"threads_{threads}"] = run_phase(
          tf_data_benchmark, pattern, batch_size=batch_size, num_batches=pipeline_batches,
          num_threads=threads, num_classes=int(config.data.num_classes), max_frames=frames,
          **tf_settings)
    if None in results["tf_data"].values():
      results["tf_data"] = None
    num = tf_records or pipeline_batches * batch_size
    log(f"TF starter reader (eager): {num} records")
    results["tf_starter"] = run_phase(tf_starter_benchmark, pattern, num_records=num,
                                      max_frames=frames, **tf_settings)
  return benchmarking.finish_suite(results)


def report(results: dict) -> str:
  """A header line and the human-readable table of `run_suite`'s results."""
  return benchmarking.report("mmjax YouTube-8M benchmark", results, _rows(results))


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement of `run_suite`'s results, named '<suite>/...', e.g.
  'youtube8m/train_step/transformer/examples_per_sec' (`mmjax.benchmarking.to_records`;
  kwargs: its `timestamp`)."""
  # torch_reference imports this module, so it is imported here.
  from mmjax.projects.youtube8m import torch_reference  # pylint: disable=import-outside-toplevel
  return benchmarking.to_records(suite, results, {**UNITS, **torch_reference.UNITS},
                                 sections=SECTIONS, **kwargs)


def _step_comparison_rows(results: dict) -> list:
  """Per model: the end-to-end run against the isolated step, and torch against JAX."""
  rows = []
  peak = results.get("matmul_peak")
  if peak:
    rows.append(("float32 matmul peak (this run)", f"n = {peak['matmul_n']}",
                 f"JAX {peak['jax_matmul_tflops_per_s']:.3g} TFLOP/s, torch "
                 f"{peak['torch_matmul_tflops_per_s']:.3g} TFLOP/s"))
  for name, step in results["train"].items():
    e2e, torch = results["end_to_end"].get(name), results["torch"].get(name)
    if e2e:
      rows += [(f"end to end: {name} ({e2e['steps']} steps)", "training run",
                f"{fmt(e2e['examples_per_s'], ' examples/s')} = "
                f"{e2e['examples_per_s'] / step['examples_per_s']:.0%} of the isolated step"),
               ("", "while a checkpoint is written",
                f"{fmt(e2e['examples_per_s_with_checkpoint'], ' examples/s')} = "
                f"{e2e['examples_per_s_with_checkpoint'] / step['examples_per_s']:.0%}"),
               ("", "checkpoint written in", f"{fmt(e2e['checkpoint_write_s'], ' s')} = "
                f"{e2e['checkpoint_write_s'] * step['examples_per_s'] / step['batch_size']:.1f}"
                f" isolated steps (checkpoint_background={e2e['checkpoint_background']})"),
               ("", "process peak RSS in phase", fmt(e2e["peak_rss_mb"], " MB"))]
    if torch:
      fraction = (f"; {torch['jax_peak_fraction']:.0%} vs {torch['torch_peak_fraction']:.0%} "
                  "of matmul peak") if "jax_peak_fraction" in torch else ""
      rows += [(f"torch {torch['torch_version']} eager: {name}", "throughput",
                fmt(torch["examples_per_s"], " examples/s")),
               ("", "parameters", fmt(torch["params"])),
               ("", "CPU user + system per step", f"{fmt(torch['user_cpu_s'], ' s')} + "
                f"{fmt(torch['sys_cpu_s'], ' s')}"),
               ("", "mmjax / torch", f"{torch['jax_over_torch']:.2f}x{fraction}")]
      if "twice_torch_peak_fraction" in torch:
        rows.append(("", "2x torch would need", f"{torch['twice_torch_peak_fraction']:.0%} of "
                     "the JAX matmul peak for the whole step"))
  return rows


def _pipeline_rows(results: dict) -> list:
  """Ours (threads, then worker processes) and tuned tf.data with as many threads, with the
  ratio (ours / tf.data)."""
  rows = []
  tf_data = results.get("tf_data") or {}
  for ours in results["pipeline"].values():
    workers = ours.get("num_workers", 0)
    count = workers or ours["num_threads"]
    threads = f"{count} " + ("worker process" if workers else "thread") + (
        "es" if workers and count != 1 else "s" if count != 1 else "")
    rows += [(f"input, {threads}: mmjax grain", "throughput",
              fmt(ours["records_per_s"], " records/s")),
             ("", "records (mean real frames)",
              f"{ours['records']} ({ours['mean_frames']:.0f})"),
             ("", "batch (uint8 frames)", fmt(ours["batch_mb"], " MB")),
             ("", "CPU user + system", f"{fmt(ours['user_cpu_s'], ' s')} + "
              f"{fmt(ours['sys_cpu_s'], ' s')}"),
             ("", "startup (index + 1st batch)", fmt(ours["startup_s"], " s")),
             ("", "process peak RSS in phase", fmt(ours["peak_rss_mb"], " MB"))]
    reference = tf_data.get(f"threads_{count}")
    tf_threads = f"{count} thread" + ("s" if count != 1 else "")
    if reference is None:
      rows.append((f"input, {tf_threads}: tuned tf.data", "throughput", "skipped"))
      continue
    if workers:  # the same tf.data figures as the threads' comparison: only the ratio
      rows.append(("", f"mmjax / tf.data at {tf_threads}",
                   f"{ours['records_per_s'] / reference['records_per_s']:.2f}x"))
      continue
    rows += [(f"input, {tf_threads}: tuned tf.data (tf {reference['tf_version']})", "throughput",
              fmt(reference["records_per_s"], " records/s")),
             ("", "batch (float32 frames)", fmt(reference["batch_mb"], " MB")),
             ("", "CPU user + system", f"{fmt(reference['user_cpu_s'], ' s')} + "
              f"{fmt(reference['sys_cpu_s'], ' s')}"),
             ("", "process peak RSS in phase", fmt(reference["peak_rss_mb"], " MB")),
             ("", "mmjax / tf.data", f"{ours['records_per_s'] / reference['records_per_s']:.2f}x")]
  return rows


def _rows(results: dict) -> list:
  rows = []
  for name, r in results["train"].items():
    section = f"train step: {name} ({r['fusion']}, B={r['batch_size']}, T={r['frames']})"
    rows += [(section, "parameters", fmt(r["params"])),
             *benchmarking.timing_rows(r["compile_s"], r["first_step_s"], r["step_s"],
                                       r["step_min_s"]),
             ("", "throughput", fmt(r["examples_per_s"], " examples/s")),
             ("", "compiled with", r["compiler_options"]),
             *benchmarking.flops_rows(r),
             *benchmarking.compiled_memory_rows(r),
             ("", "process peak RSS in phase", fmt(r["peak_rss_mb"], " MB"))]
  rows += _step_comparison_rows(results)
  rows += _pipeline_rows(results)
  t = results["tf_starter"]
  if t is not None:
    rows += [(f"input: TF starter code (tf {t['tf_version']}, eager; context)", "throughput",
              fmt(t["records_per_s"], " records/s")),
             ("", "records", fmt(t["records"])),
             ("", "same values as mmjax", f"{t.get('tf_matches')} (max |diff| "
              f"{t.get('tf_max_abs_diff', float('nan')):.2g})"),
             ("", "process peak RSS in phase", fmt(t["peak_rss_mb"], " MB"))]
  m = results["metrics"]
  rows += [(f"metrics: {m['num_videos']:,} x {m['num_classes']:,}", "update + compute",
            f"{fmt(m['update_s'], ' s')} + {fmt(m['compute_s'], ' s')} = "
            f"{fmt(m['total_s'], ' s')}"),
           ("", "throughput", fmt(m["videos_per_s"], " videos/s")),
           ("", "process peak RSS in phase", fmt(m["peak_rss_mb"], " MB"))]
  return rows
