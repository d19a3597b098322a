"""Labelled multimodal examples stored as named arrays in one .npz file per split: grain pipelines.

A dataset is a directory (data.directory) of split files `<split>.npz`; data.train_split
(default 'train') and data.eval_split (default 'validation') name the splits read (an eval split
of the config may override data.eval_split, e.g. 'test').

Format of a split file (written with `write_split`):
  'label'   int [N]: class ids in [0, num_classes)
  'id'      str [N]: unique example names (used by self-training and k-fold runs to track rows)
  <field>   [N, ...]: one array per input field, e.g. 'image' uint8 [N, 8, 8], 'audio' float32
            [N, T, 13] (padded) with 'audio_frames' int [N] (valid frames). Every array whose
            first dimension is N, except 'id', is an example field.

Batches hold the fields named by data.fields (all fields when empty) as float32 (integer
fields too, except names ending in '_frames', which stay int32), 'label' int32 [B],
'weight' float32 [B] (1 real, 0 padding rows of an eval pass) and 'modality_mask' float32
[B, M] over data.modalities (1 present, 0 missing): an eval split with
data.missing_modalities=('audio',) marks that modality missing in every example (the model
zeroes its embedding, as modality dropout does in training) and zeroes its fields.

Held-out slice (gradient blending, mmjax.transforms.gblend): with data.holdout_fraction = f > 0,
a fixed f of the training file's rows (a permutation seeded by data.holdout_seed) is held out.
data.train_subset (training) and data.eval_subset (evaluation) select the rows a dataset reads
from its split file: 'all' (default), 'train' (without the held-out rows: training then never
sees them) or 'holdout' (only them).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from mmjax.data import sharded_stream
from mmjax.data.sharded_stream import config_value

__all__ = ["FILE_KEYS", "ModalityArrays", "holdout_rows", "load_split", "make_eval_dataset",
           "make_train_dataset", "split_path", "subset_rows", "write_split"]

FILE_KEYS = ("directory",)
SUBSETS = ("all", "train", "holdout")


class ModalityArrays:
  """The arrays of one split file, checked (module docstring).

  Attributes: path, labels int64 [N], ids str [N], fields {name: array [N, ...]}.
  """

  def __init__(self, path: str, num_classes: int | None = None):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"{self.path}: no such split file (config keys data.directory, "
                              "data.train_split, data.eval_split)")
    try:
      with np.load(self.path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as e:
      raise ValueError(f"{self.path}: not a readable .npz file: {e}") from e
    for required in ("label", "id"):
      if required not in arrays:
        raise ValueError(f"{self.path}: missing array {required!r} (has {sorted(arrays)})")
    self.labels = arrays.pop("label")
    self.ids = arrays.pop("id").astype(str)
    n = len(self.labels)
    if self.labels.ndim != 1 or not np.issubdtype(self.labels.dtype, np.integer):
      raise ValueError(f"{self.path}: 'label' must be an int array [N], got "
                       f"{self.labels.dtype} {self.labels.shape}")
    if self.ids.shape != (n,):
      raise ValueError(f"{self.path}: 'id' has shape {self.ids.shape}, 'label' has {n} rows")
    if num_classes is not None and n and (self.labels.min() < 0 or
                                          self.labels.max() >= num_classes):
      bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= num_classes))[0])
      raise ValueError(f"{self.path}: row {bad} (id {str(self.ids[bad])!r}) has label "
                       f"{self.labels[bad]}, outside [0, {num_classes}) (data.num_classes)")
    self.fields = {k: v for k, v in arrays.items() if v.ndim >= 1 and len(v) == n}

  def __len__(self) -> int:
    return len(self.labels)

  def select(self, names: Sequence[str]) -> dict:
    """{name: array} of the named fields (all when empty); an unknown name raises ValueError
    naming the file and config key data.fields."""
    names = tuple(names) or tuple(sorted(self.fields))
    missing = [n for n in names if n not in self.fields]
    if missing:
      raise ValueError(f"{self.path}: no field(s) {missing} (data.fields / data.modalities); "
                       f"the file has {sorted(self.fields)}")
    return {n: self.fields[n] for n in names}


@functools.lru_cache(maxsize=8)
def _cached_split(path: str, mtime: float, num_classes: int | None) -> ModalityArrays:
  del mtime  # part of the cache key only: a rewritten file is read again
  return ModalityArrays(path, num_classes)


def load_split(path: str, num_classes: int | None = None) -> ModalityArrays:
  """The checked arrays of a split file (cached per path and modification time)."""
  path = os.path.abspath(os.fspath(path))
  mtime = os.path.getmtime(path) if os.path.exists(path) else -1.0
  return _cached_split(path, mtime, num_classes)


def write_split(path: str, *, labels: np.ndarray, ids: Sequence[str],
                fields: Mapping[str, np.ndarray]) -> None:
  """Writes one split file (module docstring) atomically (a temporary file, then a rename)."""
  labels = np.asarray(labels, np.int64)
  ids = np.asarray(ids, dtype=str)
  if ids.shape != labels.shape or len(set(ids.tolist())) != len(ids):
    raise ValueError(f"{path}: ids must be unique, one per label ({len(ids)} ids, "
                     f"{len(labels)} labels)")
  for name, value in fields.items():
    if name in ("label", "id") or len(value) != len(labels):
      raise ValueError(f"{path}: field {name!r} must have {len(labels)} rows and not be "
                       "named 'label' or 'id'")
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  np.savez(tmp, label=labels, id=ids, **fields)
  os.replace(tmp, path)


def holdout_rows(num_rows: int, fraction: float, seed: int) -> np.ndarray:
  """bool [num_rows]: the round(fraction * num_rows) rows held out (first rows of a permutation
  seeded by `seed`)."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"config key data.holdout_fraction must be in [0, 1), got {fraction}")
  order = np.random.default_rng(seed).permutation(num_rows)
  held = np.zeros(num_rows, bool)
  held[order[:int(round(fraction * num_rows))]] = True
  return held


