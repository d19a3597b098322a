"""The on-disk layout of MERTools features (MER2023/MER2024 challenge toolkits).

A feature root holds one directory per extractor and level, one .npy file per sample:

  <root>/<extractor>-UTT/<name>.npy   float [D]     utterance level (one vector per sample)
  <root>/<extractor>-FRA/<name>.npy   float [T, D]  frame level (one vector per frame/step)

e.g. features/hubert-large-L18-UTT/sample_00000001.npy. `<extractor>` is any name without a path
separator; `<name>` is the sample name of the label files (mmjax.data.mertools).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["LEVELS", "feature_dir", "feature_file", "has_feature", "write_feature"]

LEVELS = ("UTT", "FRA")


def _check(extractor: str, level: str) -> None:
  if level not in LEVELS:
    raise ValueError(f"feature level {level!r}: expected one of {LEVELS}")
  if not extractor or os.sep in extractor or extractor.endswith(("-UTT", "-FRA")):
    raise ValueError(f"extractor name {extractor!r}: must be non-empty, without '{os.sep}' and "
                     "without the -UTT/-FRA suffix (the level adds it)")


def feature_dir(root: str, extractor: str, level: str) -> str:
  """<root>/<extractor>-<level>, level 'UTT' or 'FRA'."""
  _check(extractor, level)
  return os.path.join(os.path.expanduser(root), f"{extractor}-{level}")


def feature_file(root: str, extractor: str, level: str, name: str) -> str:
  """<root>/<extractor>-<level>/<name>.npy."""
  return os.path.join(feature_dir(root, extractor, level), f"{name}.npy")


def has_feature(root: str, extractor: str, level: str, name: str) -> bool:
  """Whether the sample's feature file exists (a resumed extraction skips it)."""
  return os.path.isfile(feature_file(root, extractor, level, name))


def write_feature(root: str, extractor: str, level: str, name: str, array: np.ndarray) -> str:
  """Writes one sample's feature atomically (a temporary file, then a rename: an interrupted
  extraction never leaves a partial .npy). UTT arrays must be [D], FRA arrays [T, D]. Returns
  the path."""
  array = np.asarray(array)
  want = 1 if level == "UTT" else 2
  if array.ndim != want:
    raise ValueError(f"{extractor}-{level}/{name}.npy: a {level} feature must have {want} "
                     f"dimension(s), got shape {array.shape}")
  path = feature_file(root, extractor, level, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}.npy"
  np.save(tmp, array)
  os.replace(tmp, path)
  return path
