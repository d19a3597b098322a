"""The pretraining corpora of seed 000 (Table 1) as distributed, and the lists its stages read.

Facebook Hateful Memes (Kiela et al. 2020): `train.jsonl`, `dev.jsonl` (later releases
`dev_seen.jsonl`, `dev_unseen.jsonl`, `test_*.jsonl`), one JSON object per line with `id`,
`img` (the image path relative to the file's folder, e.g. `img/42953.png`), `label` (0 / 1;
absent in unlabelled test files) and `text` (the meme's OCR text).
MAMI (SemEval-2022 task 5, Fersini et al. 2022): `training/training.csv`, tab-separated with a
header `file_name, misogynous, shaming, stereotype, objectification, violence, Text
Transcription`, the images beside it (`training/<file_name>`); the test folder's `test.csv`
has `file_name, Text Transcription` and its labels come in `test_labels.txt` (tab-separated,
no header: file_name, misogynous, ...).

Each reader returns `LabelledMeme`s. The stages read lists written from them:
  stage (a), contrastive CLIP pretraining: `write_pair_list` -> JSON lines {image, caption}
    (mmjax.data.image_text reads them), from every corpus' training and development sets;
  stage (b), unimodal pretraining on hateful / not hateful (misogynous counts as hateful):
    `write_binary_list` -> JSON lines {id, image, text, label} (meme_data's 'binary' format,
    `read_binary_list`).
Synthetic stand-ins in both real layouts (`write_synthetic_hateful_memes`,
`write_synthetic_mami`) draw the same memes as `synthetic_memes`, with hateful = an insult in
the text and a frowning face in the image, so pretraining on them carries over to Memotion.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Callable, Iterable, Sequence

import numpy as np

from mmjax.data import tables
from mmjax.projects.memotion3 import synthetic_memes
from mmjax.projects.memotion3.memotion_table import MemeTable

__all__ = ["BINARY_CLASSES", "BINARY_FILES", "PAIR_FILES", "LabelledMeme", "read_corpora",
           "write_stage_lists", "write_synthetic_corpora", "read_binary_list", "read_hateful_memes",
           "read_mami", "memotion_memes", "write_binary_list", "write_pair_list",
           "write_synthetic_hateful_memes", "write_synthetic_mami"]

BINARY_CLASSES = ("not_hateful", "hateful")
MAMI_TEXT, MAMI_LABEL = "Text Transcription", "misogynous"


@dataclasses.dataclass(frozen=True)
class LabelledMeme:
  """One meme of a corpus: absolute image path, OCR text, 0/1 label (None: unlabelled)."""
  image: str
  text: str
  label: int | None
  where: str  # 'file: line N', for messages


def _binary(value: str, where: str) -> int:
  if str(value).strip() not in ("0", "1"):
    raise ValueError(f"{where}: label {value!r} is not 0 or 1")
  return int(str(value).strip())


def read_hateful_memes(path: str, labelled: bool = True) -> list[LabelledMeme]:
  """A Hateful Memes `.jsonl` file (module docstring); `labelled=False` for test files."""
  keys = ("id", "img", "text") + (("label",) if labelled else ())
  base = os.path.dirname(os.path.abspath(path))
  return [LabelledMeme(os.path.join(base, row["img"]), " ".join(row["text"].split()),
                       _binary(row["label"], f"{path}: line {line}") if labelled else None,
                       f"{path}: line {line}")
          for line, row in tables.read_table(path, keys)]


def read_mami(path: str, labels_file: str = "") -> list[LabelledMeme]:
  """A MAMI `.csv` (tab-separated, module docstring); labels from its `misogynous` column, or
  from `labels_file` (test_labels.txt) when given; a file with neither is unlabelled."""
  header, rows = tables.read_delimited(path)
  where = {name: tables.find_column(header, name) for name in ("file_name", MAMI_TEXT,
                                                               MAMI_LABEL)}
  missing = [name for name in ("file_name", MAMI_TEXT) if where[name] is None]
  if missing:
    raise ValueError(f"{path}: line 1: no column {missing}; the header's columns are {header}")
  extra = {}
  if labels_file:
    for line, row in enumerate(_read_lines(labels_file), start=1):
      fields = row.split("\t")
      extra[fields[0].strip()] = _binary(fields[1] if len(fields) > 1 else "",
                                         f"{labels_file}: line {line}")
  base = os.path.dirname(os.path.abspath(path))
  memes = []
  for line, fields in rows:
    name = fields[where["file_name"]].strip()
    label = None
    if labels_file:
      if name not in extra:
        raise ValueError(f"{path}: line {line}: {name!r} has no label in {labels_file}")
      label = extra[name]
    elif where[MAMI_LABEL] is not None:
      label = _binary(fields[where[MAMI_LABEL]], f"{path}: line {line}")
    memes.append(LabelledMeme(os.path.join(base, name), " ".join(fields[where[MAMI_TEXT]].split()),
                              label, f"{path}: line {line}"))
  return memes


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8-sig") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def memotion_memes(table: MemeTable) -> list[LabelledMeme]:
  """A Memotion table's memes (unlabelled here: Memotion joins stage (a) only)."""
  return [LabelledMeme(image, text, None, f"{table.path}: line {line}")
          for image, text, line in zip(table.images, table.texts, table.lines)]


