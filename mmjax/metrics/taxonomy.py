"""The label hierarchy of a YouTube-8M vocabulary: each class's level and its level-0 category.

Two file formats are read (`read_taxonomy`):

* a taxonomy CSV with header `class_index,level`, optionally followed by `name` and/or
  `parent` columns, one row per class, e.g.

    class_index,level,name,parent
    0,0,Games,
    1,1,"Video game, action",0

  With a `parent` column every class of level l > 0 names its parent (a class of level l - 1
  in the file) and so has a path to its level-0 ancestor: its top-level category (seed 001's
  640-label taxonomy has levels 0-3). Without it, levels only (no categories).
* the real YouTube-8M `vocabulary.csv` (header `Index,TrainVideoCount,KnowledgeGraphId,Name,
  WikiDescription,Vertical1,Vertical2,Vertical3,WikiUrl`): every listed class is at level 1
  under its `Vertical1`, the level-0 category.

Classes absent from the file get level -1 and no category: they count for the overall metrics
but for no level-wise or per-category metric, and never decide a negative pair.
"""

import csv
import os
from types import MappingProxyType
from typing import Mapping, NamedTuple

import numpy as np

_HEADER = ('class_index', 'level')
_OPTIONAL = ('name', 'parent')
_VOCABULARY_COLUMNS = ('Index', 'Vertical1')


class Taxonomy(NamedTuple):
  """levels: [C] int64 (-1: class absent); categories: the level-0 category names;
  top: [C] int64 index into `categories` of each class's level-0 ancestor (-1: none known);
  names: {class index: name} of the listed classes (the `name` or `Name` column)."""
  levels: np.ndarray
  top: np.ndarray
  categories: tuple
  names: Mapping[int, str] = MappingProxyType({})

  @property
  def has_hierarchy(self) -> bool:
    return bool(self.categories)

  def class_name(self, index: int) -> str:
    """The class's name, or 'class <index>' when the file gives none."""
    return self.names.get(int(index), f'class {index}')


def load_taxonomy(path: str | os.PathLike, num_classes: int) -> np.ndarray:
  """The per-class levels of `read_taxonomy(path, num_classes)`: [C] int64, -1 if absent."""
  return read_taxonomy(path, num_classes).levels


def read_taxonomy(path: str | os.PathLike, num_classes: int) -> Taxonomy:
  """Reads a taxonomy CSV or a YouTube-8M vocabulary.csv (module docstring).

  Args:
    path: the file.
    num_classes: vocabulary size C; every class index must lie in [0, C).

  Returns:
    The `Taxonomy`.

  Raises:
    ValueError: naming the file and line (or class), for a bad header, a malformed row (wrong
      field count, non-integer index or level, negative level), a class index outside [0, C),
      a class listed twice, an unknown parent, a parent whose level is not one less, a cycle,
      or a class without a level-0 ancestor.
  """
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = [field.strip() for field in next(reader, [])]
    if set(_VOCABULARY_COLUMNS) <= set(header):
      return _read_vocabulary(reader, header, path, num_classes)
    if tuple(header[:2]) != _HEADER or any(h not in _OPTIONAL for h in header[2:]) or (
        len(set(header)) != len(header)):
      raise ValueError(f'{path}, line 1: expected header "class_index,level[,name][,parent]" '
                       f'or a YouTube-8M vocabulary.csv header, got {",".join(header)!r}')
    levels = np.full(num_classes, -1, np.int64)
    parents, names, first_line = {}, {}, {}
    for row in reader:
      line = reader.line_num
      if not any(field.strip() for field in row):
        continue
      index, level = _parse_row(row, len(header), path, line)
      _check_index(index, num_classes, first_line, path, line)
      first_line[index] = line
      levels[index] = level
      fields = dict(zip(header, row))
      if fields.get('name', '').strip():
        names[index] = fields['name'].strip()
      if 'parent' in fields:
        parents[index] = _parse_parent(fields['parent'], index, level, path, line)
  if 'parent' not in header:
    return Taxonomy(levels, np.full(num_classes, -1, np.int64), (), MappingProxyType(names))
  return _with_categories(levels, parents, names, first_line, path)