def subset_rows(data_config: Any, num_rows: int, key: str = "train_subset") -> np.ndarray:
  """int64 row indices that data.<key> (train_subset or eval_subset) selects (module
  docstring)."""
  subset = config_value(data_config, key, "all") or "all"
  if subset not in SUBSETS:
    raise ValueError(f"config key data.{key}={subset!r}; expected one of {SUBSETS}")
  held = holdout_rows(num_rows, float(config_value(data_config, "holdout_fraction", 0.0)),
                      int(config_value(data_config, "holdout_seed", 0)))
  if subset == "train":
    return np.flatnonzero(~held)
  if subset == "holdout":
    if not held.any():
      raise ValueError(f"data.{key}='holdout' needs data.holdout_fraction > 0")
    return np.flatnonzero(held)
  return np.arange(num_rows)


class _Collate:
  """Examples (dicts; None = padding) -> a batch (module docstring)."""

  def __init__(self, shapes: Mapping[str, tuple], modalities: Sequence[str],
               missing: Sequence[str]):
    self._shapes = dict(shapes)
    self._present = np.array([m not in missing for m in modalities], np.float32)
    self._missing = tuple(missing)

  def __call__(self, examples: list) -> dict:
    batch = {}
    for name, shape in self._shapes.items():
      dtype = np.int32 if name.endswith("_frames") else np.float32
      batch[name] = np.zeros((len(examples),) + shape, dtype)
    batch["label"] = np.zeros((len(examples),), np.int32)
    for i, example in enumerate(examples):
      if example is None:
        continue
      for name, value in example.items():
        batch[name][i] = value
    for name in self._shapes:
      if any(name == m or name.startswith(m + "_") for m in self._missing):
        batch[name][:] = 0
    real = np.array([e is not None for e in examples], np.float32)
    batch["weight"] = real
    batch["modality_mask"] = np.outer(real, self._present).astype(np.float32)
    return batch


def _load(fields: Mapping[str, np.ndarray], labels: np.ndarray, rows: np.ndarray, i: int) -> dict:
  row = rows[i]
  return {"label": labels[row], **{name: value[row] for name, value in fields.items()}}


def split_path(data_config: Any, key: str) -> str:
  """<data.directory>/<data.<key>>.npz, key 'train_split' or 'eval_split'."""
  directory = config_value(data_config, "directory", "")
  split = config_value(data_config, key, "")
  if not directory or not split:
    raise ValueError(f"config keys data.directory ({directory!r}) and data.{key} ({split!r}) "
                     "must both be set")
  return os.path.join(os.path.expanduser(directory), f"{split}.npz")


def _records(data_config: Any, key: str) -> tuple[int, Callable[[int], dict], _Collate]:
  """(number of rows, load, collate) of the split data.<key> after data.train_subset /
  data.eval_subset."""
  path = split_path(data_config, key)
  num_classes = config_value(data_config, "num_classes", None)
  split = load_split(path, None if num_classes is None else int(num_classes))
  fields = split.select(tuple(config_value(data_config, "fields", ()) or ()))
  modalities = tuple(config_value(data_config, "modalities", ()) or ())
  missing = tuple(config_value(data_config, "missing_modalities", ()) or ())
  unknown = [m for m in missing if m not in modalities]
  if unknown:
    raise ValueError(f"config key data.missing_modalities names {unknown}, not in "
                     f"data.modalities {list(modalities)}")
  rows = subset_rows(data_config, len(split), key.replace("_split", "_subset"))
  shapes = {name: value.shape[1:] for name, value in fields.items()}
  return (len(rows), functools.partial(_load, fields, split.labels, rows),
          _Collate(shapes, modalities, missing))


def make_train_dataset(data_config: Any, *, batch_size: int, seed: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """The infinite, shuffled, resumable training pipeline of this process over the rows of
  split data.train_split that data.train_subset selects (`sharded_stream.indexed_dataset` with
  a seed).

  Raises:
    FileNotFoundError / ValueError naming the file and the config key (module docstring).
  """
  return sharded_stream.indexed_dataset(
      data_config, "train_split", _records, batch_size=batch_size, seed=seed,
      process_index=process_index, process_count=process_count)


def make_eval_dataset(data_config: Any, *, batch_size: int, process_index: int | None = None,
                      process_count: int | None = None) -> grain.IterDataset:
  """One evaluation pass over the rows of split data.eval_split that data.eval_subset selects, in
  file order, split between the processes (padding rows have weight 0)."""
  return sharded_stream.indexed_dataset(data_config, "eval_split", _records,
                                        batch_size=batch_size, process_index=process_index,
                                        process_count=process_count)
