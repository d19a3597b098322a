"""The Memotion label files as the challenges distribute them, read into a `MemeTable`.

Memotion 3 ships `memotion3/{train,val}.csv`: tab-separated despite the extension, a header
line, one meme per row with the columns (in this order) meme id, image URL, humour, sarcasm,
offensive, motivational, overall sentiment, OCR text (quoted, may hold newlines); the image is
`<images>/<split>/<id>.jpg`. Memotion 1's `labels.csv` is comma-separated with other column
names (`image_name, text_ocr, text_corrected, humour, sarcasm, offensive, motivational,
overall_sentiment`) and the same label strings. `read_memotion` reads either: the delimiter
follows the header line (`mmjax.data.tables.read_delimited`), and each column is found by a
spec of alternatives (`mmjax.data.tables.find_column`: names, matched exactly then ignoring
case, or '#N' for the N-th column), configurable as `config.data.columns`.

Labels (`LABEL_VOCABULARIES`, configurable as `config.data.vocabularies`; matched ignoring case
and surrounding blanks):
  humour        not_funny, funny, very_funny, hilarious
  sarcasm       not_sarcastic, general, twisted_meaning, very_twisted
  offensive     not_offensive, slight, very_offensive, hateful_offensive
  motivational  not_motivational, motivational
  sentiment     very_negative, negative, neutral, positive, very_positive
Task A (3 classes) groups the sentiment (`TASK_A_GROUPS`: negative = very_negative, negative;
neutral; positive = positive, very_positive); Task C is each of the four intensity labels;
Task B is Task C above its lowest class ('present'), as seed 000 derives it (section 4).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from mmjax.data import tables
from mmjax.data.sharded_stream import config_value

__all__ = ["BAD_ROW_POLICIES", "DEFAULT_COLUMNS", "IMAGE_PATTERN", "LABEL_VOCABULARIES",
           "MemeTable", "TASK_A_CLASSES", "TASK_A_GROUPS", "TASK_C_LABELS", "read_memotion"]

log = logging.getLogger("mmjax.data")

TASK_C_LABELS = ("humour", "sarcasm", "offensive", "motivational")
LABEL_VOCABULARIES = {
    "humour": ("not_funny", "funny", "very_funny", "hilarious"),
    "sarcasm": ("not_sarcastic", "general", "twisted_meaning", "very_twisted"),
    "offensive": ("not_offensive", "slight", "very_offensive", "hateful_offensive"),
    "motivational": ("not_motivational", "motivational"),
    "sentiment": ("very_negative", "negative", "neutral", "positive", "very_positive"),
}
LABELS = TASK_C_LABELS + ("sentiment",)
TASK_A_CLASSES = ("negative", "neutral", "positive")
# For each Task A class, the sentiment strings it groups (config.data.task_a_groups).
TASK_A_GROUPS = ("very_negative,negative", "neutral", "positive,very_positive")
# Column specs (config.data.columns): alternatives separated by '|', '#N' = the N-th column.
# The names cover Memotion 3 (first column unnamed) and Memotion 1/2.
DEFAULT_COLUMNS = {
    "id": "id|#0",
    "humour": "humour|humor",
    "sarcasm": "sarcasm|sarcastic",
    "offensive": "offensive|offense",
    "motivational": "motivational|motivation",
    "sentiment": "overall_sentiment|overall|sentiment",
    "text": "ocr|text_corrected|ocr_text|text_ocr|text",
    "translation": "",  # optional: a column with a translation of the OCR text
}
IMAGE_PATTERN = "{split}/{id}.jpg"  # under config.data.images
BAD_ROW_POLICIES = ("raise", "skip")


@dataclasses.dataclass
class MemeTable:
  """The memes of one split file.

  Attributes:
    path: the label file.
    split: the split name used in image paths ('train', 'val', 'test').
    ids: [N] meme ids (str).
    images: [N] absolute image paths.
    texts: [N] OCR texts (the translation instead, where configured and non-empty).
    lines: [N] the rows' line numbers in `path`.
    labels: {label: int32 [N] index into its vocabulary} for LABELS, or None (no label columns:
      a test split).
    vocabularies: {label: class names} used.
    task_a_of_sentiment: int32 [len(sentiment vocabulary)], the Task A class of each sentiment.
    skipped: [(line, reason)] of rows left out under the 'skip' policy.
  """
  path: str
  split: str
  ids: list
  images: list
  texts: list
  lines: list
  labels: dict | None
  vocabularies: dict
  task_a_of_sentiment: np.ndarray
  skipped: list

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def labelled(self) -> bool:
    return self.labels is not None

  def _need_labels(self, what: str) -> None:
    if self.labels is None:
      raise ValueError(f"{self.path}: the {self.split} split has no label columns, so it has "
                       f"no {what} targets (it can only be predicted)")

  def task_a(self) -> np.ndarray:
    """int32 [N] Task A classes (TASK_A_CLASSES) from the sentiment."""
    self._need_labels("Task A")
    return self.task_a_of_sentiment[self.labels["sentiment"]]

  def task_c(self, label: str) -> np.ndarray:
    """int32 [N] intensity classes of one TASK_C_LABELS label."""
    self._need_labels("Task C")
    if label not in TASK_C_LABELS:
      raise ValueError(f"unknown Task C label {label!r}; expected one of {TASK_C_LABELS}")
    return self.labels[label]

  def task_b(self, label: str) -> np.ndarray:
    """int32 [N] 0/1: the emotion is present (its Task C intensity is above the lowest class)."""
    return (self.task_c(label) > 0).astype(np.int32)


def _option(data_config: Any, key: str, defaults: Mapping[str, Any]) -> dict:
  """defaults, updated with the entries of config.data.<key> (a dict or ConfigDict)."""
  given = config_value(data_config, key, None) or {}
  merged = dict(defaults)
  for name, value in dict(given).items():
    if name not in defaults:
      raise ValueError(f"config.data.{key}.{name}: unknown; expected one of {sorted(defaults)}")
    merged[name] = value
  return merged


def _task_a_map(vocabulary: Sequence[str], groups: Sequence[str]) -> np.ndarray:
  """int32 [len(vocabulary)]: the Task A class of each sentiment string (config errors named)."""
  if len(groups) != len(TASK_A_CLASSES):
    raise ValueError(f"config.data.task_a_groups has {len(groups)} groups; expected "
                     f"{len(TASK_A_CLASSES)} ({', '.join(TASK_A_CLASSES)})")
  where = {}
  for k, group in enumerate(groups):
    for name in group.split(","):
      name = name.strip().lower()
      if name not in vocabulary:
        raise ValueError(f"config.data.task_a_groups: {name!r} is not a sentiment class "
                         f"{list(vocabulary)}")
      if name in where:
        raise ValueError(f"config.data.task_a_groups puts {name!r} in two groups "
                         f"({TASK_A_CLASSES[where[name]]} and {TASK_A_CLASSES[k]})")
      where[name] = k
  missing = [v for v in vocabulary if v not in where]
  if missing:
    raise ValueError(f"config.data.task_a_groups leaves the sentiment class(es) {missing} out")
  return np.array([where[v] for v in vocabulary], np.int32)


def _check_image(path: str) -> str:
  """'' if `path` is an image file Pillow can identify, else the reason."""
  if not os.path.isfile(path):
    return f"no image file {path}"
  try:
    with Image.open(path):  # parses the header: a truncated or foreign file fails here
      pass
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    return f"cannot read the image {path}: {e}"
  return ""


def read_memotion(path: str, split: str, data_config: Any, *, labelled: bool = True
                  ) -> MemeTable:
  """Reads one Memotion label file (module docstring).

  Args:
    path: the label file (`.csv`/`.tsv`, tab- or comma-separated, with a header line).
    split: the split's name in image paths (IMAGE_PATTERN's '{split}').
    data_config: `config.data`, with (all optional) `images` (the image root; '' = `image/`
      beside the label file's directory, the release's layout), `image_pattern` (default
      IMAGE_PATTERN, with '{split}' and '{id}'), `columns` (overrides of DEFAULT_COLUMNS),
      `vocabularies` (of LABEL_VOCABULARIES, each a tuple of class names), `task_a_groups`
      (TASK_A_GROUPS), `bad_rows` ('raise' or 'skip': leave out, count and log a row with an
      unknown label, an empty id or a missing or unreadable image), `check_images` (default
      True: open every image's header now).
    labelled: whether the split must have labels (train, val). If False, label columns are
      read when all five are there, and otherwise the table has no labels (a test split).

  Returns:
    The MemeTable.

  Raises:
    FileNotFoundError: no label file.
    ValueError: a missing column (naming the file, the spec and the header), a row with too
      few fields, an unknown label (naming the file, line, column and the allowed values), an
      empty id, a missing or unreadable image (naming the path), a bad config key, or no memes.
  """
  path = os.fspath(path)
  columns = _option(data_config, "columns", DEFAULT_COLUMNS)
  vocabularies = {k: tuple(v.strip().lower() for v in vocab) for k, vocab in
                  _option(data_config, "vocabularies", LABEL_VOCABULARIES).items()}
  task_a_of_sentiment = _task_a_map(vocabularies["sentiment"], tuple(
      config_value(data_config, "task_a_groups", TASK_A_GROUPS)))
  policy = config_value(data_config, "bad_rows", "raise")
  if policy not in BAD_ROW_POLICIES:
    raise ValueError(f"config.data.bad_rows={policy!r}; expected one of {BAD_ROW_POLICIES}")
  image_root = config_value(data_config, "images", "") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(path))), "image")
  pattern = config_value(data_config, "image_pattern", IMAGE_PATTERN)
  check_images = config_value(data_config, "check_images", True)

  header, rows = tables.read_delimited(path)
  where = {role: (tables.find_column(header, spec) if spec else None)
           for role, spec in columns.items()}
  has_labels = all(where[k] is not None for k in LABELS)
  required = ["id", "text"] + (list(LABELS) if labelled else [])
  missing = [role for role in required if where[role] is None]
  if columns["translation"] and where["translation"] is None:
    missing.append("translation")
  if missing:
    raise ValueError(f"{path}: line 1: no column for " + "; ".join(
        f"{role} (config.data.columns.{role}={columns[role]!r})" for role in missing) +
        f"; the header's columns are {header}")
  label_roles = LABELS if has_labels else ()

  table = MemeTable(path=path, split=split, ids=[], images=[], texts=[], lines=[],
                    labels={k: [] for k in label_roles} if label_roles else None,
                    vocabularies=vocabularies, task_a_of_sentiment=task_a_of_sentiment,
                    skipped=[])
  needed = max(i for i in where.values() if i is not None) + 1
  for line, fields in rows:
    if len(fields) < needed:
      raise ValueError(f"{path}: line {line}: {len(fields)} fields, the configured columns "
                       f"need {needed} (header: {header})")
    problem, values = "", {}
    for role in label_roles:
      raw = fields[where[role]]
      if raw.strip().lower() not in vocabularies[role]:
        problem = (f"column {header[where[role]]!r} ({role}): unknown label {raw!r}; "
                   f"allowed: {', '.join(vocabularies[role])}")
        break
      values[role] = vocabularies[role].index(raw.strip().lower())
    meme_id = fields[where["id"]].strip()
    if not problem and not meme_id:
      problem = f"column {header[where['id']]!r} (id): empty meme id"
    image = os.path.join(image_root, pattern.format(split=split, id=meme_id))
    if not problem and check_images:
      problem = _check_image(image)
    if problem:
      if policy == "raise":
        raise ValueError(f"{path}: line {line}: {problem}")
      table.skipped.append((line, problem))
      continue
    text = fields[where["text"]]
    if where["translation"] is not None and fields[where["translation"]].strip():
      text = fields[where["translation"]]
    table.ids.append(meme_id)
    table.images.append(image)
    table.texts.append(" ".join(text.split()))  # newlines and runs of blanks -> one space
    table.lines.append(line)
    for role, value in values.items():
      table.labels[role].append(value)
  if table.skipped:
    log.warning("%s: skipped %d of %d rows (config.data.bad_rows='skip'); first: line %d: %s",
                path, len(table.skipped), len(rows), *table.skipped[0])
  if not table.ids:
    raise ValueError(f"{path}: no memes" + (f" ({len(table.skipped)} rows skipped)"
                                             if table.skipped else ""))
  if table.labels is not None:
    table.labels = {k: np.asarray(v, np.int32) for k, v in table.labels.items()}
  return table
