"""Decoding video frames and audio samples from media files (PyAV, soundfile, librosa).

Video (any container/codec FFmpeg reads, e.g. CREMA-D's FLV files): the first video stream is
decoded in presentation order and converted to RGB. Frame times are the frames' presentation
timestamps (pts * time_base) measured from the first frame; a stream runs until the last frame's
time plus its duration (the frame's own duration when the container stores one, else 1 / the
stream's average rate, else the last gap between frames).

Resampling to `fps` (e.g. 24 for the 3D pipeline of the CREMA-D shared-encoders paper, section
5.6) follows the rule of a sample-and-hold signal: output frame k stands for time t_k = k / fps
(k = 0, 1, ... while t_k is before the stream's end) and is the last decoded frame whose time is
<= t_k. A 30 fps clip at 24 fps thus skips every fifth frame; a 12 fps clip repeats frames.

Audio: WAV (and the other formats libsndfile reads: .flac, .ogg, .aiff) through soundfile, any
other file (e.g. the audio track of an FLV) through PyAV; samples become float32 in [-1, 1]
(integer PCM divided by 2^(bits-1)), channels are averaged to mono, and a different sample rate
is converted with `librosa.resample` (its default soxr 'high quality' filter).

A file that cannot be read raises `DecodeError` (a ValueError) naming the file and the decoder's
message.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Iterator

import av
import numpy as np
import soundfile
from PIL import Image

__all__ = ["DecodeError", "middle_frame", "read_audio", "read_video_frames"]

# Extensions read with soundfile (libsndfile); everything else goes through FFmpeg (PyAV).
_SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
# Output times within this many seconds of the stream's end count as past it (float pts).
_TIME_EPS = 1e-6


class DecodeError(ValueError):
  """A media file that could not be decoded; `.path` is the file, `.reason` the decoder's words."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot decode {path}: {reason}")
    self.path = path
    self.reason = reason


def _decoded_frames(path: str) -> Iterator[tuple[float, float, av.VideoFrame]]:
  """Yields (time in s from the first frame, stream end in s or nan if unknown, frame) for each
  decoded frame of the first video stream; the end is only set on the last item."""
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise DecodeError(path, "no video stream")
      stream = container.streams.video[0]
      rate = float(stream.average_rate) if stream.average_rate else 0.0
      start, previous, count = None, None, 0
      for frame in container.decode(stream):
        time = frame.time if frame.time is not None else count / (rate or 1.0)
        if start is None:
          start = time
        if previous is not None:
          yield previous[0] - start, math.nan, previous[1]
        previous = (time, frame)
        count += 1
      if previous is None:
        raise DecodeError(path, "the video stream has no frames")
      time, frame = previous
      if frame.duration and stream.time_base is not None:
        duration = float(frame.duration * stream.time_base)
      elif rate:
        duration = 1.0 / rate
      else:
        duration = 0.0
      yield time - start, time - start + duration, frame
  except (av.FFmpegError, OSError) as e:
    raise DecodeError(path, str(e)) from e


def _rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
  image = frame.to_ndarray(format="rgb24")
  if size is None:
    return image
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def read_video_frames(path: str, fps: float | None = None,
                      size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes a video's frames as RGB, all of them or resampled to `fps` (module docstring).

  Args:
    path: a video file.
    fps: output frame rate; None keeps every decoded frame.
    size: (width, height) to resize each frame to as it is decoded (PIL bilinear), keeping
      memory small for long clips; None keeps the decoded size.

  Returns:
    uint8 [frames, height, width, 3]; with `fps`, frames = the number of k >= 0 with
    k / fps < duration (at least 1), frame k being the last one shown at time k / fps.

  Raises:
    DecodeError: the file cannot be opened or decoded, or has no video frames.
  """
  if fps is None:
    return np.stack([_rgb(frame, size) for _, _, frame in _decoded_frames(path)])
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  out, held, k = [], None, 0
  for time, end, frame in _decoded_frames(path):
    while held is not None and k / fps < time - _TIME_EPS:  # `held` is on screen at k / fps
      out.append(held)
      k += 1
    held = _rgb(frame, size)
    if not math.isnan(end):  # the last frame: it stays on screen until the stream's end
      while k == 0 or k / fps < end - _TIME_EPS:
        out.append(held)
        k += 1
  return np.stack(out)


def middle_frame(path: str) -> np.ndarray:
  """The middle decoded frame: index T // 2 of the T frames (the later one of the two middle
  frames when T is even).

  Args:
    path: a video file.

  Returns:
    uint8 [height, width, 3] RGB.

  Raises:
    DecodeError: the file cannot be opened or decoded, or has no video frames.
  """
  frames, first = collections.deque(), 0  # frames first, first + 1, ... (still YUV)
  for _, _, frame in _decoded_frames(path):
    frames.append(frame)
    while first < (first + len(frames)) // 2:  # the middle is never before (count // 2)
      frames.popleft()
      first += 1
  return _rgb(frames[0])


def _read_with_soundfile(path: str) -> tuple[np.ndarray, int]:
  try:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
  except (soundfile.SoundFileError, OSError) as e:
    raise DecodeError(path, str(e)) from e
  if not samples.shape[0]:
    raise DecodeError(path, "no audio samples")
  return samples.mean(axis=1, dtype=np.float32), int(rate)


def _read_with_pyav(path: str) -> tuple[np.ndarray, int]:
  try:
    with av.open(path) as container:
      if not container.streams.audio:
        raise DecodeError(path, "no audio stream")
      stream = container.streams.audio[0]
      to_float = av.AudioResampler(format="fltp")  # planar float, same layout and rate
      chunks, rate = [], stream.rate
      for frame in container.decode(stream):
        rate = frame.sample_rate
        chunks += [f.to_ndarray() for f in to_float.resample(frame)]
      chunks += [f.to_ndarray() for f in to_float.resample(None)]
  except (av.FFmpegError, OSError) as e:
    raise DecodeError(path, str(e)) from e
  if not chunks:
    raise DecodeError(path, "the audio stream has no samples")
  return np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32), int(rate)


def read_audio(path: str, sample_rate: int | None = 22050) -> np.ndarray:
  """Reads a file's audio as mono float32 samples at `sample_rate` (module docstring).

  Args:
    path: a WAV (or other libsndfile format) file, or a media file with an audio stream.
    sample_rate: output rate in Hz (librosa.resample when the file's differs); None keeps the
      file's rate.

  Returns:
    float32 [samples].

  Raises:
    DecodeError: the file cannot be opened or decoded, or has no audio.
  """
  if os.path.splitext(path)[1].lower() in _SOUNDFILE_EXTENSIONS:
    samples, rate = _read_with_soundfile(path)
  else:
    samples, rate = _read_with_pyav(path)
  if sample_rate is not None and rate != sample_rate:
    # librosa takes seconds to import: only when resampling.
    import librosa  # pylint: disable=import-outside-toplevel
    samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate).astype(np.float32)
  return samples
