"""CREMA-D clip names, the clip listing of the distributed layout, and train/test splits.

Layout (as distributed): `<root>/VideoFlash/<name>.flv` (video with its audio track) and
`<root>/AudioWAV/<name>.wav` (16 kHz mono 16-bit PCM), with `<name>` =
`<actor>_<sentence>_<emotion>_<intensity>`, e.g. `1001_IEO_HAP_HI`: actor 1001..1091 (91 actors),
one of 12 sentences, one of 6 emotions, intensity LO / MD / HI or XX (unspecified). 7,442 clips.

Dropped clips. The paper (section 5.6) removes "3 videos with recording issues" (7,442 -> 7,439)
without naming them. The dataset's README lists four problem files:
  1076_MTI_NEU_XX (video very short, no audio in the FLV; its WAV is fine),
  1076_MTI_SAD_XX (error picture, very short, no audio in FLV and WAV),
  1064_TIE_SAD_XX (file has no duration),
  1064_IEO_DIS_MD (one minute long, all emotional displays of "It's eleven o'clock").
`DROPPED` holds three of them (the 7,439 of the paper; which three the paper removed is not
stated, so this choice is an assumption) and `KNOWN_ISSUES` all four; `list_clips` takes either
(or any mapping name -> reason) as `dropped=`.

Splits (the paper: a random 70/30 split of all 7,442 clips for the 2D pipelines, 5,209 / 2,233;
a random 80/20 split of the 7,439 good clips for the 3D pipelines, 5,951 / 1,488): the test
split takes round(n * test_fraction) clips (halves rounded up) of a seeded permutation of the
sorted names; not stratified (the paper does not say). `actor_split` is an actor-disjoint
alternative (not in the paper). Split files are JSON: {"meta": {...}, "splits": {name: [...]}}.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ACTORS", "DROPPED", "EMOTIONS", "INTENSITIES", "KNOWN_ISSUES", "SENTENCES", "Clip",
           "ClipName", "Excluded", "Scan", "SplitFile", "actor_split", "list_clips",
           "parse_clip_name", "random_split", "read_split_file", "scan_clips", "write_split_file"]

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
INTENSITIES = ("LO", "MD", "HI", "XX")
ACTORS = range(1001, 1092)
VIDEO_DIR, VIDEO_EXT = "VideoFlash", ".flv"
AUDIO_DIR, AUDIO_EXT = "AudioWAV", ".wav"

KNOWN_ISSUES = {
  "1076_MTI_NEU_XX": "README: video very short, no audio in the FLV (the WAV is fine)",
  "1076_MTI_SAD_XX": "README: error picture, very short, no audio (FLV and WAV)",
  "1064_TIE_SAD_XX": "README: file has no duration",
  "1064_IEO_DIS_MD": "README: one minute long with every emotional display of sentence IEO",
}
DROPPED = {name: KNOWN_ISSUES[name]
           for name in ("1076_MTI_SAD_XX", "1064_TIE_SAD_XX", "1064_IEO_DIS_MD")}

_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


@dataclasses.dataclass(frozen=True)
class ClipName:
  """The four fields of a CREMA-D clip name."""
  actor: int
  sentence: str
  emotion: str
  intensity: str

  @property
  def name(self) -> str:
    return f"{self.actor}_{self.sentence}_{self.emotion}_{self.intensity}"

  @property
  def label(self) -> int:
    """The emotion's index in `EMOTIONS`."""
    return EMOTIONS.index(self.emotion)


@dataclasses.dataclass(frozen=True)
class Clip:
  """One listed clip: `emotion` is the index in `EMOTIONS`; `video` and `audio` are the files."""
  name: str
  actor: int
  emotion: int
  video: Path
  audio: Path


class Excluded(NamedTuple):
  name: str
  reason: str


class Scan(NamedTuple):
  clips: list[Clip]
  excluded: list[Excluded]


class SplitFile(NamedTuple):
  splits: dict[str, list[str]]
  meta: dict[str, Any]


def _check_code(field: str, value: str, allowed: Iterable[str], source: str) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(f"{source}: unknown {field} code {value!r}; allowed: {', '.join(allowed)}")


