"""The AV-digits fusion model: one MLP encoder per modality, modality dropout, concatenation
fusion, a fused head and one head per modality (for gradient blending).

  image [B, 8, 8] (0..16)     -> /16, flatten -> image_0 -> relu -> image_1 -> relu   = u_image
  audio [B, T, 13], frames [B] -> standardize -> audio_frame_0 -> relu -> audio_frame_1 -> relu
                                 (per frame) -> [masked mean; masked std] over the valid frames
                                 -> audio_embed -> relu                                = u_audio
  {u_m} -> modality dropout (p during training; x modality_mask, 0 = missing) -> concat
        -> fusion_0 -> relu -> head                                    = logits['fused']
  u_m -> head_<m>                                                      = logits[m]

Every layer is a Dense whose width comes from config.model.widths[name], so that a pruned
(compacted) model is the same class with smaller widths (mmjax.transforms.pruning). With one
modality the model is that modality's unimodal network (concat of one embedding).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmjax.transforms.modality_dropout import modality_dropout

MODALITIES = ("audio", "image")
# Per-coefficient mean and std of the 13 MFCCs over the frames of the AV-digits training split
# (seed 0), rounded; tests/test_avdigits.py checks them against the data.
AUDIO_MEAN = (-297.4, 26.3, -9.6, -18.3, -42.5, -19.5, -20.5, -10.1, -16.6, -8.4, -14.0, -11.4,
              -13.6)
AUDIO_STD = (149.4, 54.4, 38.2, 31.4, 29.9, 27.4, 19.1, 16.2, 15.7, 15.4, 15.1, 13.1, 12.8)
DEFAULT_WIDTHS = {"image_0": 64, "image_1": 64, "audio_frame_0": 64, "audio_frame_1": 64,
                  "audio_embed": 64, "fusion_0": 64}


def masked_mean_std(x: jnp.ndarray, frames: jnp.ndarray) -> jnp.ndarray:
  """[mean; std] over the first frames[b] steps: x [B, T, H], frames [B] -> [B, 2H] (0 for an
  example with no frames, e.g. a missing audio track). A constant feature has std exactly 0
  (so a pruned, zeroed node contributes nothing), with a zero gradient there."""
  valid = (jnp.arange(x.shape[1])[None, :] < frames[:, None]).astype(x.dtype)[..., None]
  count = jnp.maximum(valid.sum(1), 1.0)
  mean = (x * valid).sum(1) / count
  var = (jnp.square(x - mean[:, None]) * valid).sum(1) / count
  positive = var > 0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  return jnp.concatenate([mean, std], axis=-1)


class AVDigitsFusion(nn.Module):
  """Module docstring. Returns {'fused': [B, C], <modality>: [B, C]} logits."""

  modalities: Sequence[str] = MODALITIES
  widths: Mapping[str, int] = None
  num_classes: int = 10
  modality_dropout: float = 0.0
  keep_one: bool = True

  def width(self, name: str) -> int:
    widths = {**DEFAULT_WIDTHS, **dict(self.widths or {})}
    return int(widths[name])

  def dense(self, name: str, x: jnp.ndarray, relu: bool = True) -> jnp.ndarray:
    x = nn.Dense(self.width(name), name=name)(x)
    return nn.relu(x) if relu else x

  def encode_image(self, batch) -> jnp.ndarray:
    x = batch["image"].reshape(batch["image"].shape[0], -1) / 16.0
    return self.dense("image_1", self.dense("image_0", x))

  def encode_audio(self, batch) -> jnp.ndarray:
    x = (batch["audio"] - np.array(AUDIO_MEAN, np.float32)) / np.array(AUDIO_STD, np.float32)
    x = self.dense("audio_frame_1", self.dense("audio_frame_0", x))
    return self.dense("audio_embed", masked_mean_std(x, batch["audio_frames"]))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    unknown = sorted(set(self.modalities) - set(MODALITIES))
    if unknown or not self.modalities:
      raise ValueError(f"config.model.modalities={tuple(self.modalities)}: choose from "
                       f"{MODALITIES}")
    names = sorted(self.modalities)
    encoders = {"image": self.encode_image, "audio": self.encode_audio}
    embeddings = {m: encoders[m](batch) for m in names}
    present = batch.get("modality_mask")
    embeddings, _ = modality_dropout(
        embeddings, self.make_rng("dropout") if train and self.modality_dropout > 0 else None,
        p=self.modality_dropout, train=train, keep_one=self.keep_one, present=present)
    fused = jnp.concatenate([embeddings[m] for m in names], axis=-1)
    logits = {"fused": nn.Dense(self.num_classes, name="head")(self.dense("fusion_0", fused))}
    for m in names:
      logits[m] = nn.Dense(self.num_classes, name=f"head_{m}")(embeddings[m])
    return logits


def consumers(widths: Mapping[str, int], modalities: Sequence[str] = MODALITIES) -> dict:
  """Which kernels read each prunable layer's output, at which input row (for
  mmjax.transforms.pruning.compact): the fusion input concatenates the embeddings in sorted
  modality order, and audio_embed reads [mean; std] of audio_frame_1."""
  widths = {**DEFAULT_WIDTHS, **dict(widths)}
  names = sorted(modalities)
  embed = {"image": "image_1", "audio": "audio_embed"}
  offsets, at = {}, 0
  for m in names:
    offsets[m] = at
    at += widths[embed[m]]
  out = {"fusion_0": [("head", 0)]}
  if "image" in names:
    out["image_0"] = [("image_1", 0)]
    out["image_1"] = [("fusion_0", offsets["image"]), ("head_image", 0)]
  if "audio" in names:
    out["audio_frame_0"] = [("audio_frame_1", 0)]
    out["audio_frame_1"] = [("audio_embed", 0), ("audio_embed", widths["audio_frame_1"])]
    out["audio_embed"] = [("fusion_0", offsets["audio"]), ("head_audio", 0)]
  return out
