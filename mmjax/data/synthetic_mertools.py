"""Synthetic MER data in the MERTools layout, so the MER systems run offline by default.

Written once into the cache (mmjax.data.cache) as a challenge participant holds the real data:

  <root>/train-label.csv        name,discrete,valence   (labelled training samples)
  <root>/test-label.csv         name,discrete,valence   (the test samples, with their labels so
                                                          the test metrics can be computed)
  <root>/unlabelled.csv         name                    (MER2024's unlabelled pool)
  <root>/features/<extractor>-<UTT|FRA>/<name>.npy

Generative story (per sample n with class y_n, six MER classes):
  valence v_n = VALENCE[y_n] + N(0, 0.7^2), clipped to [-5, 5]   (agrees with the emotion)
  every extractor e has class prototypes mu_e [C, D_e] ~ N(0, 1) and a confusion rate q_e:
  with probability q_e the extractor "sees" another class c' (an ambiguous clip), else y_n;
  its utterance vector is  u = s_e mu_e[c'] + 0.3 (v_n / 5) a_e + N(0, I),  a_e a fixed
  direction carrying valence; a frame-level (FRA) extractor writes T_n ~ U{6..20} frames
  u + N(0, 0.5^2 I). The acoustic "layers" L18, L19, L20 share one confusion draw per sample
  (they are layers of one network) with different noise, so fusing them helps less than fusing
  audio with vision. Nothing here resembles real HuBERT/CLIP statistics; it checks mechanics.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Sequence

import numpy as np

from mmjax.data import cache, mertools
from mmjax.data.mertools_layout import write_feature
from mmjax.data.sharded_stream import config_value

__all__ = ["EXTRACTORS", "VALENCE", "ensure", "features_root", "label_files", "sample_valence",
           "write", "write_features"]

GENERATOR_VERSION = 2
# Class -> mean valence (MER2023's valence scale is [-5, 5]).
VALENCE = {"neutral": 0.0, "angry": -2.5, "happy": 2.5, "sad": -2.5, "worried": -1.5,
           "surprise": 1.0}
# name -> (level, dim, signal scale s_e, confusion rate q_e, shared confusion group).
EXTRACTORS = {
    "hubert-large-L18": ("FRA", 32, 0.9, 0.35, "hubert"),
    "hubert-large-L19": ("FRA", 32, 1.0, 0.35, "hubert"),
    "hubert-large-L20": ("FRA", 32, 0.9, 0.35, "hubert"),
    "manet": ("UTT", 24, 0.8, 0.35, "manet"),
    "resnet": ("FRA", 24, 0.6, 0.35, "resnet"),
    "clip": ("UTT", 32, 0.7, 0.4, "clip"),
    "emovclip": ("FRA", 32, 0.9, 0.3, "emovclip"),
}
DEFAULTS = {"num_train": 480, "num_test": 240, "num_unlabelled": 480, "seed": 0}


def settings(syn_config: Any) -> dict:
  """What determines the content (hashed into the cache path)."""
  values = {k: int(config_value(syn_config, k, v)) for k, v in DEFAULTS.items()}
  return {"version": GENERATOR_VERSION, **values}


def sample_valence(labels: np.ndarray, rng: np.random.Generator,
                   classes: Sequence[str] = tuple(VALENCE)) -> np.ndarray:
  """v_n = VALENCE[y_n] + N(0, 0.7^2), clipped to [-5, 5] (module docstring)."""
  return np.clip(np.array([VALENCE[classes[y]] for y in labels]) +
                 rng.normal(scale=0.7, size=len(labels)), -5, 5)


def write_features(root: str, names: Sequence[str], labels: np.ndarray, valence: np.ndarray,
                   rng: np.random.Generator, *, seed: int = 0,
                   extractors: Sequence[str] = tuple(EXTRACTORS)) -> None:
  """Writes the feature files of `extractors` for samples `names` of classes `labels` [N] and
  valences `valence` [N] under `root` (module docstring). The prototypes and valence
  directions depend on `seed` only, so every split written with the same seed shares them;
  the per-sample draws come from `rng`."""
  num_classes = len(VALENCE)
  prototypes = np.random.default_rng([seed, 1])
  params = {name: (prototypes.normal(size=(num_classes, dim)),
                   prototypes.normal(size=dim) / np.sqrt(dim) * 3)
            for name, (_, dim, _, _, _) in EXTRACTORS.items()}
  labels = np.asarray(labels)
  count = len(labels)
  seen = {}
  for group in sorted({spec[4] for spec in EXTRACTORS.values()}):
    rate = next(spec[3] for spec in EXTRACTORS.values() if spec[4] == group)
    other = (labels + rng.integers(1, num_classes, size=count)) % num_classes
    seen[group] = np.where(rng.random(count) < rate, other, labels)
  for name in extractors:
    level, dim, scale, _, group = EXTRACTORS[name]
    prototype, direction = params[name]
    for i, sample in enumerate(names):
      u = (scale * prototype[seen[group][i]] + 0.3 * valence[i] / 5 * direction +
           rng.normal(size=dim))
      if level == "FRA":
        u = u + rng.normal(scale=0.5, size=(int(rng.integers(6, 21)), dim))
      write_feature(root, name, level, sample, u.astype(np.float32))


def write(directory: str, *, num_train: int, num_test: int, num_unlabelled: int, seed: int,
          log: Callable[[str], None] = print) -> None:
  """Writes the synthetic data into `directory` (module docstring)."""
  rng = np.random.default_rng(seed)
  splits = {"train": num_train, "test": num_test, "unlabelled": num_unlabelled}
  for split, count in splits.items():
    labels = rng.integers(len(VALENCE), size=count)
    valence = sample_valence(labels, rng)
    names = [f"{split}_{i:05d}" for i in range(count)]
    write_features(features_root(directory), names, labels, valence, rng, seed=seed)
    files = label_files(directory)
    if split == "unlabelled":
      mertools.write_label_file(files[split], names)
    else:
      mertools.write_label_file(files[split], names, labels, valence)
    log(f"synthetic MERTools: wrote {count} {split} samples")
  cache.write_marker(directory, {"version": GENERATOR_VERSION, "num_train": num_train,
                                 "num_test": num_test, "num_unlabelled": num_unlabelled,
                                 "seed": seed})


def features_root(directory: str) -> str:
  return os.path.join(directory, "features")


def label_files(directory: str) -> Dict[str, str]:
  """{split: label file} of a synthetic directory (mmjax.data.mertools.SPLIT_KEYS' splits)."""
  return {"train": os.path.join(directory, "train-label.csv"),
          "test": os.path.join(directory, "test-label.csv"),
          "unlabelled": os.path.join(directory, "unlabelled.csv")}


def ensure(syn_config: Any, log: Callable[[str], None] = print) -> str:
  """The synthetic directory for data.mertools.synthetic (num_train, num_test, num_unlabelled,
  seed, directory = cache root), written once."""
  return cache.ensure_synthetic(syn_config, "mertools_synthetic", settings(syn_config), write,
                                what="synthetic MERTools features", log=log)
