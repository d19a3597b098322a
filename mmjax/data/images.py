"""CLIP image preprocessing with Pillow (as OpenAI CLIP's torchvision transform).

RGB -> resize so that the shorter side is S (bicubic, antialiased; the longer side is
int(S * long / short)) -> center crop S x S (offset round((size - S) / 2)) -> scale to [0, 1]
-> normalize with `CLIP_MEAN` / `CLIP_STD`. Outputs are float32 [S, S, 3] (HWC, RGB).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["CLIP_MEAN", "CLIP_STD", "IMAGE_EXTENSIONS", "load_image", "normalize",
           "preprocess_array", "preprocess_image", "resize_and_crop"]

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def resize_and_crop(image: Image.Image, image_size: int) -> Image.Image:
  """Bicubic resize of the shorter side to `image_size`, then the central square crop.

  Args:
    image: any PIL image of size (W, H).
    image_size: S.

  Returns:
    The S x S PIL image, in the mode of `image`.
  """
  width, height = image.size
  if width <= 0 or height <= 0:
    raise ValueError(f"empty image of size {width}x{height}")
  short, long = (width, height) if width <= height else (height, width)
  new_long = int(image_size * long / short)
  new_size = (image_size, new_long) if width <= height else (new_long, image_size)
  if new_size != image.size:
    image = image.resize(new_size, Image.Resampling.BICUBIC)
  left = int(round((new_size[0] - image_size) / 2.0))
  top = int(round((new_size[1] - image_size) / 2.0))
  return image.crop((left, top, left + image_size, top + image_size))


def normalize(pixels: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] RGB -> float32 (pixels / 255 - CLIP_MEAN) / CLIP_STD."""
  return (pixels.astype(np.float32) / np.float32(255) - CLIP_MEAN) / CLIP_STD


def preprocess_image(image: Image.Image, image_size: int) -> np.ndarray:
  """A PIL image -> float32 [S, S, 3] CLIP input (see the module docstring)."""
  image = resize_and_crop(image.convert("RGB"), image_size)
  return normalize(np.asarray(image, np.uint8))


def load_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
  """Reads an image file as a CLIP input.

  Args:
    path: an image file Pillow can read (PNG, JPEG, BMP, ...).
    image_size: S.

  Returns:
    float32 [S, S, 3], normalized RGB.

  Raises:
    FileNotFoundError: `path` does not exist (the message names it).
    ValueError: the file is not a readable image (the message names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such image file")
  try:
    with Image.open(path) as image:
      return preprocess_image(image, image_size)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"{path}: cannot read the image: {e}") from e


def preprocess_array(frame: np.ndarray, image_size: int) -> np.ndarray:
  """A uint8 [H, W, 3] RGB array (e.g. a video frame) -> float32 [S, S, 3] CLIP input."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"expected a uint8 [H, W, 3] RGB frame, got {frame.dtype} {frame.shape}")
  return preprocess_image(Image.fromarray(np.ascontiguousarray(frame)), image_size)
