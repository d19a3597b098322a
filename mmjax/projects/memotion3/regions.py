"""Precomputed detector regions for OSCAR (Li et al. 2020): object tags, boxes and region
features, one set per image, stored next to the image.

Layout, for the image `<images>/<split>/<id>.jpg` (any extension):
  <images>/<split>/<id>.features.npy   float32 or float16 [R, F]: region features (F = 2048
                                       for the Faster R-CNN / VinVL detectors OSCAR used)
  <images>/<split>/<id>.boxes.npy      float32 [R, 6]: x1, y1, x2, y2, width, height, each
                                       divided by the image's width or height (OSCAR's 6-d
                                       position feature)
  <images>/<split>/<id>.tags.json      a JSON list of R strings: each region's object tag
Run the detector once offline (e.g. VinVL's or detectron2's Faster R-CNN) and write these
files with `write_regions`; training never runs it. The model reads up to `max_regions`
regions (the first ones: order them by detector confidence).
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

__all__ = ["BOX_DIM", "SYNTHETIC_FEATURE_DIM", "read_regions", "region_files",
           "synthetic_detections", "write_regions"]

BOX_DIM = 6
SYNTHETIC_FEATURE_DIM = 64  # the synthetic memes' stand-in features (a detector gives 2048)


def region_files(image: str) -> tuple[str, str, str]:
  """(features, boxes, tags) paths of an image (module docstring)."""
  stem = os.path.splitext(image)[0]
  return f"{stem}.features.npy", f"{stem}.boxes.npy", f"{stem}.tags.json"


def write_regions(image: str, features: np.ndarray, boxes: np.ndarray, tags: list) -> None:
  """Writes an image's regions in the layout above."""
  features_file, boxes_file, tags_file = region_files(image)
  np.save(features_file, np.asarray(features))
  np.save(boxes_file, np.asarray(boxes, np.float32))
  with open(tags_file, "w", encoding="utf-8") as f:
    json.dump(list(tags), f)


def read_regions(image: str, feature_dim: int) -> tuple[np.ndarray, np.ndarray, list]:
  """(features float32 [R, F], boxes float32 [R, 6], tags [R]) of an image.

  Raises:
    FileNotFoundError: a missing file (named).
    ValueError: an unreadable file, a feature size other than `feature_dim`, or counts that
      differ between the three files (the message names the files and shapes).
  """
  features_file, boxes_file, tags_file = region_files(image)
  for path in (features_file, boxes_file, tags_file):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such file (the regions of {image}; see "
                              "mmjax/projects/memotion3/regions.py for the layout)")
  try:
    features = np.load(features_file).astype(np.float32)
    boxes = np.load(boxes_file).astype(np.float32)
    with open(tags_file, encoding="utf-8") as f:
      tags = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read the regions of {image}: {e}") from e
  if features.ndim != 2 or features.shape[1] != feature_dim:
    raise ValueError(f"{features_file}: features of shape {features.shape}, expected "
                     f"[regions, {feature_dim}] (config.data.regions.feature_dim)")
  if boxes.shape != (features.shape[0], BOX_DIM):
    raise ValueError(f"{boxes_file}: boxes of shape {boxes.shape}, expected "
                     f"[{features.shape[0]}, {BOX_DIM}] (as many as the features)")
  if not isinstance(tags, list) or len(tags) != features.shape[0] or not all(
      isinstance(t, str) for t in tags):
    raise ValueError(f"{tags_file}: expected a list of {features.shape[0]} strings")
  return features, boxes, tags


def _tag_vector(name: str) -> np.ndarray:
  """A fixed unit vector per name (the stand-in detector's appearance prototype)."""
  vector = np.random.default_rng(zlib.crc32(name.encode())).normal(size=SYNTHETIC_FEATURE_DIM)
  return (vector / np.linalg.norm(vector)).astype(np.float32)


def synthetic_detections(factors: dict, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray, list]:
  """What a detector would report for a synthetic meme (`synthetic_memes`): its objects' tags
  and boxes, and features = the tag's prototype (for the face: plus a prototype of its mood,
  as appearance features would encode an expression) + noise."""
  height, width = factors["image_shape"]
  features, boxes, tags = [], [], []
  for tag, (x1, y1, x2, y2) in factors["objects"]:
    vector = _tag_vector(tag)
    if tag == "face":
      vector = vector + _tag_vector(f"face mood {factors['image_mood']}")
    features.append(vector + rng.normal(0, 0.3, SYNTHETIC_FEATURE_DIM).astype(np.float32))
    boxes.append([x1 / width, y1 / height, x2 / width, y2 / height, (x2 - x1) / width,
                  (y2 - y1) / height])
    tags.append(tag)
  return np.stack(features).astype(np.float16), np.asarray(boxes, np.float32), tags