def parse_clip_name(name_or_path: str | os.PathLike) -> ClipName:
  """Parses `1001_IEO_HAP_HI` (a bare name, or a file path whose stem is the name).

  Raises ValueError naming the file for a name off the pattern `<actor>_<sentence>_<emotion>_
  <intensity>`, an unknown sentence / emotion / intensity code or an actor outside 1001..1091.
  """
  source = os.fspath(name_or_path)
  stem = Path(source).name
  if stem.lower().endswith((VIDEO_EXT, AUDIO_EXT, ".mp3")):
    stem = stem[:-4]
  match = _NAME.fullmatch(stem)
  if match is None:
    raise ValueError(f"{source}: not a CREMA-D clip name <actor>_<sentence>_<emotion>_<intensity> "
                     f"(e.g. 1001_IEO_HAP_HI; actor 1001..1091, sentence one of "
                     f"{', '.join(SENTENCES)}, emotion one of {', '.join(EMOTIONS)}, intensity "
                     f"one of {', '.join(INTENSITIES)})")
  actor_text, sentence, emotion, intensity = match.groups()
  actor = int(actor_text)
  if actor not in ACTORS:
    raise ValueError(f"{source}: actor {actor} outside {ACTORS.start}..{ACTORS.stop - 1}")
  _check_code("sentence", sentence, SENTENCES, source)
  _check_code("emotion", emotion, EMOTIONS, source)
  _check_code("intensity", intensity, INTENSITIES, source)
  return ClipName(actor, sentence, emotion, intensity)


def _stems(folder: Path, ext: str) -> dict[str, Path]:
  if not folder.is_dir():
    raise FileNotFoundError(f"CREMA-D folder {folder} not found (expected <root>/{VIDEO_DIR} with "
                            f"<name>{VIDEO_EXT} and <root>/{AUDIO_DIR} with <name>{AUDIO_EXT})")
  return {path.name[:-len(ext)]: path for path in folder.iterdir()
          if path.name.endswith(ext) and path.is_file()}


def scan_clips(root: str | os.PathLike, *, bad_names: str = "raise",
               dropped: Mapping[str, str] | None = None) -> Scan:
  """Lists `root`'s clips; every clip left out is in `excluded` with its reason.

  A clip is listed when `VideoFlash/<name>.flv` and `AudioWAV/<name>.wav` both exist, its name
  parses and it is not in `dropped` (default `DROPPED`). Files with other extensions are not
  clips and are ignored. bad_names: 'raise' (ValueError naming the file) or 'skip' (excluded).
  Clips are sorted by name.
  """
  if bad_names not in ("raise", "skip"):
    raise ValueError(f"bad_names must be 'raise' or 'skip', got {bad_names!r}")
  dropped = DROPPED if dropped is None else dropped
  root = Path(root)
  videos = _stems(root / VIDEO_DIR, VIDEO_EXT)
  audios = _stems(root / AUDIO_DIR, AUDIO_EXT)
  clips, excluded = [], []
  for name in sorted(videos.keys() | audios.keys()):
    video, audio = videos.get(name), audios.get(name)
    try:
      parsed = parse_clip_name(video or audio)
    except ValueError as error:
      if bad_names == "raise":
        raise
      excluded.append(Excluded(name, f"bad name: {error}"))
      continue
    if name in dropped:
      excluded.append(Excluded(name, f"dropped: {dropped[name]}"))
    elif audio is None:
      excluded.append(Excluded(name, f"no audio file {root / AUDIO_DIR / (name + AUDIO_EXT)}"))
    elif video is None:
      excluded.append(Excluded(name, f"no video file {root / VIDEO_DIR / (name + VIDEO_EXT)}"))
    else:
      clips.append(Clip(name, parsed.actor, parsed.label, video, audio))
  return Scan(clips, excluded)


def list_clips(root: str | os.PathLike, *, bad_names: str = "raise",
               dropped: Mapping[str, str] | None = None,
               log: Callable[[str], Any] = print) -> list[Clip]:
  """`scan_clips`' clips; logs a summary and one line per excluded clip with its reason."""
  clips, excluded = scan_clips(root, bad_names=bad_names, dropped=dropped)
  log(f"CREMA-D {root}: {len(clips)} clips, {len(excluded)} excluded")
  for name, reason in excluded:
    log(f"  excluded {name}: {reason}")
  return clips


