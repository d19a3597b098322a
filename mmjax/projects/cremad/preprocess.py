"""Offline CREMA-D preprocessing (shared-encoders paper, sections 5.2 and 5.6) and its cache.

2D (`Settings.mode='2d'`, section 5.2): the middle video frame is resized to 224x224 (the
paper's order; `detect_size`), the face is detected (MTCNN, `faces.FaceDetector`) and the frame
cropped to it and resized to 224x224 (`vision`); the clip's mel spectrogram (22,050 Hz, n_fft
2048, hop 512, 512 bands, dB re its maximum) becomes a 224x224 image (`audio`); `multimodal` is
face | spectrogram side by side, [224, 448, 3]. A frame without a detected face uses its centre
square (counted in the manifest's `no_face`).

3D (`mode='3d'`, section 5.6): frames resampled to 24 fps (`av_decode.read_video_frames`), each
resized to 224x224 (no face crop, as in the paper); the spectrogram divided evenly into as many
time chunks as frames (`spectrogram.time_chunks`), each drawn with the whole spectrogram's value
range and resized to 224x224.

Audio source: by default the dataset's AudioWAV file of the clip (the same recording as the
FLV's audio track, resampled 16 kHz -> 22,050 Hz); `audio_from_video=True` decodes the FLV's
track instead, as the paper did (one clip, 1076_MTI_NEU_XX, has no audio in its FLV).

Cache format: one uint8 .npy file per clip and stream, read with `np.load(mmap_mode='r')`.
    <cache>/settings.json         {"format_version", "fingerprint", "settings"}: written first
    <cache>/vision/<name>.npy     2D: [S, S, 3] face crop;   3D: [T, S, S, 3] frames
    <cache>/audio/<name>.npy      2D: [S, S] gray image;     3D: [T, S, S] gray chunk images
    <cache>/meta/<name>.json      {"name", "frames", "face"}: written last, marks the clip done
    <cache>/manifest.json         the index (below), rewritten at the end of each run
(S = image_size, T = frames at 24 fps.) Why this rather than array_record: random access to
one clip touches only its files and needs no deserialisation; the reader maps only the frames it
uses (32 of T for VideoMAE); variable-length clips need no padding on disk; parallel workers
write without a shared writer, and each file appears by an atomic rename, which makes the
preprocessing resumable clip by clip. Spectrogram images are stored once (gray, 1 byte/pixel)
and repeated to 3 channels at read time; padding, 32-frame sampling and side-by-side joining
also happen at read time (`CachedClips`), so nothing is stored twice. Sizes at 224 px: 2D
~200 KB per clip (1.5 GB for 7,442 clips); 3D ~200 KB per frame (~12 MB for a 2.5 s clip).

Caching: the settings that matter for the mode (`Settings.effective`, with the face backend
resolved) and FORMAT_VERSION are hashed into a fingerprint kept in settings.json; a run with
other settings on the same directory raises `CacheMismatchError` naming the directory and the
differing keys. A run skips the clips whose meta file exists, so an interrupted run leaves its
finished clips usable and the next run goes on from there. Clips are processed in parallel by a
process pool (`workers`; 1 = in this process), with progress lines (done/total, clips/s, ETA);
its processes start by 'forkserver', so a script that calls `preprocess` with workers > 1 needs
the `if __name__ == "__main__":` guard.
A clip whose video or audio cannot be decoded is listed in the manifest's `failed` (name, file,
decoder message), logged, and retried by the next run.

Manifest: {"format_version", "fingerprint", "settings", "mode", "face_detector" (2D: 'mtcnn'
or 'opencv'; 3D: null), "clips": [{"name", "frames", "face"}] (every finished clip in the
cache, sorted by name), "max_frames", "no_face": [names], "failed": [{"name", "file",
"reason"}]}.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from mmjax.data import av_decode, spectrogram
from mmjax.data.cache import atomic_write_text
from mmjax.data.labelled_video import sample_frame_indices
from mmjax.projects.cremad import faces

__all__ = ["FORMAT_VERSION", "KINDS", "LAYOUTS", "CacheMismatchError", "CachedClips", "Settings",
           "fingerprint", "preprocess", "process_clip", "read_manifest", "videomae_widths"]

FORMAT_VERSION = 1
KINDS = ("vision", "audio", "multimodal")
LAYOUTS = ("cnn", "videomae")
STREAMS = ("vision", "audio")
SETTINGS_FILE, MANIFEST_FILE, META_DIR = "settings.json", "manifest.json", "meta"
VIDEOMAE_WIDTHS = (208, 16)  # frame and chunk widths of the VideoMAE multimodal input at 224
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CASTS = {"image_size": int, "fps": float, "sample_rate": int, "n_fft": int, "hop_length": int,
          "n_mels": int, "detect_size": int, "audio_from_video": bool}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What determines the cached arrays (defaults: the paper's values).

  Attributes:
    mode: '2d' (middle frame, face crop, one spectrogram image) or '3d' (frames at `fps`,
      spectrogram chunks).
    image_size: side S of every stored image (224).
    fps: 3D frame rate (24).
    sample_rate: audio rate for the spectrogram in Hz (22,050).
    n_fft: STFT size (2048).
    hop_length: STFT hop (512).
    n_mels: mel bands (512).
    face_backend: 2D face detector, 'auto', 'mtcnn' or 'opencv' (`faces.FaceDetector`).
    detect_size: 2D: the middle frame is resized to detect_size x detect_size before face
      detection (224, the paper's order); 0 detects on the frame as decoded.
    audio_from_video: decode the audio track of the video file instead of the WAV file.
  """
  mode: str = "2d"
  image_size: int = 224
  fps: float = 24.0
  sample_rate: int = 22050
  n_fft: int = 2048
  hop_length: int = 512
  n_mels: int = 512
  face_backend: str = "auto"
  detect_size: int = 224
  audio_from_video: bool = False

  def __post_init__(self):
    for key, cast in _CASTS.items():  # one type per field: fps=24 and 24.0 fingerprint alike
      object.__setattr__(self, key, cast(getattr(self, key)))
    if self.mode not in ("2d", "3d"):
      raise ValueError(f"Settings.mode must be '2d' or '3d', got {self.mode!r}")
    if self.face_backend not in faces.BACKENDS:
      raise ValueError(f"Settings.face_backend must be one of {faces.BACKENDS}, got "
                       f"{self.face_backend!r}")
    for key in ("image_size", "fps", "sample_rate", "n_fft", "hop_length", "n_mels"):
      if getattr(self, key) <= 0:
        raise ValueError(f"Settings.{key} must be positive, got {getattr(self, key)}")
    if self.detect_size < 0:
      raise ValueError(f"Settings.detect_size must be >= 0, got {self.detect_size}")

  def effective(self) -> dict[str, Any]:
    """The settings that matter for the mode, JSON-able: 2D without fps and with the face
    backend resolved ('auto' -> 'mtcnn' or 'opencv'); 3D without the face settings."""
    values = dataclasses.asdict(self)
    if self.mode == "2d":
      del values["fps"]
      values["face_backend"] = faces.resolve_backend(self.face_backend)
    else:
      del values["face_backend"], values["detect_size"]
    return values