def _check_index(index: int, num_classes: int, first_line: dict, path, line: int) -> None:
  if not 0 <= index < num_classes:
    raise ValueError(f'{path}, line {line}: class_index {index} is outside '
                     f'[0, {num_classes})')
  if index in first_line:
    raise ValueError(f'{path}, line {line}: class_index {index} is a '
                     f'duplicate of line {first_line[index]}')


def _parse_parent(text: str, index: int, level: int, path, line: int) -> int:
  """The parent class of a row (-1 for a level-0 class), or raises ValueError."""
  text = text.strip()
  if level == 0:
    if text:
      raise ValueError(f'{path}, line {line}: class {index} is at level 0 (a top-level '
                       f'category) but names parent {text}')
    return -1
  if not text:
    raise ValueError(f'{path}, line {line}: class {index} (level {level}) has no parent, so no '
                     'path to a level-0 ancestor')
  try:
    return int(text)
  except ValueError:
    raise ValueError(f'{path}, line {line}: parent must be a class_index, got {text!r}') from None


def _with_categories(levels, parents: dict, names: dict, first_line: dict, path) -> Taxonomy:
  """Walks each class up to its level-0 ancestor; the level-0 classes are the categories."""
  roots = sorted(c for c, p in parents.items() if p == -1)
  category_of = {c: i for i, c in enumerate(roots)}
  top = np.full(len(levels), -1, np.int64)
  for index, parent in parents.items():
    where = f'{path}, line {first_line[index]}'
    chain, node = [index], index
    while parents[node] != -1:
      if parents[node] not in parents:
        raise ValueError(f'{path}, line {first_line[node]}: class {node} names parent '
                         f'{parents[node]}, which is not in the file')
      node = parents[node]
      if node in chain:
        raise ValueError(f'{where}: the parents of class {index} form a cycle: '
                         f'{" -> ".join(map(str, chain + [node]))}')
      chain.append(node)
    if parent != -1 and levels[parent] != levels[index] - 1:
      raise ValueError(f'{where}: class {index} (level {levels[index]}) has parent {parent} at '
                       f'level {levels[parent]}; expected level {levels[index] - 1}')
    top[index] = category_of[node]
  return Taxonomy(levels, top, tuple(names.get(c, f'class {c}') for c in roots),
                  MappingProxyType(names))


def _read_vocabulary(reader, header: list, path, num_classes: int) -> Taxonomy:
  """YouTube-8M vocabulary.csv: every class at level 1 under its Vertical1 category."""
  column = {name: header.index(name) for name in _VOCABULARY_COLUMNS}
  name_column = header.index('Name') if 'Name' in header else None
  levels = np.full(num_classes, -1, np.int64)
  verticals, first_line, names = {}, {}, {}
  for row in reader:
    line = reader.line_num
    if not any(field.strip() for field in row):
      continue
    if len(row) != len(header):
      raise ValueError(f'{path}, line {line}: expected {len(header)} fields, got {len(row)}')
    try:
      index = int(row[column['Index']])
    except ValueError:
      raise ValueError(f'{path}, line {line}: Index must be an integer, got '
                       f'{row[column["Index"]]!r}') from None
    _check_index(index, num_classes, first_line, path, line)
    first_line[index] = line
    vertical = row[column['Vertical1']].strip()
    if not vertical:
      raise ValueError(f'{path}, line {line}: class {index} has no Vertical1, so no level-0 '
                       'category')
    levels[index] = 1
    verticals[index] = vertical
    if name_column is not None and row[name_column].strip():
      names[index] = row[name_column].strip()
  categories = tuple(sorted(set(verticals.values())))
  top = np.full(num_classes, -1, np.int64)
  for index, vertical in verticals.items():
    top[index] = categories.index(vertical)
  return Taxonomy(levels, top, categories, MappingProxyType(names))


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
