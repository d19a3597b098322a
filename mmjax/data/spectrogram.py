"""Mel spectrograms in decibels, as images and as time chunks (CREMA-D shared encoders, 5.2 / 5.6).

`mel_spectrogram_db` is librosa's mel spectrogram: a centred STFT (Hann window, `n_fft` points,
`hop_length`, zero padding), power |X|^2, Slaney-normalised mel filterbank with `n_mels` bands
up to sample_rate / 2, then `librosa.power_to_db(S, ref=np.max)`:
10 log10(max(S, 1e-10) / max(S)), floored at -80 dB (librosa's default top_db), so the loudest
bin is 0 dB. The paper uses 22,050 Hz, n_fft 2048, hop 512 and 512 mel bands.

`to_image` draws a spectrogram as a plotted spectrogram looks: min-max scaled to [0, 255], low
frequencies at the bottom (row 0 of the array, the lowest band, becomes the last image row),
resized with PIL's bilinear filter and repeated over 3 channels (gray; the paper's "RGB color
channels" are three equal channels here).

`time_chunks` divides a spectrogram "evenly" along time into as many chunks as a clip has video
frames (section 5.6), with `np.array_split` semantics: chunk widths differ by at most one column,
the wider chunks first.
"""

from __future__ import annotations

import numpy as np
from librosa import power_to_db  # named imports: librosa's lazy submodules load now, not at
from librosa.feature import melspectrogram  # the first call (e.g. in each worker process)
from PIL import Image

__all__ = ["mel_spectrogram_db", "time_chunks", "to_image"]


def mel_spectrogram_db(audio: np.ndarray, sample_rate: int = 22050, n_fft: int = 2048,
                       hop_length: int = 512, n_mels: int = 512) -> np.ndarray:
  """The mel spectrogram of mono audio in dB relative to its maximum (module docstring).

  Args:
    audio: float [samples] (non-empty).
    sample_rate: Hz.
    n_fft: STFT size (also the window length).
    hop_length: STFT hop in samples.
    n_mels: mel bands.

  Returns:
    float32 [n_mels, 1 + samples // hop_length], row 0 the lowest band, values in [-80, 0].
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1 or not audio.size:
    raise ValueError(f"expected mono audio [samples] with samples > 0, got shape {audio.shape}")
  power = melspectrogram(y=audio, sr=sample_rate, n_fft=n_fft, hop_length=hop_length,
                         n_mels=n_mels)
  return power_to_db(power, ref=np.max).astype(np.float32)


def to_image(spec_db: np.ndarray, width: int, height: int,
             value_range: tuple[float, float] | None = None) -> np.ndarray:
  """A spectrogram as an RGB image (module docstring).

  Args:
    spec_db: float [bands, frames], row 0 the lowest band.
    width: image width (the time axis).
    height: image height (the frequency axis).
    value_range: (low, high) mapped to 0 and 255 (clipped); default the spectrogram's own
      minimum and maximum (a constant spectrogram is drawn black). Chunks of one spectrogram
      pass its range so that they share one scale.

  Returns:
    uint8 [height, width, 3], three equal channels, the lowest band at the bottom.
  """
  spec_db = np.asarray(spec_db, np.float32)
  if spec_db.ndim != 2 or not spec_db.size:
    raise ValueError(f"expected a spectrogram [bands, frames], got shape {spec_db.shape}")
  low, high = value_range if value_range is not None else (spec_db.min(), spec_db.max())
  scale = 255.0 / (high - low) if high > low else 0.0
  gray = np.clip((spec_db[::-1] - low) * scale, 0.0, 255.0).astype(np.float32)
  resized = np.asarray(Image.fromarray(gray).resize((width, height), Image.Resampling.BILINEAR))
  image = np.round(np.clip(resized, 0.0, 255.0)).astype(np.uint8)
  return np.repeat(image[:, :, None], 3, axis=2)


def time_chunks(spec_db: np.ndarray, n: int) -> list[np.ndarray]:
  """Splits a spectrogram into `n` chunks along time (module docstring).

  With fewer columns than chunks, columns are first repeated (column floor(j * frames / n) for
  j < n) so that each chunk has one column and chunk j shows the time of frame j.

  Args:
    spec_db: [bands, frames] (frames >= 1).
    n: number of chunks, >= 1.

  Returns:
    n arrays [bands, width_j] (views or copies), widths summing to max(frames, n).
  """
  if n < 1:
    raise ValueError(f"need at least one chunk, got {n}")
  columns = spec_db.shape[1]
  if columns < 1:
    raise ValueError(f"the spectrogram has no time frames (shape {spec_db.shape})")
  if columns < n:
    spec_db = spec_db[:, np.arange(n) * columns // n]
  return np.array_split(spec_db, n, axis=1)
