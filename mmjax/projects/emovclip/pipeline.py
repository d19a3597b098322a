"""Seed 003's whole system in one command: EmoVCLIP prompt learning, EmoVCLIP video features in
the MERTools layout, then the fusion network's protocol (mmjax.projects.emovclip.system).

Stages (each a config or a documented step; every stage resumes):
  1. emovclip  train the prompts of a frozen CLIP on the labelled clips (configs/emovclip.py,
               data.train_labels / eval_labels / frames_dir) in <root>/emovclip;
  2. features  write every sample's EmoVCLIP video features (train, test and unlabelled names)
               with the best checkpoint's prompted image tower: <features_root>/emovclip-FRA
               ([T, D] frame embeddings; mmjax.features.ClipFrameFeatures, as
               `launch/extract_features.py --extractor=emovclip` does);
  3. fusion    the rows of mmjax.projects.emovclip.system (configs/mer2024.py: attention fusion
               over audio, image and the EmoVCLIP video features; modality dropout;
               self-training; 5-fold) in <root>/fusion.
The audio and image features (HuBERT, CLIP) are expected under <features_root> already
(`launch/extract_features.py --extractor=hubert|clip`).

Embedded default (no label files given): synthetic clips (mmjax.data.labelled_video's moving
discs, six MER classes) split into labelled training clips, unlabelled clips and test clips,
with MERTools label files and synthetic audio and image features for the same names
(mmjax.data.synthetic_mertools) written into <root>/data; the EmoVCLIP stage then trains on
the real synthetic frames and its features are the system's video modality.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from mmjax import features
from mmjax.config_files import load_checkout_config
from mmjax.data import cache, labelled_video, mertools, synthetic_mertools
from mmjax.projects.emovclip import system
from mmjax.train import multirun
from mmjax.train.trainer import train_and_evaluate

__all__ = ["EMBEDDED", "STAGES", "run_pipeline", "write_embedded"]

STAGES = ("emovclip", "features", "fusion")
# The embedded set: clips (frames 4-12, 64 px) and the synthetic extractors of the two other
# modalities.
EMBEDDED = {"num_labelled": 240, "num_unlabelled": 240, "num_test": 120, "seed": 0}
EMBEDDED_EXTRACTORS = ("hubert-large-L20", "clip")
VERSION = 1


def write_embedded(directory: str, *, num_labelled: int, num_unlabelled: int, num_test: int,
                   seed: int, log: Callable[[str], None] = print) -> Dict[str, str]:
  """Writes the embedded set into `directory` once (module docstring). Returns {'train',
  'test', 'unlabelled': label files, 'frames_dir', 'features_root'}."""
  settings = {"version": VERSION, "num_labelled": num_labelled, "num_unlabelled": num_unlabelled,
              "num_test": num_test, "seed": seed}
  out = {"train": os.path.join(directory, "train-label.csv"),
         "test": os.path.join(directory, "test-label.csv"),
         "unlabelled": os.path.join(directory, "unlabelled.csv"),
         "frames_dir": os.path.join(directory, "clips", labelled_video.FRAMES_DIR),
         "features_root": os.path.join(directory, "features")}
  if cache.is_complete(directory, settings):
    return out
  clip_train, clip_test = labelled_video.write_synthetic_clips(
      os.path.join(directory, "clips"), class_names=mertools.CLASSES,
      num_train=num_labelled + num_unlabelled, num_eval=num_test, num_frames_range=(4, 12),
      image_size=64, seed=seed, log=log)
  rng = np.random.default_rng([seed, 2])
  for split, path, rows in (("train", clip_train, slice(0, num_labelled)),
                            ("unlabelled", clip_train, slice(num_labelled, None)),
                            ("test", clip_test, slice(None))):
    labels = mertools.read_labels(path)
    names, classes = labels.names[rows], labels.labels[rows]
    valence = synthetic_mertools.sample_valence(classes, rng)
    synthetic_mertools.write_features(out["features_root"], names, classes, valence, rng,
                                      seed=seed, extractors=EMBEDDED_EXTRACTORS)
    if split == "unlabelled":
      mertools.write_label_file(out[split], names)
    else:
      mertools.write_label_file(out[split], names, classes, valence)
    log(f"embedded MER2024 set: {split}, {len(names)} samples")
  cache.write_marker(directory, settings)
  return out


def _names(files: Dict[str, str]) -> list:
  return [str(n) for split in ("train", "test", "unlabelled") if files.get(split)
          for n in mertools.read_labels(files[split]).names]


def run_pipeline(root: str, *, stages: Sequence[str] = STAGES, rows: Sequence[str] = system.ROWS,
                 emovclip_variants: str = "", emovclip_overrides: Mapping[str, Any] = (),
                 fusion_variants: str = "", fusion_overrides: Mapping[str, Any] = (),
                 files: Dict[str, str] | None = None, feature_batch: int = 8,
                 embedded: Mapping[str, int] = EMBEDDED,
                 log: Callable[[str], None] = print) -> dict:
  """Runs `stages` (module docstring) under `root`. `files`: {'train', 'test', 'unlabelled'
  (label CSVs), 'frames_dir', 'features_root'} of real data, or None for the embedded set
  (for the fusion stage alone: the data of configs/mer2024.py with `fusion_variants`, e.g. its
  synthetic features or 'avdigits'). `emovclip_overrides` / `fusion_overrides`: {dotted config
  key: value} set on the EmoVCLIP config / every fusion row's config. `embedded`: the sizes of
  the embedded set (EMBEDDED). Returns the fusion rows'
  results (system.run_rows) when the fusion stage ran, else {}."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
  if files is None and set(stages) == {"fusion"}:  # the fusion config's own data
    return system.run_rows(os.path.join(root, "fusion"), rows, fusion_variants,
                           overrides=fusion_overrides, log=log)
  if files is None:
    files = write_embedded(os.path.join(root, "data"), log=log, **embedded)
  workdir = os.path.join(root, "emovclip")
  emovclip = multirun.with_values(
      load_checkout_config("emovclip", emovclip_variants),
      **{"data.train_labels": files["train"], "data.eval_labels": files["test"],
         "data.frames_dir": files["frames_dir"], **dict(emovclip_overrides)})
  if "emovclip" in stages:
    train_and_evaluate(emovclip, workdir)
  if "features" in stages:
    model, variables, step = features.from_emovclip_workdir(
        workdir, "best" if emovclip.best_metric else "latest")
    log(f"EmoVCLIP features from {workdir}, step {step}")
    extractor = features.ClipFrameFeatures(model, variables, files["frames_dir"],
                                           name="emovclip", levels=("FRA",),
                                           num_frames=int(emovclip.data.num_frames))
    features.extract(extractor, _names(files), files["features_root"],
                     batch_size=feature_batch, prefix="EmoVCLIP features")
  if "fusion" not in stages:
    return {}
  overrides = {"data.mertools.features_root": files["features_root"],
               "data.mertools.train_labels": files["train"],
               "data.mertools.test_labels": files["test"],
               "data.mertools.unlabelled_labels": files.get("unlabelled", ""),
               **dict(fusion_overrides)}
  return system.run_rows(os.path.join(root, "fusion"), rows, fusion_variants,
                         overrides=overrides, log=log)