def _unique_sorted(names: Iterable[str]) -> list[str]:
  names = list(names)
  ordered = sorted(set(names))
  if len(ordered) != len(names):
    repeated = sorted({name for name in names if names.count(name) > 1})
    raise ValueError(f"names repeat: {repeated[:5]}")
  return ordered


def _test_count(n: int, test_fraction: float) -> int:
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  return int(math.floor(n * test_fraction + 0.5))


def random_split(names: Iterable[str], test_fraction: float, seed: int) -> dict[str, list[str]]:
  """{'train', 'test'}: the first round(n * test_fraction) of a seeded permutation of the sorted
  names are the test split (independent of the input order). Each split is sorted."""
  ordered = _unique_sorted(names)
  order = np.random.default_rng(seed).permutation(len(ordered))
  n_test = _test_count(len(ordered), test_fraction)
  test = {ordered[i] for i in order[:n_test]}
  return {"train": [n for n in ordered if n not in test], "test": [n for n in ordered if n in test]}


def actor_split(names: Iterable[str], test_fraction: float, seed: int) -> dict[str, list[str]]:
  """Actor-disjoint {'train', 'test'}: round(actors * test_fraction) actors (at least one, and
  one left for training) of a seeded permutation of the sorted actors go to test."""
  ordered = _unique_sorted(names)
  actors = sorted({parse_clip_name(name).actor for name in ordered})
  if len(actors) < 2:
    raise ValueError(f"an actor split needs at least 2 actors, got {actors}")
  n_test = min(max(_test_count(len(actors), test_fraction), 1), len(actors) - 1)
  order = np.random.default_rng(seed).permutation(len(actors))
  test_actors = {actors[i] for i in order[:n_test]}
  is_test = {name: parse_clip_name(name).actor in test_actors for name in ordered}
  return {"train": [n for n in ordered if not is_test[n]],
          "test": [n for n in ordered if is_test[n]]}


def _check_splits(splits: Mapping[str, Iterable[str]], source: str,
                  known: Iterable[str] | None) -> dict[str, list[str]]:
  known = None if known is None else set(known)
  owner: dict[str, str] = {}
  checked = {}
  for split, names in splits.items():
    if not isinstance(split, str) or isinstance(names, (str, bytes)):
      raise ValueError(f"{source}: split {split!r} must map a name to a list of clip names")
    checked[split] = list(names)
    for name in checked[split]:
      if name in owner:
        where = "twice in" if owner[name] == split else f"in {owner[name]!r} and"
        raise ValueError(f"{source}: clip {name!r} is {where} split {split!r}")
      owner[name] = split
      try:
        parse_clip_name(name)
      except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: split {split!r} has an unknown clip name: {error}") from None
      if known is not None and name not in known:
        raise ValueError(f"{source}: split {split!r} names clip {name!r}, which is not listed")
  return checked


def write_split_file(path: str | os.PathLike, splits: Mapping[str, Iterable[str]],
                     meta: Mapping[str, Any] | None = None) -> None:
  """Writes {"meta": meta, "splits": splits} as JSON; a clip in two splits or a name that is not
  a CREMA-D name raises ValueError naming the file (nothing is written)."""
  path = Path(path)
  checked = _check_splits(splits, str(path), None)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"meta": dict(meta or {}), "splits": checked}, indent=1) + "\n")


def read_split_file(path: str | os.PathLike, known: Iterable[str] | None = None) -> SplitFile:
  """Reads a `write_split_file` file. ValueError naming the file for malformed JSON, a clip in two
  splits, a name that is not a CREMA-D name, or (when `known` is given) a name not in `known`."""
  path = Path(path)
  try:
    content = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not a JSON split file: {error}") from None
  if not isinstance(content, dict) or not isinstance(content.get("splits"), dict):
    raise ValueError(f"{path}: expected {{'meta': {{...}}, 'splits': {{'train': [...], ...}}}}")
  meta = content.get("meta", {})
  if not isinstance(meta, dict):
    raise ValueError(f"{path}: 'meta' must be an object, got {type(meta).__name__}")
  return SplitFile(_check_splits(content["splits"], str(path), known), meta)
