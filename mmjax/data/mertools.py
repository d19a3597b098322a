"""MER challenge data as MERTools participants hold it: label CSVs and per-sample feature files,
converted into mmjax.data.modality_arrays split files that the MER systems train on.

Label files (MER2023 `train-label.csv`, MER2024 `label-6way.csv`): CSV with a header row and
the columns
  name       the sample name (the feature files' stem)
  discrete   one of the class names (MER: neutral, angry, happy, sad, worried, surprise)
  valence    a number (MER2023: in [-5, 5]); optional column
A file with only a `name` column (or with empty discrete values everywhere) lists unlabelled
samples (a challenge test set, MER2024's unlabelled pool).

Features (mmjax.data.mertools_layout): `<root>/<extractor>-UTT/<name>.npy` [D] or
`<root>/<extractor>-FRA/<name>.npy` [T, D]. `data.mertools.features` maps each model input
(field) to one such directory name, e.g. {'audio': 'hubert-large-L18-UTT', 'video':
'emovclip-FRA'}. Frame-level features are pooled by data.mertools.pooling:
  'meanvar'   concat(mean_t x_t, var_t x_t) -> [2D]   (seed 003: temporal mean and variance)
  'mean'      mean_t x_t -> [D]
  'sequence'  kept as frames, padded/cut to data.mertools.max_frames -> [T_max, D] plus
              '<field>_frames' int [N] (the valid frames)
A missing feature file, a feature whose dimension differs from the other samples', or an array
of the wrong rank raises ValueError naming the extractor directory and the sample.

A converted split file holds 'label' (class ids; 0 for unlabelled rows), 'id' (the names),
one array per field, 'valence' float32 [N] (0 where unknown) and 'labelled' float32 [N] (1 for
rows with a discrete label). Where the data come from (the data module's `resolve_files`):
  data.directory set                    its split files are used as they are;
  data.mertools.train_labels set        the label files and data.mertools.features_root are
                                        converted once into the cache (keyed by the label
                                        files' paths, sizes and modification times and by each
                                        feature directory's file count, total size and latest
                                        modification time, so edited inputs convert again);
  neither                               data.mertools.source: 'synthetic' (default), synthetic
                                        MERTools-format features (mmjax.data.synthetic_mertools)
                                        written once and converted the same way; 'avdigits',
                                        the AV-digits benchmark in the same layout
                                        (mmjax.data.avdigits_mertools; data.mertools.labelled
                                        'all' or 'few').
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from mmjax.data import cache, modality_arrays
from mmjax.data.mertools_layout import LEVELS
from mmjax.data.sharded_stream import config_value

__all__ = ["CLASSES", "FILE_KEYS", "POOLINGS", "Labels", "convert_split", "convert_splits",
           "feature_matrix", "pool_frames", "read_labels", "resolve_files",
           "write_label_file"]

CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")
POOLINGS = ("meanvar", "mean", "sequence")
FILE_KEYS = ("directory",)
SPLIT_KEYS = {"train": "train_labels", "test": "test_labels", "unlabelled": "unlabelled_labels"}
CONVERTER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Labels:
  """The rows of one label file. names str [N]; labels int64 [N] (-1 unlabelled); valence
  float64 [N] (NaN unknown)."""
  path: str
  names: np.ndarray
  labels: np.ndarray
  valence: np.ndarray

  @property
  def labelled(self) -> np.ndarray:
    return self.labels >= 0


def _cell(row: Mapping[str, str], key: str) -> str:
  return (row.get(key) or "").strip()


def read_labels(path: str, class_names: Sequence[str] = CLASSES) -> Labels:
  """Reads a MERTools label CSV (module docstring).

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the file, line and sample: no 'name' column, an empty or repeated name,
      a discrete value that is not one of `class_names`, a valence that is not a finite number.
  """
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such label file (data.mertools.*_labels)")
  index = {c: i for i, c in enumerate(class_names)}
  names, labels, valence = [], [], []
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or ()]
    if "name" not in columns:
      raise ValueError(f"{path}: no 'name' column in the header {columns} (expected "
                       "name[,discrete[,valence]])")
    reader.fieldnames = columns
    seen = set()
    for line, row in enumerate(reader, start=2):
      name = _cell(row, "name")
      where = f"{path}, line {line} (sample {name!r})"
      if not name:
        raise ValueError(f"{path}, line {line}: empty name")
      if name in seen:
        raise ValueError(f"{where}: the name appears twice")
      seen.add(name)
      discrete = _cell(row, "discrete")
      if discrete and discrete not in index:
        raise ValueError(f"{where}: discrete label {discrete!r} is not one of the classes "
                         f"{list(class_names)} (data.class_names)")
      value = _cell(row, "valence")
      try:
        number = float(value) if value else math.nan
      except ValueError:
        raise ValueError(f"{where}: valence {value!r} is not a number") from None
      if value and not math.isfinite(number):
        raise ValueError(f"{where}: valence {value!r} is not finite")
      names.append(name)
      labels.append(index[discrete] if discrete else -1)
      valence.append(number)
  return Labels(path, np.array(names, dtype=str), np.array(labels, np.int64),
                np.array(valence, np.float64))


def write_label_file(path: str, names: Sequence[str], labels=None, valence=None,
                     classes: Sequence[str] = CLASSES) -> None:
  """A MERTools label CSV: name,discrete,valence (or only name when labels is None)."""
  if labels is None:
    rows = ["name", *names]
  else:
    rows = ["name,discrete,valence", *[f"{n},{classes[y]},{v:.4f}"
                                       for n, y, v in zip(names, labels, valence)]]
  cache.atomic_write_text(path, "\n".join(rows) + "\n")


def _level(extractor_dir: str) -> str:
  level = extractor_dir.rsplit("-", 1)[-1]
  if level not in LEVELS or "-" not in extractor_dir:
    raise ValueError(f"feature directory {extractor_dir!r} (data.mertools.features) must end in "
                     "-UTT or -FRA")
  return level


def pool_frames(frames: np.ndarray, pooling: str) -> np.ndarray:
  """Pools a frame-level feature [T, D] (module docstring): 'meanvar' -> [2D], 'mean' -> [D].
  The variance is the population variance (ddof 0)."""
  if pooling == "meanvar":
    return np.concatenate([frames.mean(0), frames.var(0)])
  if pooling == "mean":
    return frames.mean(0)
  raise ValueError(f"data.mertools.pooling={pooling!r}: expected one of {POOLINGS}")


def _read_feature(root: str, extractor_dir: str, name: str, want_ndim: int) -> np.ndarray:
  path = os.path.join(root, extractor_dir, f"{name}.npy")
  if not os.path.isfile(path):
    raise ValueError(f"{extractor_dir}: no feature file for sample {name!r} ({path} is "
                     "missing)")
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"{extractor_dir}: sample {name!r}: {path} is not a readable .npy: "
                     f"{e}") from e
  if array.ndim != want_ndim or 0 in array.shape:
    raise ValueError(f"{extractor_dir}: sample {name!r} has shape {array.shape}; a "
                     f"{extractor_dir[-3:]} feature must be {'[D]' if want_ndim == 1 else '[T, D]'}"
                     " and non-empty")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{extractor_dir}: sample {name!r} ({path}) holds NaN or inf")
  return array.astype(np.float32)


def feature_matrix(root: str, extractor_dir: str, names: Sequence[str], pooling: str = "meanvar",
                   max_frames: int = 0) -> Dict[str, np.ndarray]:
  """The feature of every sample of `names` from <root>/<extractor_dir>, stacked.

  Returns {'value': [N, D'] (UTT, or FRA pooled) or [N, T_max, D] (FRA with 'sequence'), and
  for 'sequence' also 'frames' int32 [N]}. T_max = max_frames, or the longest sample when 0;
  longer samples are cut to their first T_max frames.

  Raises:
    ValueError naming `extractor_dir` and the sample (module docstring).
  """
  if pooling not in POOLINGS:
    raise ValueError(f"data.mertools.pooling={pooling!r}: expected one of {POOLINGS}")
  level = _level(extractor_dir)
  root = os.path.expanduser(root)
  if not os.path.isdir(os.path.join(root, extractor_dir)):
    raise ValueError(f"{extractor_dir}: no such feature directory under {root} "
                     "(data.mertools.features_root, data.mertools.features)")
  arrays, first = [], None
  for name in map(str, names):
    array = _read_feature(root, extractor_dir, name, 1 if level == "UTT" else 2)
    if first is None:
      first = (name, array.shape[-1])
    elif array.shape[-1] != first[1]:
      raise ValueError(f"{extractor_dir}: sample {name!r} has dimension {array.shape[-1]}, "
                       f"sample {first[0]!r} has {first[1]}")
    arrays.append(array)
  if not arrays:
    return {"value": np.zeros((0, 0), np.float32)}
  if level == "UTT":
    return {"value": np.stack(arrays)}
  if pooling != "sequence":
    return {"value": np.stack([pool_frames(a, pooling) for a in arrays]).astype(np.float32)}
  length = max_frames or max(len(a) for a in arrays)
  value = np.zeros((len(arrays), length, first[1]), np.float32)
  frames = np.zeros(len(arrays), np.int32)
  for i, array in enumerate(arrays):
    frames[i] = min(len(array), length)
    value[i, :frames[i]] = array[:frames[i]]
  return {"value": value, "frames": frames}


def convert_split(labels: Labels, features_root: str, features: Mapping[str, str], path: str, *,
                  pooling: str = "meanvar", max_frames: int = 0) -> None:
  """Writes the modality_arrays split file `path` for the rows of `labels` (module docstring):
  one array per field of `features` ({field: extractor directory})."""
  if not features:
    raise ValueError("data.mertools.features is empty: name at least one feature directory")
  fields = {}
  for field, extractor_dir in sorted(features.items()):
    stacked = feature_matrix(features_root, extractor_dir, labels.names, pooling, max_frames)
    fields[field] = stacked["value"]
    if "frames" in stacked:
      fields[f"{field}_frames"] = stacked["frames"]
  known = np.isfinite(labels.valence)
  fields["valence"] = np.where(known, labels.valence, 0.0).astype(np.float32)
  fields["labelled"] = labels.labelled.astype(np.float32)
  modality_arrays.write_split(path, labels=np.maximum(labels.labels, 0), ids=labels.names,
                              fields=fields)


def _file_key(path: str) -> list:
  """What identifies a label file's content in the cache key: path, size, mtime."""
  stat = os.stat(path)
  return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def _directory_key(path: str) -> list:
  """What identifies a feature directory's content in the cache key: its .npy files' count,
  total size and latest mtime (a re-extracted feature converts again)."""
  count = size = latest = 0
  if os.path.isdir(path):
    for entry in os.scandir(path):
      if entry.name.endswith(".npy"):
        stat = entry.stat()
        count, size, latest = count + 1, size + stat.st_size, max(latest, stat.st_mtime_ns)
  return [count, size, latest]


def convert_splits(data_config: Any, label_files: Mapping[str, str], features_root: str,
                   log: Callable[[str], None] = print) -> str:
  """Converts the label files {split: path} with the features of data.mertools into split
  files <directory>/<split>.npz, once, in the cache (module docstring). Returns the directory."""
  mer = config_value(data_config, "mertools", None) or {}
  features = dict(config_value(mer, "features", None) or {})
  pooling = config_value(mer, "pooling", "meanvar")
  max_frames = int(config_value(mer, "max_frames", 0))
  class_names = tuple(config_value(data_config, "class_names", CLASSES))
  for split, path in label_files.items():
    if not os.path.isfile(os.path.expanduser(path)):
      raise FileNotFoundError(f"{path}: no such label file (data.mertools.{SPLIT_KEYS[split]})")
  settings = {"version": CONVERTER_VERSION, "features_root": os.path.abspath(
      os.path.expanduser(features_root)), "features": features, "pooling": pooling,
              "max_frames": max_frames, "class_names": list(class_names),
              "labels": {s: _file_key(os.path.expanduser(p)) for s, p in label_files.items()},
              "feature_files": {d: _directory_key(os.path.join(os.path.expanduser(features_root),
                                                               d)) for d in features.values()}}

  def write(tmp: str) -> None:
    for split, path in label_files.items():
      labels = read_labels(path, class_names)
      log(f"MERTools: converting {split} ({len(labels.names)} samples, "
          f"{int(labels.labelled.sum())} labelled) from {features_root}")
      convert_split(labels, features_root, features, os.path.join(tmp, f"{split}.npz"),
                    pooling=pooling, max_frames=max_frames)
    cache.write_marker(tmp, settings)

  return cache.ensure_dataset(config_value(mer, "cache_dir", ""), "mertools", settings, write,
                              what="MERTools features", log=log)


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str]:
  """(dataset directory,) for the data module (module docstring)."""
  directory = config_value(data_config, "directory", "")
  if directory:
    return (directory,)
  mer = config_value(data_config, "mertools", None) or {}
  label_files = {split: config_value(mer, key, "") for split, key in SPLIT_KEYS.items()}
  label_files = {split: path for split, path in label_files.items() if path}
  if label_files:
    if "train" not in label_files:
      raise ValueError("data.mertools.train_labels is empty but other label files are set: "
                       "set it (or none, for the synthetic features)")
    features_root = config_value(mer, "features_root", "")
    if not features_root:
      raise ValueError("data.mertools.features_root is empty: the directory holding the "
                       "<extractor>-UTT / -FRA feature folders")
    return (convert_splits(data_config, label_files, features_root, log),)
  source = config_value(mer, "source", "synthetic")
  if source == "avdigits":
    from mmjax.data import avdigits_mertools  # pylint: disable=import-outside-toplevel
    root = avdigits_mertools.ensure(data_config, log)
    files = avdigits_mertools.label_files(root, config_value(mer, "labelled", "all"))
    return (convert_splits(data_config, files, os.path.join(root, "features"), log),)
  if source != "synthetic":
    raise ValueError(f"data.mertools.source={source!r}: expected 'synthetic' or 'avdigits' "
                     "(or set data.mertools.train_labels)")
  from mmjax.data import synthetic_mertools  # pylint: disable=import-outside-toplevel
  root = synthetic_mertools.ensure(config_value(mer, "synthetic", None) or {}, log)
  return (convert_splits(data_config, synthetic_mertools.label_files(root),
                         synthetic_mertools.features_root(root), log),)
