"""CREMA-D batches for the shared encoders: the dataset's files -> split -> cached preprocessing
-> grain pipelines (seed 002, sections 5.2 and 5.6).

`resolve_files` (the task's `prepare`, once per run) lists the clips of data.root (CREMA-D's
VideoFlash/*.flv and AudioWAV/*.wav, or the synthetic clips written once when data.root is
''), preprocesses them once into data.cache_dir (preprocess.py: 2D for the 2D encoders, 3D for
the 3D ones, fingerprinted, resumable, parallel over data.workers processes; '' = a directory
named by the root and the settings under data.cache_root, default $MMJAX_CACHE or
~/.cache/mmjax) and writes the
split file (data.split 'random': the paper's random split with data.test_fraction and
data.split_seed, or 'actor': actor-disjoint) to data.split_file (default: in the cache
directory); an existing split file is read and checked instead (every clip it names must be in
the cache). Clips that fail to decode are listed by preprocessing and left out of the split.

Batches (S = data.image_size, W = 2 S for the multimodal input of the CNNs, S otherwise;
C = 1 with data.grayscale, else 3):
  'inputs' float32 in [0, 1]: 2D [B, S, W, C]; 3D [B, F, S, W, C] with F = data.max_frames
           (3D CNNs: blank frames after the clip's end) or data.num_frames (VideoMAE: frames
           sampled evenly; its multimodal input is the frame resized to 208/224 S wide | the
           spectrogram chunk 16/224 S wide)
  'frames' int32 [B]: the clip's frames in 'inputs' (1 in 2D)
  'label'  int32 [B]: the emotion's index in clips.EMOTIONS (from the clip's name)
  'weight' float32 [B]: 1 real, 0 padding rows of an evaluation pass
data.split_name picks the split a dataset reads ('train' or 'test'; training always reads
'train'). Modality ablation: data.ablate = 'vision' or 'audio' blanks (zeros) that part of a
multimodal input (the paper's 'Ablated I3D').
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import grain
import numpy as np

from mmjax.data import cache, sharded_stream
from mmjax.data.sharded_stream import config_value
from mmjax.projects.cremad import clips, preprocess, synthetic_clips

__all__ = ["FILE_KEYS", "ablation_columns", "input_shape", "make_eval_dataset",
           "make_train_dataset", "resolve_files", "settings_of"]

FILE_KEYS = ("root", "split_file", "cache_dir")
SPLITS = ("random", "actor")
ABLATIONS = ("", "audio", "vision")
SYNTHETIC_VERSION = 1
log = logging.getLogger("mmjax")


def settings_of(data_config: Any) -> preprocess.Settings:
  """The preprocessing settings of config.data (family '2d' or '3d')."""
  mel = data_config.mel
  return preprocess.Settings(
      mode=data_config.family, image_size=data_config.image_size, fps=data_config.fps,
      sample_rate=mel.sample_rate, n_fft=mel.n_fft, hop_length=mel.hop_length,
      n_mels=mel.n_mels, face_backend=data_config.face_detector)


def layout_of(data_config: Any) -> str:
  """data.layout: 'videomae' (3D: num_frames sampled frames, 208 + 16 wide) or 'cnn'."""
  layout = config_value(data_config, "layout", "cnn")
  if layout not in preprocess.LAYOUTS:
    raise ValueError(f"config.data.layout={layout!r}; expected one of {preprocess.LAYOUTS}")
  return layout


def _synthetic_root(data_config: Any, log_fn: Callable[[str], None]) -> str:
  syn = data_config.synthetic
  settings = dict(version=SYNTHETIC_VERSION, actors=int(syn.actors),
                  sentences=int(syn.sentences), seed=int(syn.seed))

  def write(directory, log, actors, sentences, seed):
    synthetic_clips.write_synthetic_cremad(
        directory, actors=range(1001, 1001 + actors), sentences=clips.SENTENCES[:sentences],
        seed=seed, log=log)
    cache.write_marker(directory, settings)

  return cache.ensure_synthetic(syn, "cremad_synthetic", settings, write,
                                what="synthetic CREMA-D clips", log=log_fn)


def _split_names(data_config: Any, names: list[str]) -> dict[str, list[str]]:
  method = data_config.split
  if method not in SPLITS:
    raise ValueError(f"config.data.split={method!r}; expected one of {SPLITS}")
  split = clips.random_split if method == "random" else clips.actor_split
  return split(names, float(data_config.test_fraction), int(data_config.split_seed))


def resolve_files(data_config: Any, log: Callable[[str], None] = print) -> tuple[str, str, str]:
  """(root, split file, preprocessed cache directory), preparing what is missing (module
  docstring)."""
  root = data_config.root or _synthetic_root(data_config, log)
  listed = clips.list_clips(root, bad_names=data_config.bad_names, log=log)
  settings = settings_of(data_config)
  cache_dir = data_config.cache_dir or cache.dataset_directory(
      data_config.cache_root, f"cremad_{settings.mode}",
      {"root": os.path.abspath(root), **settings.effective()})
  manifest = preprocess.preprocess(listed, cache_dir, settings,
                                   workers=int(data_config.workers), log=log)
  ready = [record["name"] for record in manifest["clips"]]
  split_file = data_config.split_file or os.path.join(
      cache_dir, f"split_{data_config.split}_{data_config.test_fraction:g}_"
      f"{data_config.split_seed}.json")
  if os.path.isfile(split_file):
    clips.read_split_file(split_file, known=ready)
  else:
    splits = _split_names(data_config, [c.name for c in listed if c.name in set(ready)])
    clips.write_split_file(split_file, splits, {
        "root": os.path.abspath(root), "method": data_config.split,
        "test_fraction": data_config.test_fraction, "seed": data_config.split_seed,
        "failed": [f["name"] for f in manifest["failed"]]})
    log(f"CREMA-D split ({data_config.split}): {len(splits['train'])} train, "
        f"{len(splits['test'])} test clips -> {split_file}")
  return root, split_file, cache_dir


def ablation_columns(data_config: Any) -> dict[str, slice]:
  """{'vision': columns, 'audio': columns} of a multimodal input's width (module docstring)."""
  size = int(data_config.image_size)
  if data_config.family == "3d" and layout_of(data_config) == "videomae":
    vision = preprocess.videomae_widths(size)[0]
    return {"vision": slice(0, vision), "audio": slice(vision, size)}
  return {"vision": slice(0, size), "audio": slice(size, 2 * size)}


