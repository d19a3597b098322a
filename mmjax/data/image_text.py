"""Image-text pairs for CLIP contrastive training: list files, grain pipelines, synthetic data.

A list file (`.csv`/`.tsv` with a header line, or `.jsonl`/`.json` with one object per line;
see `mmjax.data.tables`) has one pair per row: the image path under data.image_key (default
'image'; relative paths are resolved against the list file's directory) and the caption under
data.caption_key (default 'caption').

Batches are dicts of numpy arrays (S = data.image_size, L = the tokenizer's context length):
  'pixel_values': float32 [B, S, S, 3] (CLIP-normalized RGB, see `mmjax.data.images`),
  'input_ids': int32 [B, L], 'attention_mask': int32 [B, L] (from the tokenizer),
  'weight': float32 [B] (1 real, 0 padding; padding rows have zero pixels and the tokens of '').

The tokenizer is a callable `tokenizer(list of str) -> {'input_ids': int [B, L],
'attention_mask': int [B, L]}` (e.g. `mmjax.models.clip.tokenizer.load_tokenizer()`).

With an empty data.train_file, a synthetic dataset of simple scenes is written once (see
`write_synthetic_pairs`) under data.synthetic.directory (default $MMJAX_CACHE or
~/.cache/mmjax) and reused.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import re
from typing import Any, Callable

import grain
import numpy as np
from PIL import Image, ImageDraw

from mmjax.data import cache, images, sharded_stream, tables
from mmjax.data.sharded_stream import config_value

__all__ = ["COLOURS", "SHAPES", "BACKGROUNDS", "FILE_KEYS", "make_eval_dataset",
           "make_train_dataset", "read_pairs", "resolve_files", "synthetic_settings",
           "write_synthetic_pairs"]

logger = logging.getLogger("mmjax.data")

Tokenizer = Callable[[list], dict]
FILE_KEYS = ("train_file", "eval_file")  # the config.data keys that `resolve_files` resolves


# -------------------------------------------------------------------------------------------
# List files.


class _PairList:
  """The pairs of a list file: absolute image paths, captions and their line numbers."""

  def __init__(self, path: str, image_key: str, caption_key: str):
    self.path = path
    self.images, self.captions, self.lines = [], [], []
    base = os.path.dirname(os.path.abspath(path))
    for line, row in tables.read_table(path, (image_key, caption_key)):
      image, caption = row[image_key].strip(), row[caption_key].strip()
      if not image:
        raise ValueError(f"{path}: line {line}: empty {image_key!r}")
      if not caption:
        raise ValueError(f"{path}: line {line}: empty {caption_key!r}")
      self.images.append(os.path.join(base, os.path.expanduser(image)))
      self.captions.append(caption)
      self.lines.append(line)
    if not self.images:
      raise ValueError(f"{path}: no image-text pairs")

  def __len__(self) -> int:
    return len(self.images)


def read_pairs(path: str, image_key: str = "image",
               caption_key: str = "caption") -> list[tuple[str, str]]:
  """Reads the (image path, caption) pairs of a list file.

  Args:
    path: a .csv, .tsv, .jsonl or .json (JSON lines) file.
    image_key: the column/key of the image path (relative paths: to the list file's directory).
    caption_key: the column/key of the caption.

  Returns:
    [(absolute image path, caption)] in file order (captions stripped of outer whitespace).

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: a missing column/key, an empty image path or caption, a malformed line (the
      message names the file and the line), or no pairs at all.
  """
  pairs = _PairList(os.fspath(path), image_key, caption_key)
  return list(zip(pairs.images, pairs.captions))


# -------------------------------------------------------------------------------------------
# Datasets.


def _load_pair(pairs: _PairList, image_size: int, i: int) -> dict:
  """Pair i -> {'pixel_values': float32 [S, S, 3], 'caption': str}."""
  with tables.at_line(pairs.path, pairs.lines[i]):
    pixels = images.load_image(pairs.images[i], image_size)
  return {"pixel_values": pixels, "caption": pairs.captions[i]}


class _Collate:
  """A list of `_load_pair` examples (None = padding) -> a batch (module docstring)."""

  def __init__(self, tokenizer: Tokenizer, image_size: int):
    self._tokenizer = tokenizer
    self._image_size = image_size

  def __call__(self, examples: list) -> dict:
    size = self._image_size
    pixels = np.zeros((len(examples), size, size, 3), np.float32)
    captions = []
    for i, example in enumerate(examples):
      if example is not None:
        pixels[i] = example["pixel_values"]
      captions.append("" if example is None else example["caption"])
    tokens = self._tokenizer(captions)
    batch = {"pixel_values": pixels}
    for key in ("input_ids", "attention_mask"):
      value = np.asarray(tokens[key], np.int32)
      if value.ndim != 2 or value.shape[0] != len(examples):
        raise ValueError(f"the tokenizer returned {key} of shape {value.shape} for "
                         f"{len(examples)} captions; expected [{len(examples)}, L]")
      batch[key] = value
    batch["weight"] = np.array([e is not None for e in examples], np.float32)
    return batch


def _records(data_config: Any, key: str,
             tokenizer: Tokenizer) -> tuple[int, Callable[[int], dict], _Collate]:
  """(number of pairs, load, collate) of the list file data.<key> (see
  `sharded_stream.indexed_dataset`)."""
  path = cache.configured_or_default(data_config, key, "train_file",
                                     lambda c: resolve_files(c, log=logger.info))
  pairs = _PairList(path, config_value(data_config, "image_key", "image"),
                    config_value(data_config, "caption_key", "caption"))
  image_size = sharded_stream.positive_int(data_config, "image_size")
  return (len(pairs), functools.partial(_load_pair, pairs, image_size),
          _Collate(tokenizer, image_size))


def make_train_dataset(data_config: Any, tokenizer: Tokenizer, *, batch_size: int, seed: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """Builds the infinite, shuffled training pipeline of this process over the pairs of
  data.train_file (`sharded_stream.indexed_dataset` with a seed).

  Args:
    data_config: `config.data` (keys train_file, image_key, caption_key, image_size,
      num_threads, prefetch_batches; an empty train_file uses the synthetic dataset, see
      `resolve_files`).
    tokenizer: list of captions -> {'input_ids', 'attention_mask'} int [B, L].
    batch_size, seed, process_index, process_count: see `sharded_stream.indexed_dataset`.

  Returns:
    A resumable `grain.IterDataset` of batches (module docstring; all weights 1). Attribute
    `.num_records` (pairs in the list file).

  Raises:
    FileNotFoundError, ValueError: see `read_pairs`; while iterating, an unreadable or missing
      image (the message names the list file, the line and the image path).
  """
  return sharded_stream.indexed_dataset(
      data_config, "train_file", functools.partial(_records, tokenizer=tokenizer),
      batch_size=batch_size, seed=seed, process_index=process_index, process_count=process_count)


def make_eval_dataset(data_config: Any, tokenizer: Tokenizer, *, batch_size: int,
                      process_index: int | None = None,
                      process_count: int | None = None) -> grain.IterDataset:
  """Builds one evaluation pass over data.eval_file, in file order, split between the processes
  (`sharded_stream.indexed_dataset` without a seed).

  Args:
    data_config: `config.data` (as for `make_train_dataset`, plus eval_file and
      eval_max_examples).
    tokenizer: list of captions -> {'input_ids', 'attention_mask'} int [B, L].
    batch_size, process_index, process_count: see `sharded_stream.indexed_dataset`.

  Returns:
    A finite `grain.IterDataset` of batches (module docstring). Attributes: `.num_batches`,
    `.num_examples` (over all processes).
  """
  return sharded_stream.indexed_dataset(
      data_config, "eval_file", functools.partial(_records, tokenizer=tokenizer),
      batch_size=batch_size, process_index=process_index, process_count=process_count)


# -------------------------------------------------------------------------------------------
# Synthetic data: simple scenes whose caption follows from the content.

GENERATOR_VERSION = 1
TRAIN_FILE = "train.csv"
EVAL_FILE = "eval.jsonl"
COLOURS = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 70, 215),
           "yellow": (235, 205, 35), "purple": (135, 45, 170), "orange": (240, 135, 25)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (242, 242, 242), "black": (18, 18, 18), "gray": (150, 150, 150)}
_TEMPLATES = ("a photo of a {colour} {shape}", "a {colour} {shape} on a {background} background",
              "a {background} background with a {colour} {shape}",
              "a {colour} {shape}, on {background}")
_COLOUR_JITTER, _BACKGROUND_JITTER, _NOISE_STD = 12, 8, 6.0


def synthetic_settings(*, num_train: int, num_eval: int, image_size: int, seed: int) -> dict:
  """The settings that determine a synthetic dataset (JSON-able; hashed into its path)."""
  return dict(version=GENERATOR_VERSION, num_train=int(num_train), num_eval=int(num_eval),
              image_size=int(image_size), seed=int(seed))


def _scene(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, str]:
  """One uint8 [S, 5S/4, 3] scene and its caption."""
  colour = list(COLOURS)[rng.integers(len(COLOURS))]
  shape = SHAPES[rng.integers(len(SHAPES))]
  background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  height, width = image_size, image_size * 5 // 4  # wider: the center crop cuts the sides
  fill = np.clip(np.array(BACKGROUNDS[background]) + rng.integers(
      -_BACKGROUND_JITTER, _BACKGROUND_JITTER + 1, 3), 0, 255)
  image = Image.new("RGB", (width, height), tuple(int(v) for v in fill))
  ink = np.clip(np.array(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3),
                0, 255)
  radius = image_size * rng.uniform(0.2, 0.33)
  cx = width / 2 + image_size * rng.uniform(-0.12, 0.12)
  cy = height / 2 + image_size * rng.uniform(-0.12, 0.12)
  draw = ImageDraw.Draw(image)
  ink = tuple(int(v) for v in ink)
  if shape == "circle":
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)
  elif shape == "square":
    half = radius * 0.85
    draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=ink)
  else:
    draw.polygon([(cx, cy - radius), (cx - radius * 0.95, cy + radius * 0.7),
                  (cx + radius * 0.95, cy + radius * 0.7)], fill=ink)
  pixels = np.asarray(image, np.float32) + rng.normal(0, _NOISE_STD, (height, width, 3))
  caption = _TEMPLATES[rng.integers(len(_TEMPLATES))].format(colour=colour, shape=shape,
                                                            background=background)
  caption = re.sub(r"\ba (?=[aeiou])", "an ", caption)  # 'an orange square'
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8), caption


def write_synthetic_pairs(directory: str | os.PathLike, *, num_train: int, num_eval: int,
                          image_size: int, seed: int,
                          log: Callable[[str], None] = print) -> tuple[str, str]:
  """Writes (or reuses) a synthetic image-text dataset in `directory`.

  Each image is a PNG (S x 5S/4 pixels) of one shape (circle, square, triangle) in one of six
  colours on a white, black or gray background, with jitter in colour, size and position plus
  pixel noise; its caption names the colour and shape (and, for most templates, the
  background), e.g. 'a photo of a red circle', 'a blue square on a white background'. The train
  list is CSV (`train.csv`), the eval list JSON lines (`eval.jsonl`), both with keys 'image'
  (relative paths under images/) and 'caption'. A marker file written last makes the directory
  complete; a complete directory with the same settings is reused.

  Args:
    directory: output directory (created if needed).
    num_train: training pairs.
    num_eval: evaluation pairs.
    image_size: S, the image height.
    seed: random seed; the output is a deterministic function of all arguments.
    log: progress printer.

  Returns:
    (train list file, eval list file).
  """
  directory = os.fspath(directory)
  settings = synthetic_settings(num_train=num_train, num_eval=num_eval, image_size=image_size,
                                seed=seed)
  train_file, eval_file = os.path.join(directory, TRAIN_FILE), os.path.join(directory, EVAL_FILE)
  if cache.is_complete(directory, settings):
    log(f"synthetic image-text: reusing {directory}")
    return train_file, eval_file
  if num_train < 1 or num_eval < 1 or image_size < 8:
    raise ValueError(f"need num_train >= 1, num_eval >= 1 and image_size >= 8; got {num_train}, "
                     f"{num_eval}, {image_size}")
  os.makedirs(os.path.join(directory, "images"), exist_ok=True)
  train_seq, eval_seq = np.random.SeedSequence(int(seed)).spawn(2)
  rows = {}
  for split, num, seq in (("train", num_train, train_seq), ("eval", num_eval, eval_seq)):
    rng = np.random.default_rng(seq)
    rows[split] = []
    for i in range(num):
      pixels, caption = _scene(rng, image_size)
      name = f"images/{split}_{i:06d}.png"
      Image.fromarray(pixels).save(os.path.join(directory, name))
      rows[split].append({"image": name, "caption": caption})
  with open(train_file, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=("image", "caption"))
    writer.writeheader()
    writer.writerows(rows["train"])
  with open(eval_file, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows["eval"])
  cache.write_marker(directory, settings)
  log(f"synthetic image-text: wrote {num_train} train + {num_eval} eval pairs to {directory}")
  return train_file, eval_file


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str, str]:
  """(train list file, eval list file) of `data_config` (`config.data`), writing the synthetic
  dataset if needed (progress lines go to `log`).

  With a non-empty data.train_file: data.train_file and data.eval_file as they are. With both
  empty, the files of the synthetic dataset (`write_synthetic_pairs`), written once, atomically,
  and then reused: sizes data.synthetic.{num_train, num_eval, seed} (defaults 2000, 200, 0),
  image height data.synthetic.image_size (default 64; resized to data.image_size when read),
  under data.synthetic.directory (empty: $MMJAX_CACHE or ~/.cache/mmjax).
  """
  configured = cache.configured_files(data_config, *FILE_KEYS)
  if configured:
    return configured
  syn = config_value(data_config, "synthetic", None) or {}
  settings = synthetic_settings(
      num_train=config_value(syn, "num_train", 2000), num_eval=config_value(syn, "num_eval", 200),
      image_size=config_value(syn, "image_size", 64), seed=config_value(syn, "seed", 0))
  directory = cache.ensure_synthetic(syn, "image_text_synthetic", settings, write_synthetic_pairs,
                                     what="synthetic image-text", log=log)
  return os.path.join(directory, TRAIN_FILE), os.path.join(directory, EVAL_FILE)
