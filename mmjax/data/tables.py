"""Reading list files (CSV, TSV or JSON lines) whose rows describe one example each.

The format follows the file extension: `.csv` (comma separated, header line), `.tsv` (tab
separated, header line), `.jsonl` or `.json` (one JSON object per non-blank line). Errors
name the file, the line and the missing key or bad value.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from typing import Sequence

__all__ = ["SUPPORTED_EXTENSIONS", "at_line", "find_column", "read_delimited", "read_table"]

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


def read_delimited(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """Reads a delimited text file with a header line, whatever its extension says: the fields
  are tab-separated when the header line holds a tab, else comma-separated (the Memotion
  releases ship tab-separated `.csv` files). Quoted fields may hold delimiters and newlines.

  Returns:
    (header: the stripped column names, [(line number (1-based; the row's last physical line),
    fields)] for every non-blank row).

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: no header line, text that is not UTF-8, or a row the csv module cannot parse
      (the message names the file and the line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
      text = f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from e
  first = text.split("\n", 1)[0]
  if not first.strip():
    raise ValueError(f"{path}: line 1: no header line")
  reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if "\t" in first else ",")
  try:
    header = [c.strip() for c in next(reader)]
    rows = [(reader.line_num, fields) for fields in reader if any(v.strip() for v in fields)]
  except csv.Error as e:
    raise ValueError(f"{path}: line {reader.line_num}: cannot parse the row ({e})") from e
  return header, rows


def find_column(header: Sequence[str], spec: str) -> int | None:
  """The index of the first column of `header` that `spec` names, or None.

  `spec` lists alternatives separated by '|', tried in order: a column name (matched exactly,
  then ignoring case) or '#N', the N-th column (0-based). E.g. 'ocr|text_corrected|#7'. Empty
  alternatives are ignored (an unnamed column is reached by its '#N').
  """
  lowered = [c.lower() for c in header]
  for name in spec.split("|"):
    name = name.strip()
    if not name:
      continue
    if re.fullmatch(r"#\d+", name):
      if int(name[1:]) < len(header):
        return int(name[1:])
    elif name in header:
      return header.index(name)
    elif name.lower() in lowered:
      return lowered.index(name.lower())
  return None


@contextlib.contextmanager
def at_line(path: str, line: int):
  """Re-raises a FileNotFoundError / ValueError from the block prefixed with 'path: line N: ',
  so an error while loading an example names the list file row that asked for it."""
  try:
    yield
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"{path}: line {line}: {e}") from e
