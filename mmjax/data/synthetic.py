"""A synthetic YouTube-8M dataset in the real frame-level TFRecord format.

The data are built so that a model must use time and both modalities:

* Each labelled class owns a "concept": a fixed random direction (prototype) in the video
  feature space, in the audio feature space, or in both. A concept occurrence adds its
  prototype to the frames of a random segment (10-30 % of the video, random offset) of
  otherwise noisy frames (per-frame Gaussian noise plus a small per-video offset).
* Three kinds of classes (about a third each):
  video-only: positive iff its video concept occurs;
  audio-only: positive iff its audio concept occurs;
  audio-visual: positive iff its video concept AND its audio concept both occur. Decoy
  videos carry only one of the two (video alone or audio alone) and are negative, so
  neither modality alone predicts these classes (P(positive | one half) is about 1/2).
  (The measured effect of each ingredient is in mmjax/projects/youtube8m/README.md.)
* 1-4 positive classes per video from `num_labelled_classes` class ids spread over
  [0, num_classes) (a fixed random subset). Each video has a vertical (a level-0 category of
  the taxonomy, uniform); its labels are drawn with weight _VERTICAL_WEIGHT on the classes under
  its vertical and 1 elsewhere (about 3 in 4 labels in the vertical at the default sizes).
* What seed 001 exploits (section 1, 3):
  - Audio and video events are shifted in time against each other: when a video carries both
    halves of an audio-visual concept, the audio segment has the video segment's length and
    starts up to _MAX_SHIFT of the video's length before or after it.
  - Verticals have a style: a fixed direction per vertical and modality (norm _STYLE_NORM) added
    to every frame, so rgb and audio of one video agree on their vertical.
  - A share (_FOREIGN_AUDIO_FRACTION) of videos has foreign audio: the audio track (concepts,
    segments and style) of another video of another vertical, as when music is dubbed over a
    clip. Their labels describe the picture: no audio-only classes, and their audio-visual classes
    are positive on the video half alone (in other videos one half alone is a negative decoy). A
    model that knows that audio and video do not belong together (the correlation tower) can
    tell the two cases apart; one that ignores it cannot.

Features are quantized like the release (`q = round((clip(x, -2, 2) + 2) * 255/4)`) and
written as `tf.train.SequenceExample`s: context `id` (bytes) and `labels` (int64 list), feature
lists `rgb` and `audio` with one bytes value of 1024 / 128 uint8 per frame.

Files written in `directory`:
  train-XXXXX-of-YYYYY.tfrecord, validate-XXXXX-of-YYYYY.tfrecord  the records;
  taxonomy.csv            `class_index,level,name,parent` (with a header line) for labelled
                          classes: levels 0-3, each class of level l > 0 under a class of level
                          l - 1, so every class has a level-0 category;
  synthetic_meta.npz      generation metadata (concepts present per video, class kinds,
                          verticals, foreign-audio videos and their audio's donor);
  synthetic.json          the settings, written last: marks the directory complete.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
from tensorflow_datasets.proto import tf_example_generated_pb2 as tf_example

from mmjax.data import cache, tfrecord
from mmjax.data.youtube8m import quantize

# 2: taxonomy.csv with a parent column (records unchanged); 3: verticals with style, time-shifted
# audio-visual events, foreign audio.
GENERATOR_VERSION = 3
TAXONOMY_FILE = "taxonomy.csv"
META_FILE = "synthetic_meta.npz"

VIDEO_ONLY, AUDIO_ONLY, AUDIO_VISUAL = 0, 1, 2
KIND_NAMES = ("video", "audio", "audiovisual")

# Signal model (in dequantized units; features live in [-2, 2]).
_NOISE_STD = 0.5  # per frame and dimension
_VIDEO_OFFSET_STD = 0.1  # per video and dimension, constant over frames
_CONCEPT_NORM = 5.0  # prototype norm; along it, per-frame noise std ~0.5: SNR ~10
_SEGMENT_FRACTION = (0.1, 0.3)  # concept segment length, as a fraction of the video
_MAX_SHIFT = 0.1  # audio-visual events: audio segment start - video segment start, in videos
_STYLE_NORM = 1.0  # per vertical and modality, on every frame
_VERTICAL_WEIGHT = 30.0  # label draw: weight of a class under the video's vertical (others: 1)
_FOREIGN_AUDIO_FRACTION = 0.15  # videos whose audio is another video's
_FRAMES_PER_CHUNK = 16384  # frames generated at once (memory: ~80 MB float32 for rgb)


class SyntheticFiles(NamedTuple):
  """Paths of a written synthetic dataset."""
  train_pattern: str
  eval_pattern: str
  taxonomy_file: str
  meta_file: str


def synthetic_files(directory: str) -> SyntheticFiles:
  """The file patterns and paths of a synthetic dataset in `directory`."""
  return SyntheticFiles(
      train_pattern=os.path.join(directory, "train-*-of-*.tfrecord"),
      eval_pattern=os.path.join(directory, "validate-*-of-*.tfrecord"),
      taxonomy_file=os.path.join(directory, TAXONOMY_FILE),
      meta_file=os.path.join(directory, META_FILE))


class _World:
  """The fixed concepts of a synthetic dataset: labelled classes, kinds, prototypes."""

  def __init__(self, rng: np.random.Generator, num_classes: int, num_labelled: int,
               feature_sizes: Sequence[int]):
    self.num_labelled = num_labelled
    self.classes = np.sort(rng.choice(num_classes, num_labelled, replace=False)).astype(np.int64)
    num_av = num_labelled // 3
    num_video = (num_labelled - num_av + 1) // 2
    kinds = np.array([VIDEO_ONLY] * num_video + [AUDIO_ONLY] * (num_labelled - num_av - num_video)
                     + [AUDIO_VISUAL] * num_av)
    self.kinds = rng.permutation(kinds)
    self.levels = rng.permutation(np.arange(num_labelled) % 4)
    self.prototypes = []
    for size in feature_sizes:
      p = rng.standard_normal((num_labelled, size)).astype(np.float32)
      p *= _CONCEPT_NORM / np.linalg.norm(p, axis=1, keepdims=True)
      self.prototypes.append(p)
    self.has_video = self.kinds != AUDIO_ONLY
    self.has_audio = self.kinds != VIDEO_ONLY
    # Per-class decoy rate ~ 2x the positive rate (E[#labels] = 2.5): P(pos | one half) ~ 1/2.
    self.decoy_prob = min(0.5, 2 * 2.5 / num_labelled)

  def parents(self, seed: int) -> np.ndarray:
    """Parent class id of each labelled class (-1 at level 0): the classes of each level are
    dealt in turn to the (shuffled) classes of the level above, so the level-0 categories are
    about equal in size. Drawn from its own generator: the records do not depend on it."""
    rng = np.random.default_rng([int(seed), 0x7A8])
    parents = np.full(self.num_labelled, -1, np.int64)
    for level in range(1, int(self.levels.max()) + 1):
      children = rng.permutation(np.flatnonzero(self.levels == level))
      above = rng.permutation(np.flatnonzero(self.levels == level - 1))
      parents[children] = self.classes[above[np.arange(len(children)) % len(above)]]
    return parents

  def verticals(self, seed: int) -> np.ndarray:
    """Index of each labelled class's level-0 ancestor among the level-0 classes (in class-id
    order) [L]."""
    parents = self.parents(seed)
    by_id = dict(zip(self.classes.tolist(), parents.tolist()))
    roots = []
    for cls in self.classes.tolist():
      while by_id[cls] >= 0:
        cls = by_id[cls]
      roots.append(cls)
    level0 = self.classes[self.levels == 0]
    return np.searchsorted(level0, roots).astype(np.int64)

  def styles(self, seed: int, num_verticals: int) -> list[np.ndarray]:
    """Per modality, the style of each vertical: float32 [K, dim] of norm _STYLE_NORM (its own
    generator, like `parents`)."""
    rng = np.random.default_rng([int(seed), 0x57E])
    styles = []
    for protos in self.prototypes:
      s = rng.standard_normal((num_verticals, protos.shape[1])).astype(np.float32)
      styles.append(s * (_STYLE_NORM / np.linalg.norm(s, axis=1, keepdims=True)))
    return styles

  def names(self) -> list[str]:
    counters = [0, 0, 0]
    names = []
    for kind in self.kinds:
      names.append(f"synthetic_{KIND_NAMES[kind]}_{counters[kind]:02d}")
      counters[kind] += 1
    return names


def _draw_videos(world: _World, vertical_of: np.ndarray, rng: np.random.Generator, num: int,
                 min_frames: int, max_frames: int) -> dict[str, np.ndarray]:
  """Draws verticals, labels, concept presence and segments, foreign audio and lengths for `num`
  videos (module docstring).

  Args:
    vertical_of: int [L], the vertical of each labelled class (`_World.verticals`).

  Returns:
    'vertical', 'audio_vertical': int64 [num] (the audio's vertical: the donor's for foreign
    audio); 'foreign_audio': bool [num]; 'audio_donor': int64 [num] (-1: own audio);
    'labels', 'video_concepts', 'audio_concepts': bool [num, L]; 'video_start', 'video_length',
    'audio_start', 'audio_length': float64 [num, L], concept segments as fractions of the video;
    'num_frames': int64 [num].
  """
  n_lab = world.num_labelled
  num_verticals = int(vertical_of.max()) + 1
  vertical = rng.integers(num_verticals, size=num)
  foreign = rng.random(num) < _FOREIGN_AUDIO_FRACTION
  labels = np.zeros((num, n_lab), bool)
  num_pos = rng.integers(1, 5, size=num)
  for i in range(num):
    weight = np.where(vertical_of == vertical[i], _VERTICAL_WEIGHT, 1.0)
    if foreign[i]:
      weight[world.kinds == AUDIO_ONLY] = 0.0
    count = min(num_pos[i], int((weight > 0).sum()))
    labels[i, rng.choice(n_lab, count, replace=False, p=weight / weight.sum())] = True
  video = labels & world.has_video
  audio = labels & world.has_audio
  # Decoys: audio-visual classes that are negative get one half only (own audio only).
  decoy = ((~labels) & (world.kinds == AUDIO_VISUAL) & ~foreign[:, None]
           & (rng.random((num, n_lab)) < world.decoy_prob))
  decoy_video = rng.random((num, n_lab)) < 0.5
  video |= decoy & decoy_video
  audio |= decoy & ~decoy_video
  video_length = rng.uniform(*_SEGMENT_FRACTION, size=(num, n_lab))
  video_start = rng.uniform(size=(num, n_lab)) * (1.0 - video_length)
  audio_length = rng.uniform(*_SEGMENT_FRACTION, size=(num, n_lab))
  audio_start = rng.uniform(size=(num, n_lab)) * (1.0 - audio_length)
  both = video & audio  # an audio-visual event: the audio follows the video, shifted
  shifted = np.clip(video_start + rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, size=(num, n_lab)), 0.0,
                    1.0 - video_length)
  audio_length = np.where(both, video_length, audio_length)
  audio_start = np.where(both, shifted, audio_start)
  # Foreign audio: the audio track of a video (with its own audio) of another vertical.
  donor = np.full(num, -1, np.int64)
  own = np.flatnonzero(~foreign)
  for i in np.flatnonzero(foreign):
    options = own[vertical[own] != vertical[i]]
    if len(own):
      donor[i] = rng.choice(options if len(options) else own)
  has_donor = donor >= 0
  source = np.where(has_donor, donor, np.arange(num))
  audio, audio_start, audio_length = audio[source], audio_start[source], audio_length[source]
  num_frames = rng.integers(min_frames, max_frames + 1, size=num).astype(np.int64)
  return {"vertical": vertical.astype(np.int64),
          "audio_vertical": vertical[source].astype(np.int64),
          "foreign_audio": has_donor, "audio_donor": donor, "labels": labels,
          "video_concepts": video, "audio_concepts": audio, "video_start": video_start,
          "video_length": video_length, "audio_start": audio_start, "audio_length": audio_length,
          "num_frames": num_frames}


def _features(world: _World, rng: np.random.Generator, videos: dict, lo: int, hi: int,
              modality: int, styles: Sequence[np.ndarray]) -> np.ndarray:
  """Quantized features of videos [lo, hi), frames concatenated: uint8 [sum T, dim]."""
  name = ("video", "audio")[modality]
  present = videos[f"{name}_concepts"][lo:hi]
  start_fraction = videos[f"{name}_start"][lo:hi]
  length_fraction = videos[f"{name}_length"][lo:hi]
  vertical = videos[("vertical", "audio_vertical")[modality]][lo:hi]
  num_frames = videos["num_frames"][lo:hi]
  protos = world.prototypes[modality]
  dim = protos.shape[1]
  starts = np.concatenate([[0], np.cumsum(num_frames)])
  x = rng.standard_normal((int(starts[-1]), dim), dtype=np.float32)
  x *= np.float32(_NOISE_STD)
  offsets = rng.standard_normal((len(num_frames), dim), dtype=np.float32)
  offsets *= np.float32(_VIDEO_OFFSET_STD)
  offsets += styles[modality][vertical]
  x += np.repeat(offsets, num_frames, axis=0)
  for i, cls in zip(*np.nonzero(present)):
    t = int(num_frames[i])
    seg = max(1, int(round(length_fraction[i, cls] * t)))
    start = starts[i] + min(int(round(start_fraction[i, cls] * t)), t - seg)
    x[start:start + seg] += protos[cls]
  return quantize(x)


def _serialize(video_id: str, labels: np.ndarray, rgb: np.ndarray, audio: np.ndarray,
               id_key: str) -> bytes:
  seq = tf_example.SequenceExample()
  ctx = seq.context.feature
  ctx[id_key].bytes_list.value.append(video_id.encode())
  ctx["labels"].int64_list.value.extend(labels.tolist())
  lists = seq.feature_lists.feature_list
  for name, frames in (("rgb", rgb), ("audio", audio)):
    fl = lists[name].feature
    for row in frames:
      fl.add().bytes_list.value.append(row.tobytes())
  return seq.SerializeToString(deterministic=True)  # map fields in key order: same bytes


def _records(world: _World, rng: np.random.Generator, videos: dict, styles: Sequence[np.ndarray],
             lo: int, hi: int, prefix: str, id_key: str,
             progress: Callable[[], None]) -> Iterator[bytes]:
  """Serialized records of videos [lo, hi), generated in chunks of ~_FRAMES_PER_CHUNK frames."""
  i = lo
  while i < hi:
    j = i + 1
    total = int(videos["num_frames"][i])
    while j < hi and total + videos["num_frames"][j] <= _FRAMES_PER_CHUNK:
      total += int(videos["num_frames"][j])
      j += 1
    rgb = _features(world, rng, videos, i, j, 0, styles)
    audio = _features(world, rng, videos, i, j, 1, styles)
    starts = np.concatenate([[0], np.cumsum(videos["num_frames"][i:j])])
    for k in range(j - i):
      labels = world.classes[np.nonzero(videos["labels"][i + k])[0]]
      sl = slice(starts[k], starts[k + 1])
      yield _serialize(f"{prefix}{i + k:06d}", labels, rgb[sl], audio[sl], id_key)
      progress()
    i = j


def make_settings(*, num_train: int, num_eval: int, num_classes: int, num_labelled_classes: int,
                  min_frames: int, max_frames: int, num_shards: int, seed: int,
                  feature_sizes: Sequence[int] = (1024, 128), id_key: str = "id") -> dict:
  """The settings that determine a synthetic dataset (JSON-able; stored in synthetic.json)."""
  return dict(version=GENERATOR_VERSION, num_train=int(num_train), num_eval=int(num_eval),
              num_classes=int(num_classes), num_labelled_classes=int(num_labelled_classes),
              min_frames=int(min_frames), max_frames=int(max_frames), num_shards=int(num_shards),
              seed=int(seed), feature_sizes=[int(s) for s in feature_sizes], id_key=str(id_key))


def write_synthetic_youtube8m(directory: str | os.PathLike, *, num_train: int, num_eval: int,
                              num_classes: int, num_labelled_classes: int, min_frames: int,
                              max_frames: int, num_shards: int, seed: int,
                              feature_sizes: Sequence[int] = (1024, 128), id_key: str = "id",
                              log: Callable[[str], None] = print) -> SyntheticFiles:
  """Writes (or reuses) a synthetic frame-level YouTube-8M dataset in `directory`.

  If `directory` already holds a complete dataset written with the same settings, nothing
  is written. Each shard is written atomically; `synthetic.json` is written last.

  Args:
    directory: output directory (created if needed).
    num_train: training videos (`train-*` shards).
    num_eval: evaluation videos (`validate-*` shards).
    num_classes: size of the label space; labels are a fixed subset of [0, num_classes).
    num_labelled_classes: classes that actually occur (at least 3: one of each kind).
    min_frames: minimum frames per video.
    max_frames: maximum frames per video.
    num_shards: files per split.
    seed: random seed; the output is a deterministic function of all arguments.
    feature_sizes: (video dim, audio dim) of the 'rgb' and 'audio' feature lists.
    id_key: context key of the video id ('id' as in 2018 data; 'video_id' as in 2017).
    log: progress printer.

  Returns:
    The file patterns and paths (`SyntheticFiles`).
  """
  directory = os.fspath(directory)
  if not 3 <= num_labelled_classes <= num_classes:
    raise ValueError(f"num_labelled_classes must be in [3, num_classes={num_classes}], got "
                     f"{num_labelled_classes}")
  if not 1 <= min_frames <= max_frames:
    raise ValueError(f"need 1 <= min_frames ({min_frames}) <= max_frames ({max_frames})")
  if len(feature_sizes) != 2:
    raise ValueError(f"feature_sizes must be (video dim, audio dim), got {feature_sizes}")
  if num_shards < 1 or num_train < 0 or num_eval < 0:
    raise ValueError("num_shards must be >= 1 and num_train, num_eval >= 0")
  settings = make_settings(num_train=num_train, num_eval=num_eval, num_classes=num_classes,
                           num_labelled_classes=num_labelled_classes, min_frames=min_frames,
                           max_frames=max_frames, num_shards=num_shards, seed=seed,
                           feature_sizes=feature_sizes, id_key=id_key)
  files = synthetic_files(directory)
  if cache.is_complete(directory, settings):
    log(f"synthetic YouTube-8M: reusing {directory}")
    return files
  os.makedirs(directory, exist_ok=True)
  start_time = time.time()
  world_seq, train_seq, eval_seq = np.random.SeedSequence(int(seed)).spawn(3)
  world = _World(np.random.default_rng(world_seq), num_classes, num_labelled_classes,
                 feature_sizes)

  total = num_train + num_eval
  done = [0]
  next_report = [max(1, total // 10)]

  def progress():
    done[0] += 1
    if done[0] >= next_report[0] or done[0] == total:
      log(f"synthetic YouTube-8M: {done[0]}/{total} records written "
          f"({time.time() - start_time:.1f} s)")
      next_report[0] += max(1, total // 10)

  vertical_of = world.verticals(seed)
  styles = world.styles(seed, int(vertical_of.max()) + 1)
  meta = {"labelled_classes": world.classes, "class_kind": world.kinds,
          "class_level": world.levels, "class_vertical": vertical_of}
  for split, num, seq, prefix in (("train", num_train, train_seq, "syntr"),
                                  ("validate", num_eval, eval_seq, "synva")):
    rng = np.random.default_rng(seq)
    videos = _draw_videos(world, vertical_of, rng, num, min_frames, max_frames)
    for key, value in videos.items():
      meta[f"{split}_{key}"] = value
    bounds = np.linspace(0, num, num_shards + 1).round().astype(int)
    for shard in range(num_shards):
      path = os.path.join(directory, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord")
      tfrecord.write_tfrecord(path, _records(world, rng, videos, styles, bounds[shard],
                                             bounds[shard + 1], prefix, id_key, progress))

  cache.atomic_write_text(files.taxonomy_file, "class_index,level,name,parent\n" + "".join(
      f"{c},{lvl},{name},{parent if parent >= 0 else ''}\n" for c, lvl, name, parent in
      zip(world.classes, world.levels, world.names(), world.parents(seed))))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
  with os.fdopen(fd, "wb") as f:
    np.savez(f, **meta)
  os.chmod(tmp, 0o644)
  os.replace(tmp, files.meta_file)
  cache.write_marker(directory, settings, seconds=round(time.time() - start_time, 2))
  log(f"synthetic YouTube-8M: wrote {num_train} train + {num_eval} eval videos to {directory} in "
      f"{time.time() - start_time:.1f} s")
  return files
