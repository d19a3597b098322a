"""Reading list files (CSV, TSV or JSON lines) whose rows describe one example each.

The format follows the file extension: `.csv` (comma separated, header line), `.tsv` (tab
separated, header line), `.jsonl` or `.json` (one JSON object per non-blank line). Errors
name the file, the line and the missing key or bad value.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from typing import Sequence

__all__ = ["SUPPORTED_EXTENSIONS", "at_line", "read_table"]

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")


def read_table(path: str, keys: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
  """Reads the values of `keys` from every row of a list file.

  Args:
    path: a .csv, .tsv, .jsonl or .json (JSON lines) file.
    keys: the columns (CSV/TSV header names) or JSON keys every row must have.

  Returns:
    [(line number (1-based; for CSV the row's last physical line), {key: value as str})]
    in file order; JSON numbers are converted with `str`.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: an unsupported extension, a missing column/key, or a malformed line; the
      message names the file and the line.
  """
  path = os.fspath(path)
  extension = os.path.splitext(path)[1].lower()
  if extension not in SUPPORTED_EXTENSIONS:
    raise ValueError(f"{path}: unsupported list file extension {extension!r}; expected one of "
                     f"{', '.join(SUPPORTED_EXTENSIONS)}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such list file")
  with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
    if extension in (".csv", ".tsv"):
      return _read_delimited(f, path, keys, "\t" if extension == ".tsv" else ",")
    return _read_json_lines(f, path, keys)


def _read_delimited(f, path: str, keys: Sequence[str],
                    delimiter: str) -> list[tuple[int, dict[str, str]]]:
  reader = csv.DictReader(f, delimiter=delimiter)
  columns = [c.strip() for c in reader.fieldnames or ()]
  missing = [k for k in keys if k not in columns]
  if missing:
    raise ValueError(f"{path}: line 1: missing column(s) {missing} in the header; the columns "
                     f"are {columns}")
  reader.fieldnames = columns
  rows = []
  for row in reader:
    empty = [k for k in keys if row.get(k) is None]
    if empty:
      raise ValueError(f"{path}: line {reader.line_num}: too few fields (no value for "
                       f"{empty})")
    rows.append((reader.line_num, {k: row[k] for k in keys}))
  return rows


def _read_json_lines(f, path: str, keys: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
  rows = []
  for line_number, line in enumerate(f, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ValueError(f"{path}: line {line_number}: invalid JSON ({e}); expected one object "
                       "per line") from e
    if not isinstance(record, dict):
      raise ValueError(f"{path}: line {line_number}: expected a JSON object, got "
                       f"{type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
      raise ValueError(f"{path}: line {line_number}: missing key(s) {missing}; the keys are "
                       f"{sorted(record)}")
    values = {}
    for k in keys:
      value = record[k]
      if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{path}: line {line_number}: {k!r} must be a string or a number, got "
                         f"{type(value).__name__} {value!r:.80}")
      values[k] = value if isinstance(value, str) else str(value)
    rows.append((line_number, values))
  return rows


@contextlib.contextmanager
def at_line(path: str, line: int):
  """Re-raises a FileNotFoundError / ValueError from the block prefixed with 'path: line N: ',
  so an error while loading an example names the list file row that asked for it."""
  try:
    yield
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"{path}: line {line}: {e}") from e
