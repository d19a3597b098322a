"""Memotion batches for the CLIP meme classifiers: the grain pipelines over a label file.

config.data keys:
  train_file, eval_file   Memotion label files (`memotion_table.read_memotion`; both '' = the
                          embedded synthetic memes, written once: `synthetic_memes`); the split
                          name in image paths is the file's stem ('train', 'val', 'test')
  format                  'memotion' (label files as released) or 'binary' (a list of memes
                          labelled hateful or not: pretrain_corpora.write_binary_list, stage b)
  target                  'task_a' (sentiment: negative, neutral, positive), a Task C label
                          (humour, sarcasm, offensive, motivational) or, for the 'binary'
                          format, 'hateful': the batch's 'label'
  image_size              S, the CLIP input size
  images, image_pattern, columns, vocabularies, task_a_groups, bad_rows, check_images
                          the reader's options (`read_memotion`)
  holdout_fraction, holdout_seed, train_subset, eval_subset
                          a held-out slice of the training file for gradient blending
                          (`mmjax.data.modality_arrays.subset_rows`: 'all', 'train', 'holdout')
  test_file               an unlabelled label file (the release's test.csv) to predict
  eval_split              'eval' (evaluations read eval_file), 'train' (they read train_file,
                          e.g. its held-out slice: the splits gradient blending measures) or
                          'test' (test_file; unlabelled rows get label 0: predictions only)
  synthetic               directory, num_train, num_val, num_test, image_size, label_noise, seed
  num_threads, prefetch_batches, eval_max_examples   the stream's (`sharded_stream`)

Batches: the model's inputs (`ClipInputs`: 'pixel_values' float32 [B, S, S, 3], CLIP-normalized
RGB, any image mode converted; 'input_ids', 'attention_mask' int32 [B, L], the OCR text
truncated to the context length with the end-of-text token kept; or `OscarInputs`: BERT
tokens of text and object tags, region features, boxes and mask), 'label' int32 [B] and
'weight' float32 [B] (1 real, 0 padding). The builders take the inputs object as their
argument after config.data.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import grain
import numpy as np

from mmjax.data import cache, images, modality_arrays, sharded_stream, tables
from mmjax.data.sharded_stream import config_value
from mmjax.projects.memotion3 import memotion_table, pretrain_corpora, regions, synthetic_memes
from mmjax.projects.memotion3.memotion_table import TASK_A_CLASSES, TASK_C_LABELS

__all__ = ["FILE_KEYS", "TARGETS", "class_names", "make_eval_dataset", "make_train_dataset",
           "read_split", "resolve_files", "targets_of"]

FILE_KEYS = ("train_file", "eval_file")
FORMATS = ("memotion", "binary")  # config.data.format
# config.data.eval_split: which file an evaluation reads (eval_file, train_file, test_file)
EVAL_SPLITS = ("eval", "train", "test")
TARGETS = ("task_a",) + TASK_C_LABELS + ("hateful",)
Tokenizer = Callable[[list], dict]
log = logging.getLogger("mmjax.data")


def class_names(data_config: Any) -> tuple:
  """The class names of data.target (Task A's three, or the Task C label's vocabulary)."""
  target = config_value(data_config, "target", "task_a")
  if target not in TARGETS:
    raise ValueError(f"config.data.target={target!r}; expected one of {TARGETS}")
  if target == "task_a":
    return TASK_A_CLASSES
  if target == "hateful":
    return pretrain_corpora.BINARY_CLASSES
  vocabularies = dict(memotion_table.LABEL_VOCABULARIES)
  vocabularies.update(dict(config_value(data_config, "vocabularies", None) or {}))
  return tuple(vocabularies[target])


def targets_of(table: memotion_table.MemeTable, target: str) -> np.ndarray:
  """int32 [N] class indices of `target` (TARGETS) in `table`."""
  if target not in TARGETS:
    raise ValueError(f"config.data.target={target!r}; expected one of {TARGETS}")
  if (target == "hateful") != ("hateful" in (table.labels or {})):
    raise ValueError(f"{table.path}: config.data.target={target!r} needs "
                     + ("config.data.format='binary'" if target == "hateful" else
                        "a Memotion label file (config.data.format='memotion')"))
  if target == "hateful":
    return table.labels["hateful"]
  return table.task_a() if target == "task_a" else table.task_c(target)


def read_split(data_config: Any, key: str, labelled: bool = True) -> memotion_table.MemeTable:
  """The MemeTable of the file data.<key> in data.format; split name = the file's stem.
  `labelled=False` accepts a file without label columns (a test split)."""
  path = config_value(data_config, key, "")
  if not path:
    raise ValueError(f"config.data.{key} is empty" + (
        "" if key == "test_file" else " (set both train_file and eval_file, or neither for the "
        "synthetic memes)"))
  split = os.path.splitext(os.path.basename(path))[0]
  data_format = config_value(data_config, "format", "memotion")
  if data_format not in FORMATS:
    raise ValueError(f"config.data.format={data_format!r}; expected one of {FORMATS}")
  if data_format == "binary":
    return pretrain_corpora.read_binary_list(path, split)
  return memotion_table.read_memotion(path, split, data_config, labelled=labelled)


class ClipInputs:
  """The CLIP classifiers' inputs: 'pixel_values' float32 [B, S, S, 3] and the OCR text's
  CLIP tokens 'input_ids', 'attention_mask' int32 [B, L]."""

  def __init__(self, tokenizer: Tokenizer, image_size: int):
    self.tokenizer, self.image_size = tokenizer, image_size

  def load(self, table: memotion_table.MemeTable, i: int) -> dict:
    return {"pixel_values": images.load_image(table.images[i], self.image_size),
            "text": table.texts[i]}

  def collate(self, examples: list) -> dict:
    pixels = np.zeros((len(examples), self.image_size, self.image_size, 3), np.float32)
    for i, example in enumerate(examples):
      if example is not None:
        pixels[i] = example["pixel_values"]
    tokens = self.tokenizer(["" if e is None else e["text"] for e in examples])
    return {"pixel_values": pixels, "input_ids": np.asarray(tokens["input_ids"], np.int32),
            "attention_mask": np.asarray(tokens["attention_mask"], np.int32)}


class OscarInputs:
  """OSCAR's inputs (models.OscarClassifier): BERT tokens of the pair (OCR text, object tags),
  padded or truncated to `max_tokens` (the text is cut first), and the first `max_regions`
  regions (`regions.read_regions`), zero-padded, with 'region_mask'."""

  def __init__(self, tokenizer, max_tokens: int, max_regions: int, feature_dim: int):
    self.tokenizer, self.max_tokens = tokenizer, max_tokens
    self.max_regions, self.feature_dim = max_regions, feature_dim

  def load(self, table: memotion_table.MemeTable, i: int) -> dict:
    features, boxes, tags = regions.read_regions(table.images[i], self.feature_dim)
    n = min(len(tags), self.max_regions)
    return {"text": table.texts[i], "tags": " ".join(tags[:n]), "features": features[:n],
            "boxes": boxes[:n]}

  def collate(self, examples: list) -> dict:
    batch = len(examples)
    features = np.zeros((batch, self.max_regions, self.feature_dim), np.float32)
    boxes = np.zeros((batch, self.max_regions, regions.BOX_DIM), np.float32)
    mask = np.zeros((batch, self.max_regions), np.int32)
    for i, example in enumerate(examples):
      if example is not None:
        n = len(example["features"])
        features[i, :n], boxes[i, :n], mask[i, :n] = example["features"], example["boxes"], 1
    tokens = self.tokenizer(["" if e is None else e["text"] for e in examples],
                            ["" if e is None else e["tags"] for e in examples],
                            padding="max_length", truncation="longest_first",
                            max_length=self.max_tokens, return_tensors="np")
    return {"bert_input_ids": tokens["input_ids"].astype(np.int32),
            "bert_token_type_ids": tokens["token_type_ids"].astype(np.int32),
            "bert_attention_mask": tokens["attention_mask"].astype(np.int32),
            "region_features": features, "region_boxes": boxes, "region_mask": mask}


def _load(inputs, table: memotion_table.MemeTable, targets: np.ndarray, rows: np.ndarray,
          k: int) -> dict:
  """The k-th meme of the subset `rows`: the model's inputs and its 'label'."""
  i = int(rows[k])
  with tables.at_line(table.path, table.lines[i]):
    return {**inputs.load(table, i), "label": targets[i]}


