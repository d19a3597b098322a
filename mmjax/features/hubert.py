"""HuBERT hidden states of raw audio, as MERTools features (mmjax.models.hubert).

Input: `<input_dir>/<name>.wav` (16 kHz mono, or whatever rate the checkpoint's
preprocessor_config.json names; read with soundfile, channels averaged to mono).

Output, for each selected layer l and level (mmjax.data.mertools_layout):
  <root>/<prefix>-L<l>-FRA/<name>.npy   float32 [T, H]  h_l at every frame (20 ms per frame)
  <root>/<prefix>-L<l>-UTT/<name>.npy   float32 [H]     the mean of h_l over the T frames
Layers are numbered as transformers' hidden_states: 0 = the encoder's input (after the
positional conv), l = the output of layer l, l = 1..num_hidden_layers (see mmjax.models.hubert
for the stable variant's last layer, taken before the final LayerNorm).

Input preparation, as transformers' Wav2Vec2FeatureExtractor with the checkpoint's
preprocessor_config.json (`hubert.read_preprocessing`): each utterance is normalised to zero
mean and unit variance over its own samples when do_normalize is true (transformers' default
without the file; `normalize` overrides it). A file at another sampling rate is an error naming
the file and both rates, unless `resample` is set: then it is resampled with librosa's soxr
high-quality filter (mmjax.data.av_decode.read_audio).

Batching: the utterances are sorted longest first (so running out of memory shows at once) and
a batch is padded to its longest utterance rounded up to a multiple of `bucket_seconds` (a few
distinct shapes, so a few compilations), with an attention mask. Every utterance's features
equal those of its own unpadded forward pass, for both feature-encoder variants (the padding is
masked out of the GroupNorm statistics too; see mmjax.models.hubert).
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np
import soundfile

from mmjax.data import av_decode
from mmjax.data.mertools_layout import LEVELS
from mmjax.features.runner import Output, check_levels
from mmjax.models import hubert

__all__ = ["HubertFeatures"]


class HubertFeatures:
  """The HuBERT feature extractor (module docstring; mmjax.features.runner.Extractor).

  Args:
    checkpoint: a Hugging Face HuBERT directory (config.json, model.safetensors, optionally
      preprocessor_config.json).
    input_dir: where the `<name>.wav` files are.
    name: the extractor name prefix, e.g. 'chinese-hubert-large'.
    layers: hidden-state indices (0..num_hidden_layers); empty: the last layer.
    levels: 'UTT' and/or 'FRA'.
    resample: resample files at another rate instead of failing.
    normalize: per-utterance normalisation; None: the checkpoint's do_normalize.
    bucket_seconds: batches are padded to a multiple of this duration.
  """

  def __init__(self, checkpoint: str, input_dir: str, *, name: str,
               layers: Sequence[int] = (), levels: Sequence[str] = LEVELS,
               resample: bool = False, normalize: Optional[bool] = None,
               bucket_seconds: float = 1.0):
    self.model, self.variables = hubert.from_pretrained(checkpoint)
    config = self.model.config
    self.preprocessing = hubert.read_preprocessing(checkpoint)
    self.input_dir, self.resample = input_dir, resample
    self.normalize = self.preprocessing.do_normalize if normalize is None else bool(normalize)
    self.layers = tuple(int(layer) for layer in layers) or (config.num_hidden_layers,)
    wrong = [layer for layer in self.layers if not 0 <= layer <= config.num_hidden_layers]
    if wrong or len(set(self.layers)) != len(self.layers):
      raise ValueError(f"--layers={','.join(map(str, self.layers))}: expected distinct layers "
                       f"in 0..{config.num_hidden_layers} (0 = the encoder's input, "
                       f"{config.num_hidden_layers} = the last layer of {checkpoint})")
    self.name, self.levels = name, check_levels(levels)
    self.outputs: List[Output] = [(self._extractor(layer), level) for layer in self.layers
                                  for level in self.levels]
    if bucket_seconds <= 0:
      raise ValueError(f"--bucket_seconds={bucket_seconds} must be positive")
    self.bucket = max(1, round(bucket_seconds * self.preprocessing.sampling_rate))

  def _extractor(self, layer: int) -> str:
    return f"{self.name}-L{layer}"

  def _path(self, name: str) -> str:
    return os.path.join(self.input_dir, f"{name}.wav")

  def _check_length(self, path: str, samples: int) -> None:
    rate = self.preprocessing.sampling_rate
    if hubert.num_frames(self.model.config, samples) < 1:
      shortest = hubert.min_samples(self.model.config)
      raise ValueError(f"{path}: {samples} samples at {rate} Hz is shorter than the "
                       f"{shortest} samples ({1000 * shortest / rate:.0f} ms) of one HuBERT frame")

  def _num_samples(self, name: str) -> int:
    """The utterance's length at the model's rate, from the file's header; errors name the file
    (missing, unreadable, another rate without `resample`, too short)."""
    path, rate = self._path(name), self.preprocessing.sampling_rate
    if not os.path.isfile(path):
      raise FileNotFoundError(f"sample {name!r}: {path} not found")
    try:
      info = soundfile.info(path)
    except (soundfile.SoundFileError, OSError) as e:
      raise av_decode.DecodeError(path, str(e)) from e
    if info.samplerate != rate and not self.resample:
      raise ValueError(f"{path}: sampled at {info.samplerate} Hz, but the HuBERT checkpoint "
                       f"takes {rate} Hz ({self.preprocessing.source}): convert the file (e.g. "
                       f"ffmpeg -i IN -ac 1 -ar {rate} OUT.wav) or pass --resample")
    samples = math.ceil(info.frames * rate / info.samplerate)
    self._check_length(path, samples)
    return samples

  def order(self, names: Sequence[str]) -> List[str]:
    """Longest first (module docstring), after checking every file's header."""
    samples = {name: self._num_samples(name) for name in names}
    return sorted(names, key=lambda name: (-samples[name], name))

  def load(self, name: str) -> np.ndarray:
    """float32 [N]: the file at the model's rate, mono, normalised if configured."""
    path = self._path(name)
    waveform = av_decode.read_audio(path, self.preprocessing.sampling_rate)
    self._check_length(path, len(waveform))
    return hubert.normalize_waveform(waveform) if self.normalize else waveform

  def collate(self, examples: Sequence[np.ndarray], rows: int) -> Dict[str, np.ndarray]:
    """{'input_values': float32 [rows, N], 'attention_mask': int32 [rows, N]}, N the longest
    example rounded up to the bucket; padding is zeros with mask 0."""
    length = math.ceil(max(len(x) for x in examples) / self.bucket) * self.bucket
    values = np.zeros((rows, length), np.float32)
    mask = np.zeros((rows, length), np.int32)
    for row, x in enumerate(examples):
      values[row, :len(x)], mask[row, :len(x)] = x, 1
    return {"input_values": values, "attention_mask": mask}

  def apply(self, variables, batch):
    """The selected hidden states, float32 [B, len(layers), T, H]."""
    out = self.model.apply(variables, batch["input_values"], batch["attention_mask"])
    return jnp.stack([out["hidden_states"][layer] for layer in self.layers], axis=1)

  def features(self, outputs: np.ndarray, row: int, example: np.ndarray
               ) -> Dict[Output, np.ndarray]:
    frames = hubert.num_frames(self.model.config, len(example))
    result = {}
    for j, layer in enumerate(self.layers):
      hidden = outputs[row, j, :frames]
      for level in self.levels:
        result[(self._extractor(layer), level)] = (hidden if level == "FRA"
                                                    else hidden.mean(axis=0))
    return result
