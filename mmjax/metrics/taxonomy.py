"""Class-to-level maps of the YouTube-8M vocabulary hierarchy.

A taxonomy file is a CSV whose header is `class_index,level` or
`class_index,level,name`, followed by one row per class, e.g.

  class_index,level,name
  0,0,Games
  1,1,"Video game, action"

Classes absent from the file get level -1: they count for the overall
metrics but for no level-wise metric.
"""

import csv
import os

import numpy as np

_HEADER = ('class_index', 'level')


def load_taxonomy(path: str | os.PathLike, num_classes: int) -> np.ndarray:
  """Reads a taxonomy CSV into per-class levels.

  Args:
    path: CSV file with header `class_index,level[,name]`.
    num_classes: vocabulary size C; every class_index must lie in [0, C).

  Returns:
    [C] int64 levels (>= 0), -1 for classes absent from the file.

  Raises:
    ValueError: naming the file and line, for a bad header, a malformed row
      (wrong field count, non-integer index or level, negative level), a
      class_index outside [0, C), or a class listed twice.
  """
  levels = np.full(num_classes, -1, np.int64)
  first_line = {}
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = [field.strip() for field in next(reader, [])]
    if tuple(header) not in (_HEADER, _HEADER + ('name',)):
      raise ValueError(f'{path}, line 1: expected header '
                       f'"class_index,level[,name]", got {",".join(header)!r}')
    for row in reader:
      line = reader.line_num
      if not any(field.strip() for field in row):
        continue
      index, level = _parse_row(row, len(header), path, line)
      if not 0 <= index < num_classes:
        raise ValueError(f'{path}, line {line}: class_index {index} is outside '
                         f'[0, {num_classes})')
      if index in first_line:
        raise ValueError(f'{path}, line {line}: class_index {index} is a '
                         f'duplicate of line {first_line[index]}')
      first_line[index] = line
      levels[index] = level
  return levels


def _parse_row(row: list[str], num_fields: int, path, line: int):
  """Returns (class_index, level) of one data row, or raises ValueError."""
  if len(row) != num_fields:
    raise ValueError(f'{path}, line {line}: expected {num_fields} fields, '
                     f'got {len(row)}: {row!r}')
  try:
    index, level = int(row[0]), int(row[1])
  except ValueError:
    raise ValueError(f'{path}, line {line}: class_index and level must be '
                     f'integers, got {row[:2]!r}') from None
  if level < 0:
    raise ValueError(f'{path}, line {line}: level must be >= 0, got {level}')
  return index, level