def _collate(inputs, examples: list) -> dict:
  """Examples (None = padding) -> a batch (module docstring)."""
  labels = np.array([0 if e is None else e["label"] for e in examples], np.int32)
  return {**inputs.collate(examples), "label": labels,
          "weight": np.array([e is not None for e in examples], np.float32)}


def _records(data_config: Any, key: str, inputs):
  """(number of memes, load, collate) of data.<key> (see `sharded_stream.indexed_dataset`),
  restricted to data.train_subset / eval_subset."""
  subset_key = "train_subset" if key == "train_file" else "eval_subset"
  if key == "eval_file":
    source = config_value(data_config, "eval_split", "eval")
    if source not in EVAL_SPLITS:
      raise ValueError(f"config.data.eval_split={source!r}; expected one of {EVAL_SPLITS}")
    key = {"eval": key, "train": "train_file", "test": "test_file"}[source]
  table = read_split(data_config, key, labelled=key != "test_file")
  if table.labelled:
    targets = targets_of(table, config_value(data_config, "target", "task_a"))
  else:  # a test split: predictions only
    targets = np.zeros((len(table),), np.int32)
  rows = modality_arrays.subset_rows(data_config, len(table), subset_key)
  if key == "eval_file":
    _warn_empty_classes(table, targets, class_names(data_config))
  return (len(rows), functools.partial(_load, inputs, table, targets, rows),
          functools.partial(_collate, inputs))