def videomae_widths(image_size: int) -> tuple[int, int]:
  """(frame, chunk) widths of a VideoMAE multimodal input image_size wide: the paper's 208 | 16
  at 224, scaled (the chunk at least 1 pixel wide)."""
  chunk = max(1, round(image_size * VIDEOMAE_WIDTHS[1] / 224))
  return image_size - chunk, chunk


def fingerprint(effective: dict[str, Any]) -> str:
  """16 hex digits of sha256 over FORMAT_VERSION and the effective settings (as sorted JSON)."""
  text = json.dumps({"format_version": FORMAT_VERSION, **effective}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class CacheMismatchError(ValueError):
  """A cache directory written with other settings (or another format version)."""


# -------------------------------------------------------------------------------------------
# One clip.


_DETECTORS: dict[str, faces.FaceDetector] = {}  # this process's, by backend


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _save(path: str, array: np.ndarray) -> None:
  """np.save through a temporary file and a rename (a crash never leaves a partial file)."""
  directory, name = os.path.split(path)
  tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    np.save(f, array)
  os.replace(tmp, path)


def _spectrogram(settings: Settings, audio_path: str) -> np.ndarray:
  audio = av_decode.read_audio(audio_path, settings.sample_rate)
  return spectrogram.mel_spectrogram_db(audio, settings.sample_rate, settings.n_fft,
                                        settings.hop_length, settings.n_mels)


def _detector(backend: str) -> faces.FaceDetector:
  """This process's face detector of the backend, built on first use."""
  if backend not in _DETECTORS:
    _DETECTORS[backend] = faces.FaceDetector(backend)
  return _DETECTORS[backend]


def _arrays_2d(settings: Settings, video: str,
               audio: str) -> tuple[np.ndarray, np.ndarray, int, bool]:
  size = settings.image_size
  frame = av_decode.middle_frame(video)
  image = spectrogram.to_image(_spectrogram(settings, audio), size, size)[:, :, 0]
  if settings.detect_size:
    frame = _resize(frame, settings.detect_size, settings.detect_size)
  face, found = faces.crop_face(frame, _detector(settings.face_backend), size)
  return face, image, 1, found


def _arrays_3d(settings: Settings, video: str,
               audio: str) -> tuple[np.ndarray, np.ndarray, int, None]:
  size = settings.image_size
  frames = av_decode.read_video_frames(video, settings.fps, size=(size, size))
  spec = _spectrogram(settings, audio)
  value_range = (float(spec.min()), float(spec.max()))
  chunks = np.stack([spectrogram.to_image(chunk, size, size, value_range)[:, :, 0]
                     for chunk in spectrogram.time_chunks(spec, len(frames))])
  return frames, chunks, len(frames), None


def process_clip(cache_dir: str, settings: Settings, name: str, video_path: str,
                 audio_path: str) -> dict[str, Any]:
  """Computes and stores one clip's arrays and meta file (module docstring).

  Args:
    cache_dir: the cache directory (its stream and meta folders exist).
    settings: the preprocessing settings.
    name: the clip's name (file stem of its cached files).
    video_path: its video file.
    audio_path: its audio file ('' or ignored with settings.audio_from_video: the video's).

  Returns:
    The meta record {"name", "frames", "face"} (face: whether a face was found, None in 3D), or
    {"name", "failed": True, "file", "reason"} when a file cannot be decoded.
  """
  audio_path = video_path if settings.audio_from_video or not audio_path else audio_path
  try:
    if settings.mode == "2d":
      vision, audio, frames, found = _arrays_2d(settings, video_path, audio_path)
    else:
      vision, audio, frames, found = _arrays_3d(settings, video_path, audio_path)
  except av_decode.DecodeError as e:
    return {"name": name, "failed": True, "file": e.path, "reason": e.reason}
  _save(os.path.join(cache_dir, "vision", f"{name}.npy"), vision)
  _save(os.path.join(cache_dir, "audio", f"{name}.npy"), audio)
  meta = {"name": name, "frames": frames, "face": found}
  atomic_write_text(os.path.join(cache_dir, META_DIR, f"{name}.json"), json.dumps(meta))
  return meta


# -------------------------------------------------------------------------------------------
# The cache directory.


def _open_cache(cache_dir: str, effective: dict[str, Any], digest: str) -> None:
  """Creates the cache (settings.json first) or checks that its settings are these."""
  path = os.path.join(cache_dir, SETTINGS_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      stored = json.load(f)
    if stored.get("fingerprint") != digest:
      old = {"format_version": stored.get("format_version"), **stored.get("settings", {})}
      new = {"format_version": FORMAT_VERSION, **effective}
      diffs = [f"{k}: {old.get(k, '<absent>')!r} in the cache, {new.get(k, '<absent>')!r} now"
               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
      raise CacheMismatchError(
          f"the CREMA-D cache {cache_dir} was written with other settings ("
          f"{'; '.join(diffs) or 'fingerprint ' + str(stored.get('fingerprint'))}): use another "
          "cache directory for these settings, or delete that one")
  elif os.path.isdir(cache_dir) and os.listdir(cache_dir):
    raise CacheMismatchError(f"{cache_dir} is not empty and has no {SETTINGS_FILE}: it is not a "
                             "CREMA-D preprocessing cache; use an empty or new directory")
  for folder in (*STREAMS, META_DIR):
    os.makedirs(os.path.join(cache_dir, folder), exist_ok=True)
  if not os.path.isfile(path):
    atomic_write_text(path, json.dumps({"format_version": FORMAT_VERSION, "fingerprint": digest,
                                        "settings": effective}, indent=2))


def _done_clips(cache_dir: str) -> dict[str, dict[str, Any]]:
  """The meta records of the finished clips in the cache, by name."""
  done = {}
  folder = os.path.join(cache_dir, META_DIR)
  for entry in os.listdir(folder):
    if entry.endswith(".json") and not entry.startswith("."):
      with open(os.path.join(folder, entry)) as f:
        meta = json.load(f)
      done[meta["name"]] = meta
  return done


def read_manifest(cache_dir: str) -> dict[str, Any]:
  """The cache's manifest (module docstring); FileNotFoundError naming it if there is none."""
  path = os.path.join(cache_dir, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: run mmjax.projects.cremad.preprocess."
                            "preprocess into this directory first")
  with open(path) as f:
    return json.load(f)


def _clip_entries(clips: Iterable[Any]) -> list[tuple[str, str, str]]:
  """(name, video_path, audio_path) of each clip: tuples or `clips.Clip` records (.name,
  .video, .audio)."""
  entries, seen = [], set()
  for clip in clips:
    if hasattr(clip, "video"):
      name, video, audio = clip.name, clip.video, clip.audio
    else:
      name, video, audio = clip
    name, video, audio = str(name), os.fspath(video), os.fspath(audio or "")
    if not _SAFE_NAME.fullmatch(name):
      raise ValueError(f"clip name {name!r} cannot be a file name (letters, digits, '_', '.', "
                       "'-'; not starting with '.' or '-')")
    if name in seen:
      raise ValueError(f"clip {name!r} is listed twice")
    seen.add(name)
    entries.append((name, video, audio))
  return entries


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _run(cache_dir: str, settings: Settings, todo: Sequence[tuple[str, str, str]], workers: int,
         log: Callable[[str], None], log_every_s: float) -> list[dict[str, Any]]:
  """Processes `todo` (in this process or a pool), logging progress; the results in order."""
  start = last_log = time.monotonic()
  results: dict[str, dict[str, Any]] = {}

  def finished(result: dict[str, Any]) -> None:
    nonlocal last_log
    results[result["name"]] = result
    if result.get("failed"):
      log(f"cremad preprocess: FAILED {result['name']}: {result['file']}: {result['reason']}")
    now = time.monotonic()
    if now - last_log >= log_every_s or len(results) == len(todo):
      last_log, rate = now, len(results) / max(now - start, 1e-9)
      eta = _duration((len(todo) - len(results)) / rate)
      log(f"cremad preprocess: {len(results)}/{len(todo)} clips, {rate:.2f} clips/s, ETA {eta}")

  workers = min(workers, len(todo))
  if workers <= 1:
    for entry in todo:
      finished(process_clip(cache_dir, settings, *entry))
  else:
    # Workers fork from a fork server, not from this process (whose torch or JAX threads a
    # forked child would inherit broken); the server (one per process, started by the first
    # pool) imports the heavy modules once, so that workers start at once.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [__name__] + (["facenet_pytorch"] if settings.effective().get("face_backend") == "mtcnn"
                      else []))
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
      futures = [pool.submit(process_clip, cache_dir, settings, *entry) for entry in todo]
      for future in concurrent.futures.as_completed(futures):
        finished(future.result())
    finally:
      pool.shutdown(wait=True, cancel_futures=True)
  return [results[name] for name, _, _ in todo]


def preprocess(clips: Iterable[Any], cache_dir: str, settings: Settings = Settings(), *,
               workers: int = 1, log: Callable[[str], None] = print,
               log_every_s: float = 10.0) -> dict[str, Any]:
  """Preprocesses clips into `cache_dir` (cached, resumable, parallel; module docstring).

  Args:
    clips: (name, video_path, audio_path) tuples, or `clips.Clip` records (`clips.list_clips`).
    cache_dir: the cache directory (created if needed).
    settings: the preprocessing settings.
    workers: processes; 1 processes the clips in this process.
    log: progress printer.
    log_every_s: seconds between progress lines.

  Returns:
    The manifest (also written to <cache_dir>/manifest.json).

  Raises:
    CacheMismatchError: `cache_dir` holds a cache written with other settings.
    ValueError: a clip name is not a safe file name or is listed twice.
  """
  entries = _clip_entries(clips)
  effective = settings.effective()
  digest = fingerprint(effective)
  _open_cache(cache_dir, effective, digest)
  done = _done_clips(cache_dir)
  todo = [entry for entry in entries if entry[0] not in done]
  log(f"cremad preprocess ({settings.mode}) into {cache_dir}: {len(entries) - len(todo)} of "
      f"{len(entries)} clips cached, {len(todo)} to do with {max(workers, 1)} worker(s)")
  start = time.monotonic()
  results = _run(cache_dir, settings, todo, workers, log, log_every_s) if todo else []
  failed = [{k: r[k] for k in ("name", "file", "reason")} for r in results if r.get("failed")]
  attempted = {name for name, _, _ in todo}
  try:
    failed += [f for f in read_manifest(cache_dir)["failed"] if f["name"] not in attempted]
  except FileNotFoundError:
    pass
  done = _done_clips(cache_dir)
  failed = sorted((f for f in failed if f["name"] not in done), key=lambda f: f["name"])
  records = [done[name] for name in sorted(done)]
  manifest = {
      "format_version": FORMAT_VERSION, "fingerprint": digest, "settings": effective,
      "mode": settings.mode,
      "face_detector": effective["face_backend"] if settings.mode == "2d" else None,
      "clips": records, "max_frames": max((r["frames"] for r in records), default=0),
      "no_face": [r["name"] for r in records if r["face"] is False], "failed": failed,
  }
  atomic_write_text(os.path.join(cache_dir, MANIFEST_FILE), json.dumps(manifest, indent=1))
  seconds = time.monotonic() - start
  computed = sum(not r.get("failed") for r in results)
  log(f"cremad preprocess: {computed} clips computed in {seconds:.1f} s "
      f"({len(todo) / max(seconds, 1e-9):.2f} clips/s); cache has {len(records)} clips, "
      f"{len(manifest['no_face'])} without a detected face (centre crop), {len(failed)} failed"
      + (f": {', '.join(f['name'] for f in failed)}" if failed else ""))
  return manifest


# -------------------------------------------------------------------------------------------
# Reading: grain's RandomAccessDataSource.


class CachedClips:
  """The cached clips as a grain random-access data source (`grain.MapDataset.source(...)`).

  Items are dicts of numpy arrays for one clip (S = image_size):
    kind: uint8 images, by mode, kind and layout:
      2D:            vision [S, S, 3], audio [S, S, 3], multimodal [S, 2S, 3] (face | spec)
      3D 'cnn':      [F, S, S, 3] / [F, S, S, 3] / [F, S, 2S, 3] (frame | chunk), F =
                     max_frames, frames past the clip's end blank (zeros); a longer clip is cut
      3D 'videomae': [N, S, S, 3] each, N = num_frames evenly spaced frames
                     (`labelled_video.sample_frame_indices`); multimodal = the frame resized to
                     208 wide | the chunk resized to 16 wide
    'frames': int32, the clip's true frame count (at most max_frames; 1 in 2D)
    'name': str, the clip's name
  The spectrogram images are gray, repeated over the 3 channels.
  """

  def __init__(self, cache_dir: str, kind: str = "multimodal", *, layout: str = "cnn",
               max_frames: int | None = None, num_frames: int = 32,
               names: Sequence[str] | None = None):
    """Opens a finished cache.

    Args:
      cache_dir: a directory written by `preprocess`.
      kind: 'vision', 'audio' or 'multimodal'.
      layout: 3D input layout, 'cnn' (padded to max_frames) or 'videomae' (num_frames frames).
      max_frames: 3D 'cnn' length; default the longest clip in the cache (the paper's 135).
      num_frames: 3D 'videomae' frames (the paper's 32).
      names: the clips to serve, in this order (e.g. a split); default every cached clip.

    Raises:
      FileNotFoundError: no manifest.
      ValueError: an unknown kind or layout.
      KeyError: a name that is not in the cache (the message says whether it failed).
    """
    if kind not in KINDS:
      raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if layout not in LAYOUTS:
      raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    manifest = read_manifest(cache_dir)
    frames = {r["name"]: r["frames"] for r in manifest["clips"]}
    if names is None:
      names = sorted(frames)
    missing = [n for n in names if n not in frames]
    if missing:
      failed = {f["name"]: f for f in manifest["failed"]}
      why = [f"{n} (failed: {failed[n]['file']}: {failed[n]['reason']})" if n in failed else n
             for n in missing[:5]]
      raise KeyError(f"{len(missing)} clip(s) not in the cache {cache_dir}: {', '.join(why)}")
    self.cache_dir, self.kind, self.layout = cache_dir, kind, layout
    self.mode = manifest["mode"]
    self.image_size = manifest["settings"]["image_size"]
    self.names = list(names)
    self.frames = np.array([frames[n] for n in self.names], np.int32)
    self.max_frames = int(max_frames or manifest["max_frames"] or 1)
    self.num_frames = num_frames

  def __len__(self) -> int:
    return len(self.names)

  def __repr__(self) -> str:
    return (f"CachedClips({self.cache_dir!r}, kind={self.kind!r}, mode={self.mode!r}, "
            f"layout={self.layout!r}, {len(self)} clips)")

  def _load(self, stream: str, name: str) -> np.ndarray:
    return np.load(os.path.join(self.cache_dir, stream, f"{name}.npy"), mmap_mode="r")

  def _images(self, name: str, frames: np.ndarray | slice | None) -> np.ndarray:
    """The kind's images, [S, W, 3] (2D, frames None) or [len(frames), S, W, 3]."""
    parts = []
    if self.kind != "audio":
      vision = self._load("vision", name)
      parts.append(np.asarray(vision if frames is None else vision[frames]))
    if self.kind != "vision":
      audio = self._load("audio", name)
      audio = np.asarray(audio if frames is None else audio[frames])
      parts.append(np.repeat(audio[..., None], 3, axis=-1))
    if len(parts) == 2 and self.mode == "3d" and self.layout == "videomae":
      size = self.image_size
      parts = [np.stack([_resize(image, width, size) for image in part])
               for part, width in zip(parts, videomae_widths(size))]
    return np.concatenate(parts, axis=-2)

  def __getitem__(self, index: int) -> dict[str, Any]:
    """One clip's dict (class docstring)."""
    index = range(len(self))[index]
    name, count = self.names[index], int(self.frames[index])
    if self.mode == "2d":
      images = self._images(name, None)
    elif self.layout == "videomae":
      images = self._images(name, sample_frame_indices(count, self.num_frames))
    else:
      count = min(count, self.max_frames)
      clip = self._images(name, slice(0, count))
      images = np.zeros((self.max_frames, *clip.shape[1:]), np.uint8)
      images[:count] = clip
    return {self.kind: images, "frames": np.int32(count), "name": name}
