"""Labelled video clips in the MER layout (e.g. MER2023/2024 for EmoVCLIP): grain pipelines.

Layout:
  labels CSV (data.train_labels, data.eval_labels): a header line with at least `name` and
    `discrete` (the MER label files' `name,discrete,valence`; other columns are ignored); the
    discrete values are class names from data.class_names (compared case-insensitively).
  frames (data.frames_dir, default 'frames', relative to the CSV's directory unless absolute):
    for clip `name`, either `<name>.npy` (uint8 [T, H, W, 3] RGB) or a directory `<name>/` of
    image files (.png/.jpg/.jpeg/.bmp, taken in sorted name order).

data.num_frames frames are sampled evenly (`sample_frame_indices`) and each is preprocessed as
a CLIP image (`mmjax.data.images`). Batches are dicts of numpy arrays (F = data.num_frames,
S = data.image_size):
  'pixel_values': float32 [B, F, S, S, 3], 'label': int32 [B] (index into data.class_names),
  'weight': float32 [B] (1 real, 0 padding; padding rows are zeros with label 0).

With an empty data.train_labels, a synthetic dataset (`write_synthetic_clips`) is written once
under data.synthetic.directory (default $MMJAX_CACHE or ~/.cache/mmjax) and reused.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import logging
import os
from typing import Any, Callable, Sequence

import grain
import numpy as np
from PIL import Image

from mmjax.data import cache, images, sharded_stream, tables
from mmjax.data.sharded_stream import config_value

__all__ = ["FILE_KEYS", "FRAMES_DIR", "find_frames", "load_clip", "make_eval_dataset",
           "make_train_dataset", "read_labels", "resolve_files", "sample_frame_indices",
           "synthetic_settings", "write_synthetic_clips"]

logger = logging.getLogger("mmjax.data")

FRAMES_DIR = "frames"  # the default data.frames_dir, and where the synthetic clips live
FILE_KEYS = ("train_labels", "eval_labels")  # the config.data keys that `resolve_files` resolves


# -------------------------------------------------------------------------------------------
# Labels and frames.


class _ClipList:
  """The clips of a labels CSV: names, class indices, line numbers and the frames directory."""

  def __init__(self, path: str, class_names: Sequence[str], frames_dir: str):
    self.path = path
    class_names = tuple(class_names)
    if not class_names:
      raise ValueError("config key data.class_names is empty: list the class names (the "
                       "'discrete' values of the labels CSV)")
    lookup = {n.strip().lower(): i for i, n in enumerate(class_names)}
    if len(lookup) != len(class_names):
      raise ValueError(f"data.class_names has duplicates (case-insensitive): {class_names}")
    self.names, self.labels, self.lines = [], [], []
    for line, row in tables.read_table(path, ("name", "discrete")):
      name, label = row["name"].strip(), row["discrete"].strip()
      if not name:
        raise ValueError(f"{path}: line {line}: empty 'name'")
      if label.lower() not in lookup:
        raise ValueError(f"{path}: line {line}: clip {name!r} has unknown label {label!r}; "
                         f"data.class_names are {list(class_names)}")
      self.names.append(name)
      self.labels.append(lookup[label.lower()])
      self.lines.append(line)
    if not self.names:
      raise ValueError(f"{path}: no labelled clips")
    base = os.path.dirname(os.path.abspath(path))
    self.frames_dir = os.path.join(base, os.path.expanduser(frames_dir or FRAMES_DIR))

  def __len__(self) -> int:
    return len(self.names)


def read_labels(path: str, class_names: Sequence[str]) -> list[tuple[str, int]]:
  """Reads the (clip name, class index) pairs of a labels CSV (or TSV / JSON lines).

  Args:
    path: the labels file, with columns/keys `name` and `discrete` (others are ignored).
    class_names: the classes; `discrete` values are matched case-insensitively.

  Returns:
    [(name, index into class_names)] in file order.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: a missing column, an unknown label (the message names the file, the line and
      the allowed names), or no clips.
  """
  clips = _ClipList(os.fspath(path), class_names, FRAMES_DIR)
  return list(zip(clips.names, clips.labels))


def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
  """Evenly spaced frames: the centres of `num_frames` equal segments of [0, num_available).

  Index k is floor((k + 1/2) * T / F); with T < F frames repeat (e.g. T=2, F=4: 0, 0, 1, 1).

  Args:
    num_available: T >= 1, frames in the clip.
    num_frames: F >= 1, frames to take.

  Returns:
    int64 [F], non-decreasing, in [0, T).
  """
  if num_available < 1 or num_frames < 1:
    raise ValueError(f"need at least one frame; got {num_available} available, {num_frames} "
                     "requested")
  k = np.arange(num_frames, dtype=np.int64)
  return (2 * k + 1) * num_available // (2 * num_frames)


def find_frames(frames_dir: str, name: str) -> str:
  """The frames of clip `name`: `<frames_dir>/<name>.npy` if it exists, else the directory.

  Raises:
    FileNotFoundError: neither exists (the message names the clip and both paths).
  """
  npy, directory = os.path.join(frames_dir, f"{name}.npy"), os.path.join(frames_dir, name)
  if os.path.isfile(npy):
    return npy
  if os.path.isdir(directory):
    return directory
  raise FileNotFoundError(f"clip {name!r}: no frames: neither {npy} nor the directory "
                          f"{directory}/ exists")


def load_clip(path: str, num_frames: int, image_size: int) -> np.ndarray:
  """Loads `num_frames` evenly sampled, CLIP-preprocessed frames of a clip.

  Args:
    path: a `.npy` file (uint8 [T, H, W, 3]) or a directory of image files (see `find_frames`).
    num_frames: F.
    image_size: S.

  Returns:
    float32 [F, S, S, 3].

  Raises:
    ValueError: a malformed .npy, an empty directory or an unreadable image (names the path).
  """
  if path.endswith(".npy"):
    try:
      video = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: cannot read the frames: {e}") from e
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or not len(video):
      raise ValueError(f"{path}: expected uint8 [T, H, W, 3] frames with T >= 1, got "
                       f"{video.dtype} {video.shape}")
    return np.stack([images.preprocess_array(video[i], image_size)
                     for i in sample_frame_indices(len(video), num_frames)])
  files = sorted(f for f in os.listdir(path)
                 if os.path.splitext(f)[1].lower() in images.IMAGE_EXTENSIONS)
  if not files:
    raise ValueError(f"{path}: no image files ({', '.join(images.IMAGE_EXTENSIONS)})")
  return np.stack([images.load_image(os.path.join(path, files[i]), image_size)
                   for i in sample_frame_indices(len(files), num_frames)])


# -------------------------------------------------------------------------------------------
# Datasets.


def _load_clip(clips: _ClipList, num_frames: int, image_size: int, i: int) -> dict:
  """Clip i -> {'pixel_values': float32 [F, S, S, 3], 'label': int}."""
  with tables.at_line(clips.path, clips.lines[i]):
    pixels = load_clip(find_frames(clips.frames_dir, clips.names[i]), num_frames, image_size)
  return {"pixel_values": pixels, "label": clips.labels[i]}


class _Collate:
  """A list of `_load_clip` examples (None = padding) -> a batch (module docstring)."""

  def __init__(self, num_frames: int, image_size: int):
    self._shape = (num_frames, image_size, image_size, 3)

  def __call__(self, examples: list) -> dict:
    pixels = np.zeros((len(examples),) + self._shape, np.float32)
    labels = np.zeros((len(examples),), np.int32)
    for i, example in enumerate(examples):
      if example is not None:
        pixels[i], labels[i] = example["pixel_values"], example["label"]
    return {"pixel_values": pixels, "label": labels,
            "weight": np.array([e is not None for e in examples], np.float32)}


def _records(data_config: Any, key: str) -> tuple[int, Callable[[int], dict], _Collate]:
  """(number of clips, load, collate) of the labels file data.<key> (see
  `sharded_stream.indexed_dataset`)."""
  path = cache.configured_or_default(data_config, key, "train_labels",
                                     lambda c: resolve_files(c, log=logger.info))
  clips = _ClipList(path, config_value(data_config, "class_names", ()),
                    config_value(data_config, "frames_dir", FRAMES_DIR))
  num_frames = sharded_stream.positive_int(data_config, "num_frames")
  image_size = sharded_stream.positive_int(data_config, "image_size")
  return (len(clips), functools.partial(_load_clip, clips, num_frames, image_size),
          _Collate(num_frames, image_size))


def make_train_dataset(data_config: Any, *, batch_size: int, seed: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """Builds the infinite, shuffled training pipeline of this process over the clips of
  data.train_labels (`sharded_stream.indexed_dataset` with a seed).

  Args:
    data_config: `config.data` (keys train_labels, frames_dir, class_names, num_frames,
      image_size, num_threads, prefetch_batches; an empty train_labels uses the synthetic
      dataset, see `resolve_files`).
    batch_size, seed, process_index, process_count: see `sharded_stream.indexed_dataset`.

  Returns:
    A resumable `grain.IterDataset` of batches (module docstring; all weights 1). Attribute
    `.num_records` (clips).

  Raises:
    FileNotFoundError, ValueError: see `read_labels`; while iterating, missing or unreadable
      frames (the message names the labels file, the line, the clip and the paths).
  """
  return sharded_stream.indexed_dataset(
      data_config, "train_labels", _records, batch_size=batch_size, seed=seed,
      process_index=process_index, process_count=process_count)


def make_eval_dataset(data_config: Any, *, batch_size: int, process_index: int | None = None,
                      process_count: int | None = None) -> grain.IterDataset:
  """Builds one evaluation pass over the clips of data.eval_labels, in file order, split between
  the processes (`sharded_stream.indexed_dataset` without a seed).

  Args:
    data_config: `config.data` (as for `make_train_dataset`, plus eval_labels and
      eval_max_examples).
    batch_size, process_index, process_count: see `sharded_stream.indexed_dataset`.

  Returns:
    A finite `grain.IterDataset` of batches (module docstring). Attributes: `.num_batches`,
    `.num_examples` (over all processes).
  """
  return sharded_stream.indexed_dataset(data_config, "eval_labels", _records,
                                        batch_size=batch_size, process_index=process_index,
                                        process_count=process_count)


# -------------------------------------------------------------------------------------------
# Synthetic data: the class shows in the colour and the motion of a disc.

GENERATOR_VERSION = 1
TRAIN_LABELS = "train_labels.csv"
EVAL_LABELS = "eval_labels.csv"
_NOISE_STD = 10.0
_COLOUR_JITTER = 0.04  # hue
_RADIUS = (0.14, 0.2)  # of S
_TRAVEL = 0.35  # distance moved over a clip, of S


def synthetic_settings(*, class_names: Sequence[str], num_train: int, num_eval: int,
                       num_frames_range: Sequence[int], image_size: int, seed: int) -> dict:
  """The settings that determine a synthetic dataset (JSON-able; hashed into its path)."""
  low, high = (int(v) for v in num_frames_range)
  return dict(version=GENERATOR_VERSION, class_names=[str(n) for n in class_names],
              num_train=int(num_train), num_eval=int(num_eval), num_frames_range=[low, high],
              image_size=int(image_size), seed=int(seed))


def _clip(rng: np.random.Generator, label: int, num_classes: int, num_frames: int,
          image_size: int) -> np.ndarray:
  """uint8 [T, S, 4S/3, 3]: a disc of the class's hue moving in the class's direction."""
  height, width = image_size, image_size * 4 // 3
  hue = (label / num_classes + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER)) % 1.0
  colour = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1), rng.uniform(0.8, 1)))
  angle = 2 * np.pi * label / num_classes + rng.uniform(-0.15, 0.15)
  direction = np.array([np.cos(angle), np.sin(angle)])
  radius = image_size * rng.uniform(*_RADIUS)
  start = (np.array([width / 2, height / 2]) + image_size * rng.uniform(-0.05, 0.05, 2)
           - direction * _TRAVEL * image_size / 2)
  background = rng.uniform(30, 90) + rng.normal(0, 6, 3)  # a dim, slightly tinted gray
  y, x = np.mgrid[:height, :width]
  frames = np.empty((num_frames, height, width, 3), np.float32)
  for t in range(num_frames):
    cx, cy = start + direction * _TRAVEL * image_size * t / max(1, num_frames - 1)
    inside = ((x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2)[..., None]
    frames[t] = np.where(inside, colour, background)
  frames += rng.normal(0, _NOISE_STD, frames.shape)
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def write_synthetic_clips(directory: str | os.PathLike, *, class_names: Sequence[str],
                          num_train: int, num_eval: int, num_frames_range: Sequence[int],
                          image_size: int, seed: int,
                          log: Callable[[str], None] = print) -> tuple[str, str]:
  """Writes (or reuses) a synthetic labelled-clip dataset in the MER layout in `directory`.

  Clip of class c (of C): a disc whose hue is c / C (jittered) moving across a dim noisy
  background in direction 2 pi c / C (jittered), plus pixel noise; S x 4S/3 frames, a random
  number of frames in `num_frames_range`. Clips with even index are stored as
  `frames/<name>.npy`, the others as `frames/<name>/frame_XXX.png`. Labels go to
  `train_labels.csv` / `eval_labels.csv` with the MER header `name,discrete,valence` (valence:
  random, unused). A marker file written last makes the directory complete; a complete
  directory with the same settings is reused.

  Args:
    directory: output directory (created if needed).
    class_names: the classes (the `discrete` values).
    num_train: training clips.
    num_eval: evaluation clips.
    num_frames_range: (min, max) frames per clip, inclusive.
    image_size: S, the frame height.
    seed: random seed; the output is a deterministic function of all arguments.
    log: progress printer.

  Returns:
    (train labels CSV, eval labels CSV); the frames directory is `FRAMES_DIR` next to them.
  """
  directory = os.fspath(directory)
  settings = synthetic_settings(class_names=class_names, num_train=num_train, num_eval=num_eval,
                                num_frames_range=num_frames_range, image_size=image_size,
                                seed=seed)
  low, high = settings["num_frames_range"]
  train_file = os.path.join(directory, TRAIN_LABELS)
  eval_file = os.path.join(directory, EVAL_LABELS)
  if cache.is_complete(directory, settings):
    log(f"synthetic labelled clips: reusing {directory}")
    return train_file, eval_file
  if not class_names or num_train < 1 or num_eval < 1 or not 1 <= low <= high or image_size < 8:
    raise ValueError("need class names, num_train >= 1, num_eval >= 1, 1 <= min <= max frames "
                     f"and image_size >= 8; got {settings}")
  frames_dir = os.path.join(directory, FRAMES_DIR)
  os.makedirs(frames_dir, exist_ok=True)
  train_seq, eval_seq = np.random.SeedSequence(int(seed)).spawn(2)
  for split, num, seq, path in (("train", num_train, train_seq, train_file),
                                ("eval", num_eval, eval_seq, eval_file)):
    rng = np.random.default_rng(seq)
    rows = []
    for i in range(num):
      label = int(rng.integers(len(class_names)))
      frames = _clip(rng, label, len(class_names), int(rng.integers(low, high + 1)), image_size)
      name = f"sample_{split}_{i:05d}"
      if i % 2 == 0:
        np.save(os.path.join(frames_dir, f"{name}.npy"), frames)
      else:
        os.makedirs(os.path.join(frames_dir, name))
        for t, frame in enumerate(frames):
          Image.fromarray(frame).save(os.path.join(frames_dir, name, f"frame_{t:03d}.png"))
      rows.append((name, class_names[label], f"{rng.uniform(-1, 1):.2f}"))
    with open(path, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(("name", "discrete", "valence"))
      writer.writerows(rows)
  cache.write_marker(directory, settings)
  log(f"synthetic labelled clips: wrote {num_train} train + {num_eval} eval clips to "
      f"{directory}")
  return train_file, eval_file


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str, str]:
  """(train labels CSV, eval labels CSV) of `data_config` (`config.data`), writing the synthetic
  dataset if needed (progress lines go to `log`).

  With a non-empty data.train_labels: data.train_labels and data.eval_labels as they are. With
  both empty, the files of the synthetic dataset (`write_synthetic_clips`), written once,
  atomically, and then reused: classes data.class_names, sizes data.synthetic.{num_train,
  num_eval, seed} (defaults 600, 120, 0), frames per clip data.synthetic.{min_frames,
  max_frames} (defaults 4, 16), frame height data.synthetic.image_size (default 64; resized to
  data.image_size when read), under data.synthetic.directory (empty: $MMJAX_CACHE or
  ~/.cache/mmjax). Its frames are in `FRAMES_DIR`, so data.frames_dir must be that (the
  default) or empty.
  """
  configured = cache.configured_files(data_config, *FILE_KEYS)
  if configured:
    return configured
  frames_dir = config_value(data_config, "frames_dir", "") or FRAMES_DIR
  if frames_dir != FRAMES_DIR:
    raise ValueError(f"data.frames_dir is {frames_dir!r} but the synthetic clips (empty "
                     f"data.train_labels) are in {FRAMES_DIR!r}: set data.frames_dir to "
                     f"{FRAMES_DIR!r} or give data.train_labels/eval_labels")
  class_names = tuple(config_value(data_config, "class_names", ()) or ())
  if not class_names:
    raise ValueError("config key data.class_names is empty: list the class names")
  syn = config_value(data_config, "synthetic", None) or {}
  settings = synthetic_settings(
      class_names=class_names, num_train=config_value(syn, "num_train", 600),
      num_eval=config_value(syn, "num_eval", 120),
      num_frames_range=(config_value(syn, "min_frames", 4), config_value(syn, "max_frames", 16)),
      image_size=config_value(syn, "image_size", 64), seed=config_value(syn, "seed", 0))
  directory = cache.ensure_synthetic(syn, "labelled_video_synthetic", settings,
                                     write_synthetic_clips, what="synthetic labelled clips",
                                     log=log)
  return os.path.join(directory, TRAIN_LABELS), os.path.join(directory, EVAL_LABELS)