def _relative(image: str, path: str) -> str:
  """`image` relative to the list file's folder (the lists move with their corpora)."""
  return os.path.relpath(image, os.path.dirname(os.path.abspath(path)))


def write_pair_list(memes: Iterable[LabelledMeme], path: str) -> int:
  """JSON lines {image, caption} (stage a; image paths relative to the list's folder);
  returns the number of pairs."""
  return _write_jsonl(path, ({"image": _relative(m.image, path), "caption": m.text}
                             for m in memes if m.text))


def write_binary_list(memes: Iterable[LabelledMeme], path: str) -> int:
  """JSON lines {id, image, text, label} of the labelled memes (stage b; image paths relative
  to the list's folder); returns the count."""
  labelled = (m for m in memes if m.label is not None)
  return _write_jsonl(path, ({"id": str(i), "image": _relative(m.image, path), "text": m.text,
                              "label": m.label} for i, m in enumerate(labelled)))


def _write_jsonl(path: str, rows: Iterable[dict]) -> int:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp, count = f"{path}.tmp.{os.getpid()}", 0
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
      count += 1
  os.replace(tmp, path)
  return count


def read_binary_list(path: str, split: str = "") -> MemeTable:
  """A `write_binary_list` file as a MemeTable with the label 'hateful' (BINARY_CLASSES);
  relative image paths are resolved against the list's folder."""
  base = os.path.dirname(os.path.abspath(path))
  rows = tables.read_table(path, ("id", "image", "text", "label"))
  if not rows:
    raise ValueError(f"{path}: no memes")
  labels = [_binary(row["label"], f"{path}: line {line}") for line, row in rows]
  return MemeTable(path=path, split=split, ids=[row["id"] for _, row in rows],
                   images=[os.path.join(base, row["image"]) for _, row in rows],
                   texts=[row["text"] for _, row in rows], lines=[line for line, _ in rows],
                   labels={"hateful": np.asarray(labels, np.int32)},
                   vocabularies={"hateful": BINARY_CLASSES},
                   task_a_of_sentiment=np.zeros((0,), np.int32), skipped=[])


def is_hateful(factors: dict) -> int:
  """The synthetic corpora's label: an insult in the text and a frowning face (both needed)."""
  return int(factors["insults"] > 0 and factors["image_mood"] == 0)


def _draw(seed: int, count: int, image_size: int) -> Iterable[tuple[int, str, object]]:
  rng = np.random.default_rng(seed)
  for _ in range(count):
    factors, text, image = synthetic_memes.draw_meme(rng, image_size)
    yield is_hateful(factors), text, image


