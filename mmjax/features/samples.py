"""Which samples to extract: the names of a MERTools label file, or every sample found in the
input directory."""

from __future__ import annotations

import os
from typing import List

from mmjax.data import tables

__all__ = ["label_names", "sample_names"]


def label_names(path: str) -> List[str]:
  """The `name` column of a label file (CSV/TSV with a header, or JSON lines: MERTools'
  `name,discrete,valence` or just `name`), in file order. ValueError naming the file and line
  for an empty or repeated name."""
  names, lines = [], {}
  for line, row in tables.read_table(path, ("name",)):
    name = row["name"].strip()
    if not name:
      raise ValueError(f"{path}: line {line}: empty 'name'")
    if name in lines:
      raise ValueError(f"{path}: line {line}: sample {name!r} is listed again (first on line "
                       f"{lines[name]})")
    lines[name] = line
    names.append(name)
  return names


def sample_names(directory: str, kind: str) -> List[str]:
  """Every sample in `directory`, sorted: kind 'wav', the stems of its `<name>.wav` files;
  kind 'frames', the clips mmjax.data.labelled_video.find_frames reads (`<name>.npy` files
  and `<name>/` directories). FileNotFoundError / ValueError naming the directory when it is
  missing or holds none."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: no such input directory")
  entries = os.listdir(directory)
  if kind == "wav":
    names = [e[:-4] for e in entries if e.endswith(".wav")]
    what = "<name>.wav files"
  elif kind == "frames":
    names = [e[:-4] for e in entries if e.endswith(".npy")]
    names += [e for e in entries if os.path.isdir(os.path.join(directory, e))]
    what = "<name>.npy frame files or <name>/ frame directories"
  else:
    raise ValueError(f"sample kind {kind!r}: expected 'wav' or 'frames'")
  if not names:
    raise ValueError(f"{directory}: no samples ({what})")
  return sorted(set(names))
