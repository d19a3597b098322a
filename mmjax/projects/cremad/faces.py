"""Face detection and cropping for the 2D CREMA-D pipeline (shared-encoders paper, section 5.2).

The paper detects the face in the middle frame with MTCNN (Zhang et al. 2016) and crops the
frame to it. Backends of `FaceDetector`:
  'mtcnn'  facenet_pytorch.MTCNN with the P/R/O-Net weights bundled in the package, on the CPU;
           of the faces found, the one with the highest probability (keep_all=False,
           select_largest=False).
  'opencv' OpenCV's Viola-Jones cascade haarcascade_frontalface_default.xml (shipped with
           opencv-python in cv2.data.haarcascades, OpenCV 4.x; OpenCV 5 dropped the cascades);
           of the faces found, the largest box.
  'auto'   'mtcnn' if facenet_pytorch, torch and torchvision are installed, else 'opencv'.

`crop_face` crops a frame to the detected box (clipped to the frame) and resizes it to
size x size with PIL's bilinear filter, as facenet_pytorch's `extract_face` does (margin 0, no
aspect-ratio correction: MTCNN boxes are near-square). A frame without a detected face falls
back to its centre square (side min(height, width)) resized likewise, and `found` is False so
that the caller can count it.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from PIL import Image

__all__ = ["BACKENDS", "FaceDetector", "centre_square", "crop_face", "resolve_backend"]

BACKENDS = ("auto", "mtcnn", "opencv")
_HAAR_FILE = "haarcascade_frontalface_default.xml"


def resolve_backend(backend: str) -> str:
  """The backend that `FaceDetector(backend)` uses: 'auto' becomes 'mtcnn' when facenet_pytorch,
  torch and torchvision are installed (found without importing them), else 'opencv'.

  Raises:
    ValueError: an unknown backend.
  """
  if backend not in BACKENDS:
    raise ValueError(f"unknown face detector backend {backend!r}; expected one of {BACKENDS}")
  if backend != "auto":
    return backend
  found = all(importlib.util.find_spec(m) is not None
              for m in ("facenet_pytorch", "torch", "torchvision"))
  return "mtcnn" if found else "opencv"


class FaceDetector:
  """Finds the main face in an RGB frame (module docstring).

  Attributes:
    name: the backend in use, 'mtcnn' or 'opencv' ('auto' resolved).
  """

  def __init__(self, backend: str = "auto", *, num_threads: int | None = 1):
    """Builds the detector.

    Args:
      backend: 'auto', 'mtcnn' or 'opencv'.
      num_threads: torch CPU threads while MTCNN runs (set for each call, then restored); one
        suits its small images best (0.03-0.1 s per 224x224 frame here, several times faster
        than two threads on a busy machine). None keeps torch's setting.

    Raises:
      ValueError: an unknown backend.
      ImportError: the backend's package is missing (facenet_pytorch, or an OpenCV without the
        Haar cascades).
    """
    backend = resolve_backend(backend)
    self.name = backend
    if backend == "mtcnn":
      import torch  # pylint: disable=import-outside-toplevel
      from facenet_pytorch import MTCNN  # pylint: disable=import-outside-toplevel
      self._torch, self._num_threads = torch, num_threads
      self._mtcnn = MTCNN(keep_all=False, select_largest=False, device="cpu")
    else:
      import cv2  # pylint: disable=import-outside-toplevel
      path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), _HAAR_FILE)
      if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
        raise ImportError(f"OpenCV {cv2.__version__} has no Haar cascade {_HAAR_FILE} (OpenCV 5 "
                          "removed them): install opencv-python-headless<5 or use MTCNN")
      self._cv2 = cv2
      self._cascade = cv2.CascadeClassifier(path)

  def __repr__(self) -> str:
    return f"FaceDetector({self.name!r})"

  def detect(self, frame: np.ndarray) -> tuple[float, float, float, float] | None:
    """The main face's box in pixels, or None when no face is found.

    Args:
      frame: uint8 [height, width, 3] RGB.

    Returns:
      (left, top, right, bottom), possibly reaching outside the frame (MTCNN), or None.
    """
    frame = np.ascontiguousarray(frame, np.uint8)
    if self.name == "mtcnn":
      threads = self._torch.get_num_threads()
      if self._num_threads is not None:
        self._torch.set_num_threads(self._num_threads)
      try:
        boxes, probs = self._mtcnn.detect(frame)
      finally:
        self._torch.set_num_threads(threads)
      if boxes is None or not len(boxes):
        return None
      return tuple(float(v) for v in boxes[int(np.argmax(probs))])
    gray = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
    boxes = self._cascade.detectMultiScale(gray)
    if not len(boxes):
      return None
    left, top, width, height = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return float(left), float(top), float(left + width), float(top + height)


def _resized(image: np.ndarray, size: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def centre_square(frame: np.ndarray, size: int = 224) -> np.ndarray:
  """The centre square of side min(height, width), resized: uint8 [size, size, 3]."""
  height, width = frame.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return _resized(np.ascontiguousarray(frame[top:top + side, left:left + side]), size)


def crop_face(frame: np.ndarray, detector: FaceDetector,
              size: int = 224) -> tuple[np.ndarray, bool]:
  """Crops a frame to its main face (module docstring).

  Args:
    frame: uint8 [height, width, 3] RGB.
    detector: the face detector.
    size: output side in pixels.

  Returns:
    (uint8 [size, size, 3], found): the face crop and True, or the centre square and False
    when no face (or only a box outside the frame) was detected.
  """
  box = detector.detect(frame)
  if box is not None:
    height, width = frame.shape[:2]
    left, top = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    right, bottom = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if right > left and bottom > top:
      return _resized(np.ascontiguousarray(frame[top:bottom, left:right]), size), True
  return centre_square(frame, size), False