def write_synthetic_hateful_memes(directory: str, *, sizes: Sequence[int] = (200, 50, 50),
                                  image_size: int = 64, seed: int = 0,
                                  log: Callable[[str], None] = print) -> str:
  """Synthetic Hateful Memes in the release's layout: train.jsonl, dev.jsonl (labelled),
  test.jsonl (unlabelled) and img/<id>.png, `sizes` memes each. Returns `directory`."""
  os.makedirs(os.path.join(directory, "img"), exist_ok=True)
  next_id = 10000
  for k, (name, count) in enumerate(zip(("train", "dev", "test"), sizes)):
    lines = []
    for label, text, image in _draw(seed * 10 + k, count, image_size):
      image.save(os.path.join(directory, "img", f"{next_id}.png"))
      row = {"id": next_id, "img": f"img/{next_id}.png", "label": label, "text": text}
      if name == "test":
        del row["label"]
      lines.append(json.dumps(row))
      next_id += 1
    with open(os.path.join(directory, f"{name}.jsonl"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  log(f"synthetic Hateful Memes: {sum(sizes)} memes in {directory}")
  return directory


def write_synthetic_mami(directory: str, *, sizes: Sequence[int] = (200, 50),
                         image_size: int = 64, seed: int = 0,
                         log: Callable[[str], None] = print) -> str:
  """Synthetic MAMI in the release's layout: training/training.csv (tab-separated, labelled)
  and test/test.csv with test/test_labels.txt, JPEG images beside each csv. Returns
  `directory`."""
  for k, (name, count) in enumerate(zip(("training", "test"), sizes)):
    folder = os.path.join(directory, name)
    os.makedirs(folder, exist_ok=True)
    rows, labels = [], []
    for i, (label, text, image) in enumerate(_draw(seed * 10 + 5 + k, count, image_size)):
      file_name = f"{k * 100000 + i + 1}.jpg"
      image.save(os.path.join(folder, file_name), quality=92)
      if name == "training":
        rows.append([file_name, label, 0, 0, 0, 0, text])
      else:
        rows.append([file_name, text])
        labels.append(f"{file_name}\t{label}\t0\t0\t0\t0")
    with open(os.path.join(folder, f"{name}.csv"), "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f, delimiter="\t")
      writer.writerow(["file_name", MAMI_LABEL, "shaming", "stereotype", "objectification",
                       "violence", MAMI_TEXT] if name == "training" else ["file_name",
                                                                          MAMI_TEXT])
      writer.writerows(rows)
    if labels:
      with open(os.path.join(folder, "test_labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(labels) + "\n")
  log(f"synthetic MAMI: {sum(sizes)} memes in {directory}")
  return directory


def read_corpora(hateful_memes: str = "", mami: str = "") -> dict:
  """{'train': [...], 'test': [...]} LabelledMemes of the corpora given: the Hateful Memes
  folder (train.jsonl for training; its labelled dev*.jsonl files for testing, since the
  release's test files have no labels) and the MAMI folder (training/training.csv for
  training; test/test.csv with test/test_labels.txt, if there, for testing)."""
  split = {"train": [], "test": []}
  if hateful_memes:
    for name in ("train.jsonl", "dev.jsonl", "dev_seen.jsonl", "dev_unseen.jsonl"):
      path = os.path.join(hateful_memes, name)
      if os.path.isfile(path):
        split["train" if name == "train.jsonl" else "test"].extend(read_hateful_memes(path))
    if not split["train"]:
      raise FileNotFoundError(f"{hateful_memes}: no train.jsonl (Facebook Hateful Memes)")
  if mami:
    split["train"].extend(read_mami(os.path.join(mami, "training", "training.csv")))
    test = os.path.join(mami, "test", "test.csv")
    if os.path.isfile(test):
      labels = os.path.join(mami, "test", "test_labels.txt")
      split["test"].extend(read_mami(test, labels if os.path.isfile(labels) else ""))
  return split


PAIR_FILES = ("pretrainclip_train.jsonl", "pretrainclip_test.jsonl")
BINARY_FILES = ("pretrainuni_train.jsonl", "pretrainuni_test.jsonl")


def write_stage_lists(directory: str, corpora: dict, memotion: Sequence[MemeTable] = (),
                      log: Callable[[str], None] = print) -> dict:
  """Writes the lists of stages (a) and (b) into `directory` (Table 1): pretrainCLIP = every
  corpus' train memes plus the Memotion tables (train) and the corpora's test memes (test);
  pretrainuni = the labelled ones. Returns {file name: count}."""
  extra = [m for table in memotion for m in memotion_memes(table)]
  counts = {
      PAIR_FILES[0]: write_pair_list(corpora["train"] + extra, os.path.join(directory,
                                                                            PAIR_FILES[0])),
      PAIR_FILES[1]: write_pair_list(corpora["test"], os.path.join(directory, PAIR_FILES[1])),
      BINARY_FILES[0]: write_binary_list(corpora["train"], os.path.join(directory,
                                                                        BINARY_FILES[0])),
      BINARY_FILES[1]: write_binary_list(corpora["test"], os.path.join(directory,
                                                                       BINARY_FILES[1])),
  }
  log("stage lists: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
  return counts


def write_synthetic_corpora(directory: str, *, num_memes: int, image_size: int, seed: int,
                            log: Callable[[str], None] = print) -> str:
  """Synthetic Hateful Memes and MAMI (`hateful_memes/`, `mami/`, each with about `num_memes`
  memes) and the stage lists built from them (no Memotion memes). Returns `directory`."""
  train, held = max(1, num_memes * 2 // 3), max(1, num_memes // 6)
  hm = write_synthetic_hateful_memes(os.path.join(directory, "hateful_memes"),
                                     sizes=(train, held, held), image_size=image_size,
                                     seed=seed, log=log)
  mami = write_synthetic_mami(os.path.join(directory, "mami"), sizes=(train, held),
                              image_size=image_size, seed=seed, log=log)
  write_stage_lists(directory, read_corpora(hm, mami), log=log)
  return directory
