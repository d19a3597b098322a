"""Synthetic CREMA-D: drawn talking faces and voiced tones in the real layout and file formats.

`write_synthetic_cremad(root)` writes `root/VideoFlash/<name>.flv` (FLV container, FLV1 video
yuv420p at `fps`, with an MP3 audio track at 22,050 Hz mono: the paper extracts its audio from
the FLVs; the real files' audio codec was not checked here) and `root/AudioWAV/<name>.wav`
(16 kHz mono 16-bit PCM), names `<actor>_<sentence>_<emotion>_<intensity>` as in CREMA-D (see
`clips`). As in CREMA-D, sentence IEO carries intensities LO / MD / HI (NEU: XX) and the
other sentences XX.

Video: a face (ellipse head, eyes, eyebrows, mouth) on a plain background, plus grey pixel
noise; the actor sets its position (which drifts slowly), size, skin tone and the background.
The expression ramps in over the first 30% of the clip, and the mouth opens and closes with the
syllables of the voice (all emotions):
  HAP  mouth curved up (smile), brows slightly raised
  SAD  mouth curved down, brows tilted up at the inner ends
  FEA  mouth open wide, brows raised high
  ANG, DIS  the same face: brows lowered and pulled together, mouth flat and pressed thin
  NEU  flat mouth, brows at rest
Audio: a harmonic voice (6 harmonics) with syllable bursts near 4 Hz; the actor sets the base
pitch (90-240 Hz) and the speaking rate; the emotion sets the pitch level and contour, the
loudness and roughness (amplitude jitter and a sub-harmonic), plus white noise:
  HAP, FEA  the same voice: pitch x1.45 rising 25% with a 6 Hz vibrato, loud
  ANG  pitch x1.15, very loud, very rough
  DIS  pitch x0.85, quiet-moderate, rough, slightly falling
  SAD  pitch x0.8 falling 20%, quiet, smooth
  NEU  base pitch, flat, moderate
So the video confuses ANG / DIS (the audio separates them: loudness, pitch), the audio confuses
HAP / FEA (the video separates them: smile vs open mouth): each modality alone tops out near
5/6 of the clips (one pair at chance), both together can reach all. Intensity scales every
deviation from NEU (LO 0.5, MD 0.75, HI 1.0, XX 0.8). Everything is drawn from numpy generators
seeded by (seed, actor) and (seed, clip fields): the same arguments give the same clips.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mmjax.projects.cremad.clips import (
  AUDIO_DIR,
  AUDIO_EXT,
  EMOTIONS,
  SENTENCES,
  VIDEO_DIR,
  VIDEO_EXT,
  ClipName,
  parse_clip_name,
)

__all__ = ["AUDIO_STYLE", "FACE_STYLE", "FLV_AUDIO_CODEC", "FLV_AUDIO_RATE", "INTENSITY_SCALE",
           "clip_names", "render_audio", "render_video", "write_synthetic_cremad"]

FLV_AUDIO_CODEC, FLV_AUDIO_RATE = "mp3", 22050
INTENSITY_SCALE = {"LO": 0.5, "MD": 0.75, "HI": 1.0, "XX": 0.8}
# Face per emotion: brow lift (fraction of head height, + up), brow tilt (+ inner ends down),
# mouth curvature (+ corners up), mouth opening (fraction of head height), lip thickness scale.
FACE_STYLE = {
  "ANG": dict(brow_lift=-0.06, brow_tilt=0.07, curve=0.0, open=0.0, lips=0.6),
  "DIS": dict(brow_lift=-0.06, brow_tilt=0.07, curve=0.0, open=0.0, lips=0.6),
  "FEA": dict(brow_lift=0.09, brow_tilt=-0.02, curve=0.0, open=0.16, lips=1.0),
  "HAP": dict(brow_lift=0.03, brow_tilt=0.0, curve=0.12, open=0.02, lips=1.0),
  "NEU": dict(brow_lift=0.0, brow_tilt=0.0, curve=0.0, open=0.0, lips=1.0),
  "SAD": dict(brow_lift=0.02, brow_tilt=-0.07, curve=-0.12, open=0.0, lips=1.0),
}
# Voice per emotion: pitch factor, pitch change over the clip (fraction), vibrato depth,
# loudness, roughness (0..1).
AUDIO_STYLE = {
  "ANG": dict(pitch=1.15, glide=0.0, vibrato=0.0, loud=0.9, rough=0.8),
  "DIS": dict(pitch=0.85, glide=-0.08, vibrato=0.0, loud=0.4, rough=0.6),
  "FEA": dict(pitch=1.45, glide=0.25, vibrato=0.06, loud=0.7, rough=0.0),
  "HAP": dict(pitch=1.45, glide=0.25, vibrato=0.06, loud=0.7, rough=0.0),
  "NEU": dict(pitch=1.0, glide=0.0, vibrato=0.0, loud=0.5, rough=0.0),
  "SAD": dict(pitch=0.8, glide=-0.2, vibrato=0.0, loud=0.25, rough=0.0),
}
_NEUTRAL_FACE, _NEUTRAL_VOICE = FACE_STYLE["NEU"], AUDIO_STYLE["NEU"]
_LIGHT_SKIN, _DARK_SKIN = np.array([240.0, 205.0, 180.0]), np.array([95.0, 60.0, 40.0])


def _blend(style: dict[str, float], neutral: dict[str, float], scale: float) -> dict[str, float]:
  return {key: neutral[key] + scale * (value - neutral[key]) for key, value in style.items()}


def clip_names(actors: Iterable[int], sentences: Sequence[str],
               intensities: Sequence[str] = ("LO", "MD", "HI")) -> list[ClipName]:
  """One clip per (actor, sentence, emotion): IEO cycles through `intensities` (NEU: XX), the
  other sentences are XX, as in CREMA-D."""
  names = []
  for actor in actors:
    for sentence in sentences:
      for label, emotion in enumerate(EMOTIONS):
        intensity = "XX"
        if sentence == "IEO" and emotion != "NEU":
          intensity = intensities[(actor + label) % len(intensities)]
        names.append(parse_clip_name(f"{actor}_{sentence}_{emotion}_{intensity}"))
  return names


def _actor_traits(seed: int, actor: int) -> dict[str, Any]:
  rng = np.random.default_rng([seed, actor])
  return dict(
    center=rng.uniform([0.42, 0.45], [0.58, 0.55]),  # x, y as fractions of width, height
    radius=rng.uniform(0.26, 0.36),  # head half-height as a fraction of the frame height
    aspect=rng.uniform(0.72, 0.85),  # head width / height
    skin=_LIGHT_SKIN + rng.uniform() * (_DARK_SKIN - _LIGHT_SKIN),
    background=rng.uniform(40, 110, size=3),
    pitch=rng.uniform(90.0, 240.0),
    syllable_rate=rng.uniform(3.2, 4.8),
  )


def _syllables(t: np.ndarray, rate: float, phase: float) -> np.ndarray:
  """Syllable envelope in [0, 1] at times `t` [n] (seconds): bursts at `rate` per second."""
  return np.clip(np.sin(2 * np.pi * rate * t + phase), 0.0, None) ** 0.7


def render_video(clip: ClipName, traits: dict[str, Any], rng: np.random.Generator,
                 frames: int, fps: float, size: tuple[int, int], phase: float) -> np.ndarray:
  """The face of `clip` as uint8 RGB frames [frames, height, width, 3] (size = (width, height))."""
  width, height = size
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)[:, None]  # [1, height, width] each
  face = _blend(FACE_STYLE[clip.emotion], _NEUTRAL_FACE, INTENSITY_SCALE[clip.intensity])
  r = traits["radius"] * height
  t = np.arange(frames) / fps
  column = lambda values: np.asarray(values, np.float32)[:, None, None]  # [frames, 1, 1]
  e = column(np.clip(t / (0.3 * frames / fps), 0.0, 1.0))  # the expression ramps in
  talk = column(_syllables(t, traits["syllable_rate"], phase))
  drift = rng.normal(0.0, 0.01 * r, size=(frames, 2)).cumsum(axis=0)
  cx = column(traits["center"][0] * width + drift[:, 0])
  cy = column(traits["center"][1] * height + drift[:, 1])
  # Paint layer indices into PALETTE order: 0 background, 1 skin, 2 dark, 3 lips.
  layer = np.zeros((frames, height, width), np.uint8)
  head = ((xx - cx) / (traits["aspect"] * r)) ** 2 + ((yy - cy) / r) ** 2 <= 1.0
  layer[head] = 1
  # Eyes: dark ellipses; brows: thick segments above them, lifted and tilted by the emotion.
  for side in (-1.0, 1.0):
    ex, ey = cx + side * 0.38 * r, cy - 0.22 * r
    layer[((xx - ex) / (0.14 * r)) ** 2 + ((yy - ey) / (0.08 * r)) ** 2 <= 1.0] = 2
    u = (xx - ex) / (0.2 * r)  # -1..1 along the brow, outer end at side * 1
    brow_y = ey - (0.2 + e * face["brow_lift"]) * r - side * u * e * face["brow_tilt"] * r
    layer[(np.abs(u) <= 1.0) & (np.abs(yy - brow_y) <= max(0.045 * r, 0.6))] = 2
  # Mouth: a curve y = my - curve * (u^2 - 1/2) (corners up for curve > 0), opened by the
  # emotion and by the syllables: a dark gap with lips around it.
  u = (xx - cx) / (0.32 * r)
  offset = np.abs(yy - (cy + 0.45 * r - e * face["curve"] * r * (u ** 2 - 0.5)))
  gap = (e * face["open"] + 0.03 * talk) * r * np.sqrt(np.clip(1.0 - u ** 2, 0.0, None))
  lip = np.maximum(0.05 * r * (1.0 + e * (face["lips"] - 1.0)), 0.6)
  inside = np.abs(u) <= 1.0
  layer[inside & (offset <= gap + lip)] = 3
  layer[inside & (offset < gap)] = 2
  palette = np.stack([traits["background"], traits["skin"], [35.0, 25.0, 25.0],
                      traits["skin"] * np.array([0.7, 0.35, 0.35])]).astype(np.float32)
  video = palette[layer] + 5.0 * rng.standard_normal((frames, height, width, 1), np.float32)
  return np.clip(video, 0, 255).astype(np.uint8)


def render_audio(clip: ClipName, traits: dict[str, Any], rng: np.random.Generator,
                 samples: int, sample_rate: int, phase: float) -> np.ndarray:
  """The voice of `clip` as int16 samples [samples] at `sample_rate`."""
  voice = _blend(AUDIO_STYLE[clip.emotion], _NEUTRAL_VOICE, INTENSITY_SCALE[clip.intensity])
  t = np.arange(samples) / sample_rate
  progress = t / max(t[-1], 1e-6)
  f0 = traits["pitch"] * voice["pitch"] * (1.0 + voice["glide"] * progress)
  f0 = f0 * (1.0 + voice["vibrato"] * np.sin(2 * np.pi * 6.0 * t))
  phi = 2 * np.pi * np.cumsum(f0) / sample_rate
  tone = sum(np.sin(k * phi) / k for k in range(1, 7))
  tone = tone + voice["rough"] * 0.6 * np.sin(0.5 * phi)  # sub-harmonic
  # Roughness: amplitude jitter, a new random gain every 5 ms.
  hop = max(sample_rate // 200, 1)
  jitter = rng.uniform(-1.0, 1.0, size=samples // hop + 1).repeat(hop)[:samples]
  amplitude = voice["loud"] * _syllables(t, traits["syllable_rate"], phase)
  amplitude = amplitude * (1.0 + 0.7 * voice["rough"] * jitter)
  signal = 0.45 * amplitude * tone / 2.45 + rng.normal(0.0, 0.01, size=samples)
  return np.round(np.clip(signal, -1.0, 1.0) * 32767).astype(np.int16)


def _write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
  with wave.open(str(path), "wb") as out:
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(sample_rate)
    out.writeframes(pcm.astype("<i2").tobytes())


def _write_flv(path: Path, video: np.ndarray, fps: int, pcm: np.ndarray, sample_rate: int) -> None:
  """video: uint8 [frames, height, width, 3]; pcm: int16 [samples] at `sample_rate`, resampled
  to FLV_AUDIO_RATE for the MP3 track (FLV audio rates are 5.5 / 11 / 22 / 44 kHz)."""
  import av  # pylint: disable=import-outside-toplevel

  with av.open(str(path), "w", format="flv") as container:
    video_stream = container.add_stream("flv", rate=fps)
    video_stream.height, video_stream.width = video.shape[1:3]
    video_stream.pix_fmt = "yuv420p"
    video_stream.bit_rate = 800_000
    audio_stream = container.add_stream(FLV_AUDIO_CODEC, rate=FLV_AUDIO_RATE, layout="mono",
                                        options={"compression_level": "9"})
    audio_stream.bit_rate = 64_000
    codec = audio_stream.codec_context
    resampler = av.AudioResampler(format=codec.format.name, layout="mono", rate=FLV_AUDIO_RATE,
                                  frame_size=codec.frame_size or None)
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = sample_rate
    for chunk in resampler.resample(frame) + resampler.resample(None) + [None]:
      container.mux(audio_stream.encode(chunk))
    for index, image in enumerate(video):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts, frame.time_base = index, Fraction(1, fps)
      container.mux(video_stream.encode(frame))
    container.mux(video_stream.encode(None))


def write_synthetic_cremad(root: str | Path, *, actors: Iterable[int] = range(1001, 1013),
                           sentences: Sequence[str] = SENTENCES[:4], seed: int = 0,
                           fps: int = 30, seconds: tuple[float, float] = (1.0, 2.5),
                           size: tuple[int, int] = (96, 72), sample_rate: int = 16000,
                           log: Callable[[str], Any] = print) -> list[str]:
  """Writes one clip per (actor, sentence, emotion) (see `clip_names`) under `root`.

  Each clip lasts uniform(*seconds) seconds: round(fps * seconds) frames of `size` = (width,
  height) pixels (even numbers, for yuv420p) and round(sample_rate * seconds) WAV samples.
  Actors must lie in 1001..1091 and sentences be CREMA-D codes (ValueError otherwise). Returns
  the clip names, sorted.
  The default (12 actors x 4 sentences x 6 emotions) is 288 clips.
  """
  root = Path(root)
  (root / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
  (root / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
  names = clip_names(actors, sentences)
  start = time.perf_counter()
  traits = {}
  for clip in names:
    if clip.actor not in traits:
      traits[clip.actor] = _actor_traits(seed, clip.actor)
    rng = np.random.default_rng([seed, clip.actor, SENTENCES.index(clip.sentence),
                                 EMOTIONS.index(clip.emotion), ord(clip.intensity[0])])
    duration = rng.uniform(*seconds)
    phase = rng.uniform(0.0, 2 * np.pi)
    pcm = render_audio(clip, traits[clip.actor], rng, int(round(sample_rate * duration)),
                       sample_rate, phase)
    video = render_video(clip, traits[clip.actor], rng, int(round(fps * duration)), fps, size,
                         phase)
    _write_wav(root / AUDIO_DIR / f"{clip.name}{AUDIO_EXT}", pcm, sample_rate)
    _write_flv(root / VIDEO_DIR / f"{clip.name}{VIDEO_EXT}", video, fps, pcm, sample_rate)
  elapsed = time.perf_counter() - start
  log(f"synthetic CREMA-D: wrote {len(names)} clips to {root} in {elapsed:.1f} s "
      f"({len(names) / max(elapsed, 1e-9):.1f} clips/s)")
  return sorted(clip.name for clip in names)