def input_shape(data_config: Any) -> tuple[int, ...]:
  """The shape of one example's 'inputs' (module docstring)."""
  size = int(data_config.image_size)
  width = size
  if data_config.modality == "multimodal" and layout_of(data_config) == "cnn":
    width = 2 * size
  channels = 1 if data_config.grayscale else 3
  if data_config.family == "2d":
    return (size, width, channels)
  frames = data_config.num_frames if layout_of(data_config) == "videomae" else (
      data_config.max_frames)
  return (int(frames), size, width, channels)


def _example(source: preprocess.CachedClips, labels: np.ndarray, kind: str, grayscale: bool,
             blank: slice | None, i: int) -> dict:
  item = source[i]
  images = np.asarray(item[kind], np.float32) * (1.0 / 255.0)
  if grayscale:
    images = images.mean(axis=-1, keepdims=True)
  if blank is not None:
    images[..., blank, :] = 0.0
  return {"inputs": images, "frames": item["frames"], "label": labels[i]}


class _Collate:
  """A list of examples (None = padding) -> a batch (module docstring)."""

  def __init__(self, shape: tuple[int, ...]):
    self._shape = shape

  def __call__(self, examples: list) -> dict:
    batch = {"inputs": np.zeros((len(examples),) + self._shape, np.float32),
             "frames": np.zeros((len(examples),), np.int32),
             "label": np.zeros((len(examples),), np.int32),
             "weight": np.array([e is not None for e in examples], np.float32)}
    for i, example in enumerate(examples):
      if example is not None:
        for key in ("inputs", "frames", "label"):
          batch[key][i] = example[key]
    return batch


def _records(data_config: Any, split: str) -> tuple[int, Callable[[int], dict], _Collate]:
  """(number of clips, load, collate) of `split` (see `sharded_stream.indexed_dataset`)."""
  split_file, cache_dir = data_config.split_file, data_config.cache_dir
  if not (split_file and cache_dir):
    _, split_file, cache_dir = resolve_files(data_config, log=log.info)
  splits = clips.read_split_file(split_file).splits
  if split not in splits:
    raise ValueError(f"{split_file}: no split {split!r} (config.data.split_name); it has "
                     f"{sorted(splits)}")
  names = splits[split]
  if not names:
    raise ValueError(f"{split_file}: split {split!r} has no clips")
  modality, ablate = data_config.modality, data_config.ablate
  if ablate not in ABLATIONS:
    raise ValueError(f"config.data.ablate={ablate!r}; expected one of {ABLATIONS}")
  if ablate and modality != "multimodal":
    raise ValueError(f"config.data.ablate={ablate!r} needs a multimodal input; "
                     f"config.data.modality={modality!r}")
  source = preprocess.CachedClips(cache_dir, modality, layout=layout_of(data_config),
                                  max_frames=int(data_config.max_frames),
                                  num_frames=int(data_config.num_frames), names=names)
  labels = np.array([clips.parse_clip_name(name).label for name in names], np.int32)
  blank = ablation_columns(data_config)[ablate] if ablate else None
  load = functools.partial(_example, source, labels, modality, bool(data_config.grayscale),
                           blank)
  return len(names), load, _Collate(input_shape(data_config))


def make_train_dataset(data_config: Any, *, batch_size: int, seed: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """The infinite, shuffled, resumable batches of the 'train' split for this process
  (`sharded_stream.indexed_dataset`)."""
  return sharded_stream.indexed_dataset(data_config, "train", _records, batch_size=batch_size,
                                        seed=seed, process_index=process_index,
                                        process_count=process_count)


def make_eval_dataset(data_config: Any, *, batch_size: int, process_index: int | None = None,
                      process_count: int | None = None) -> grain.IterDataset:
  """One pass over data.split_name ('test' or 'train') in split-file order, padded so that
  every process yields the same number of batches."""
  return sharded_stream.indexed_dataset(data_config, data_config.split_name, _records,
                                        batch_size=batch_size, process_index=process_index,
                                        process_count=process_count)