def _warn_empty_classes(table, targets: np.ndarray, names: tuple) -> None:
  """Logs the classes with no example in an evaluation file (their F1 has weight 0 in the
  weighted F1, and recall is undefined)."""
  counts = np.bincount(targets, minlength=len(names))
  empty = [name for name, count in zip(names, counts) if count == 0]
  if empty:
    log.warning("%s: no example of class(es) %s of the %d in this evaluation split: the weighted "
                "F1 gives them weight 0 and their recall is undefined", table.path, empty,
                len(names))


def make_train_dataset(data_config: Any, inputs, **stream) -> grain.IterDataset:
  """The infinite, shuffled, resumable training pipeline over data.train_file (module
  docstring). `stream`: batch_size, seed, process_index, process_count, as
  `sharded_stream.indexed_dataset` takes them."""
  return sharded_stream.indexed_dataset(
      data_config, "train_file", functools.partial(_records, inputs=inputs), **stream)


def make_eval_dataset(data_config: Any, inputs, **stream) -> grain.IterDataset:
  """One evaluation pass over data.eval_file (or the file data.eval_split names) in file
  order, split between the processes. `stream`: batch_size, process_index, process_count."""
  return sharded_stream.indexed_dataset(
      data_config, "eval_file", functools.partial(_records, inputs=inputs), **stream)


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str, str]:
  """(train label file, eval label file): the configured ones, or the embedded synthetic memes'
  train.csv and val.csv (written once under data.synthetic.directory, default $MMJAX_CACHE or
  ~/.cache/mmjax, and reused); for data.format 'binary', the stage (b) lists of synthetic
  Hateful Memes and MAMI (`pretrain_corpora.write_synthetic_corpora`)."""
  configured = cache.configured_files(data_config, *FILE_KEYS)
  if configured:
    return configured
  syn = config_value(data_config, "synthetic", None) or {}
  if config_value(data_config, "format", "memotion") == "binary":
    settings = dict(version=1, num_memes=config_value(syn, "num_train", 1200),
                    image_size=config_value(syn, "image_size", 64),
                    seed=config_value(syn, "seed", 0))
    directory = cache.ensure_synthetic(syn, "memotion3_pretrain_synthetic", settings,
                                       pretrain_corpora.write_synthetic_corpora,
                                       what="synthetic Hateful Memes and MAMI", log=log)
    return tuple(os.path.join(directory, name) for name in pretrain_corpora.BINARY_FILES)
  settings = synthetic_memes.synthetic_settings(
      num_train=config_value(syn, "num_train", 1200), num_val=config_value(syn, "num_val", 300),
      num_test=config_value(syn, "num_test", 300), image_size=config_value(syn, "image_size", 64),
      label_noise=config_value(syn, "label_noise", 0.05), seed=config_value(syn, "seed", 0))
  directory = cache.ensure_synthetic(syn, "memotion3_synthetic", settings,
                                     synthetic_memes.write_synthetic_memes,
                                     what="synthetic memes", log=log)
  return (os.path.join(directory, "memotion3", "train.csv"),
          os.path.join(directory, "memotion3", "val.csv"))
