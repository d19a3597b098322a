"""AV-digits (mmjax.data.avdigits, real spoken digits and handwritten pictures) written as
MERTools features, so the MER systems run on a real two-modality benchmark in the same layout
as the challenge data.

  <root>/train-label.csv      name,discrete,valence   AV-digits' train + validation speakers
  <root>/train-few-label.csv  the same rows, a stratified 10 % (self-training's labelled set)
  <root>/unlabelled.csv       name                    the other 90 % (the unlabelled pool)
  <root>/test-label.csv       name,discrete,valence   the test speaker
  <root>/features/mfcc-FRA/<name>.npy         [T, 13]  MFCCs, standardized per coefficient
                                                       with the training frames' mean and std
  <root>/features/mfcc-delta-FRA/<name>.npy   [T, 13]  first differences over time (T - 1 rows
                                                       padded by repeating the first)
  <root>/features/mfcc-delta2-FRA/<name>.npy  [T, 13]  second differences, likewise
  <root>/features/pixels-UTT/<name>.npy       [64]     the picture, values / 16

The three MFCC views stand in for seed 004's three HuBERT layers (three acoustic
representations, each fused with the visual features). Digits carry no valence: the label
files' valence is the digit mapped linearly to [-5, 5], (d - 4.5) * 10 / 9, a regression target
that agrees with the class, so the joint decoder and MSE have something to predict.
Class names are the digits '0'..'9'.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict

import numpy as np

from mmjax.data import avdigits, cache, mertools, modality_arrays
from mmjax.data.mertools_layout import write_feature
from mmjax.data.sharded_stream import config_value

__all__ = ["CLASSES", "EXTRACTORS", "ensure", "label_files"]

VERSION = 1
CLASSES = tuple(str(d) for d in range(10))
EXTRACTORS = ("mfcc-FRA", "mfcc-delta-FRA", "mfcc-delta2-FRA", "pixels-UTT")
FEW_FRACTION = 0.1


def _delta(frames: np.ndarray) -> np.ndarray:
  """x_t - x_{t-1} over [T, D] (the first row repeats the second's difference)."""
  if len(frames) < 2:
    return np.zeros_like(frames)
  diff = np.diff(frames, axis=0)
  return np.concatenate([diff[:1], diff])


def write(directory: str, source: str, log: Callable[[str], None] = print) -> None:
  """Writes the MERTools layout of the AV-digits split files in `source` (module docstring)."""
  splits = {s: modality_arrays.load_split(os.path.join(source, f"{s}.npz"))
            for s in avdigits.SPLITS}
  train_frames = np.concatenate([a[:n] for a, n in zip(splits["train"].fields["audio"],
                                                       splits["train"].fields["audio_frames"])])
  mean, std = train_frames.mean(0), train_frames.std(0)
  root = os.path.join(directory, "features")
  rows = {"train": [], "test": []}
  for split, data in splits.items():
    target = "test" if split == "test" else "train"
    for i, name in enumerate(data.ids):
      mfcc = (data.fields["audio"][i, :data.fields["audio_frames"][i]] - mean) / std
      views = {"mfcc": mfcc, "mfcc-delta": _delta(mfcc), "mfcc-delta2": _delta(_delta(mfcc))}
      for extractor, value in views.items():
        write_feature(root, extractor, "FRA", name, value.astype(np.float32))
      write_feature(root, "pixels", "UTT", name,
                    (data.fields["image"][i].reshape(-1) / 16.0).astype(np.float32))
      rows[target].append((str(name), int(data.labels[i])))
    log(f"AV-digits as MERTools features: {split} ({len(data)} samples)")
  for split in ("train", "test"):
    _label_file(os.path.join(directory, f"{split}-label.csv"), rows[split])
  digits = np.array([d for _, d in rows["train"]])
  rng = np.random.default_rng(0)
  few = np.zeros(len(digits), bool)
  for d in range(10):
    at = rng.permutation(np.flatnonzero(digits == d))
    few[at[:max(1, int(round(FEW_FRACTION * len(at))))]] = True
  _label_file(os.path.join(directory, "train-few-label.csv"),
              [r for r, keep in zip(rows["train"], few) if keep])
  mertools.write_label_file(os.path.join(directory, "unlabelled.csv"),
                            [n for (n, _), keep in zip(rows["train"], few) if not keep])


def _label_file(path: str, rows) -> None:
  """name,discrete,valence with valence = (d - 4.5) * 10 / 9 (module docstring)."""
  digits = np.array([d for _, d in rows])
  mertools.write_label_file(path, [n for n, _ in rows], digits, (digits - 4.5) * 10 / 9,
                            classes=CLASSES)


def ensure(data_config: Any, log: Callable[[str], None] = print) -> str:
  """The MERTools directory of AV-digits (data.avdigits.{seed, imbalance}), written once into
  the cache next to the AV-digits split files it is made from."""
  source, = avdigits.resolve_files(data_config, log)
  values = {"version": VERSION, "source": avdigits.settings(data_config)}
  avd = config_value(data_config, "avdigits", None) or {}

  def build(tmp: str) -> None:
    write(tmp, source, log)
    cache.write_marker(tmp, values)

  return cache.ensure_dataset(config_value(avd, "cache_dir", ""), "avdigits_mertools", values,
                              build, what="AV-digits MERTools features", log=log)


def label_files(directory: str, labelled: str = "all") -> Dict[str, str]:
  """{split: label file}: 'all' trains on every training row; 'few' on the 10 % with the other
  90 % as the unlabelled pool."""
  train = "train-label.csv" if labelled == "all" else "train-few-label.csv"
  files = {"train": os.path.join(directory, train),
           "test": os.path.join(directory, "test-label.csv")}
  if labelled != "all":
    files["unlabelled"] = os.path.join(directory, "unlabelled.csv")
  return files
