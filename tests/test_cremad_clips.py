"""CREMA-D clip names, the clip listing, the paper's split counts, split files, and the synthetic
clips in the real layout (FLV with FLV1 video and an MP3 track, 16 kHz WAV) read back with PyAV
and the stdlib `wave` module; the emotion signal is measured on the decoded data with numpy."""

import itertools
import json
import wave

import numpy as np
import pytest

from mmjax.projects.cremad import clips

NAMES = ["1001_IEO_HAP_HI", "1001_TIE_SAD_XX", "1091_WSI_NEU_XX", "1050_DFA_ANG_LO"]


def _fake_names(count):
  """`count` distinct valid names, in a scrambled order."""
  fields = itertools.product(clips.ACTORS, clips.SENTENCES, clips.EMOTIONS, clips.INTENSITIES)
  names = [f"{a}_{s}_{e}_{i}" for a, s, e, i in itertools.islice(fields, count)]
  return [names[i] for i in np.random.default_rng(5).permutation(count)]


def test_parse_valid_names_and_paths():
  parsed = clips.parse_clip_name("1001_IEO_HAP_HI")
  assert parsed == clips.ClipName(1001, "IEO", "HAP", "HI")
  assert parsed.name == "1001_IEO_HAP_HI" and parsed.label == 3
  assert clips.parse_clip_name("/data/VideoFlash/1091_WSI_SAD_XX.flv").label == 5
  assert clips.parse_clip_name("AudioWAV/1064_TIE_DIS_MD.wav").actor == 1064
  for name in NAMES:
    assert clips.parse_clip_name(name).name == name


@pytest.mark.parametrize("name, message", [
  ("1001_IEO_HAP.flv", "not a CREMA-D clip name"),
  ("1001_IEO_HAP_HI_2.wav", "not a CREMA-D clip name"),
  ("ab01_IEO_HAP_HI.wav", "not a CREMA-D clip name"),
  ("1001_ieo_HAP_HI.wav", "not a CREMA-D clip name"),
  ("1001_XYZ_HAP_HI.flv", "unknown sentence code 'XYZ'; allowed: IEO, TIE"),
  ("1001_IEO_JOY_HI.flv", "unknown emotion code 'JOY'; allowed: ANG, DIS, FEA, HAP, NEU, SAD"),
  ("1001_IEO_HAP_VH.flv", "unknown intensity code 'VH'; allowed: LO, MD, HI, XX"),
  ("1000_IEO_HAP_HI.flv", "actor 1000 outside 1001..1091"),
  ("1092_IEO_HAP_HI.flv", "actor 1092 outside 1001..1091"),
])
def test_bad_names_raise_naming_the_file(name, message):
  path = f"/data/VideoFlash/{name}"
  with pytest.raises(ValueError, match=message) as error:
    clips.parse_clip_name(path)
  assert str(error.value).startswith(path)


def test_dropped_clips_are_three_of_the_readme_problem_files():
  assert len(clips.DROPPED) == 3 and len(clips.KNOWN_ISSUES) == 4
  assert set(clips.DROPPED) < set(clips.KNOWN_ISSUES)
  for name in clips.KNOWN_ISSUES:
    clips.parse_clip_name(name)


def _tree(root, videos, audios):
  for folder, ext, names in (("VideoFlash", ".flv", videos), ("AudioWAV", ".wav", audios)):
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in names:
      (root / folder / f"{name}{ext}").write_bytes(b"")


def test_list_clips_lists_every_exclusion_with_its_reason(tmp_path):
  good = ["1001_IEO_HAP_HI", "1002_TIE_SAD_XX", "1003_WSI_NEU_XX"]
  _tree(tmp_path, good + ["1004_DFA_ANG_XX", "1076_MTI_SAD_XX", "1001_IEO_JOY_HI"],
        good + ["1005_ITS_FEA_XX", "1076_MTI_SAD_XX", "1001_IEO_JOY_HI"])
  (tmp_path / "VideoFlash" / "notes.txt").write_text("not a clip")
  lines = []
  listed = clips.list_clips(tmp_path, bad_names="skip", log=lines.append)
  assert [c.name for c in listed] == good
  first = listed[0]
  assert (first.actor, first.emotion) == (1001, clips.EMOTIONS.index("HAP"))
  assert first.video == tmp_path / "VideoFlash" / "1001_IEO_HAP_HI.flv"
  assert first.audio == tmp_path / "AudioWAV" / "1001_IEO_HAP_HI.wav"
  excluded = dict(clips.scan_clips(tmp_path, bad_names="skip").excluded)
  assert set(excluded) == {"1004_DFA_ANG_XX", "1005_ITS_FEA_XX", "1076_MTI_SAD_XX",
                           "1001_IEO_JOY_HI"}
  assert excluded["1004_DFA_ANG_XX"].startswith("no audio file")
  assert "AudioWAV/1004_DFA_ANG_XX.wav" in excluded["1004_DFA_ANG_XX"]
  assert excluded["1005_ITS_FEA_XX"].startswith("no video file")
  assert excluded["1076_MTI_SAD_XX"].startswith("dropped: README")
  assert "unknown emotion code 'JOY'" in excluded["1001_IEO_JOY_HI"]
  assert lines[0].endswith("3 clips, 4 excluded")
  assert sorted(line.split()[1].rstrip(":") for line in lines[1:]) == sorted(excluded)
  with pytest.raises(ValueError, match=r"1001_IEO_JOY_HI\.(flv|wav): unknown emotion"):
    clips.list_clips(tmp_path, log=lines.append)
  nothing_dropped = clips.scan_clips(tmp_path, bad_names="skip", dropped={}).clips
  assert "1076_MTI_SAD_XX" in [c.name for c in nothing_dropped]


def test_list_clips_names_a_missing_folder(tmp_path):
  (tmp_path / "VideoFlash").mkdir()
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "AudioWAV")):
    clips.list_clips(tmp_path, log=lambda _: None)


@pytest.mark.parametrize("total, fraction, train, test", [
  (7442, 0.3, 5209, 2233),  # the paper's 2D pipelines: 70/30 of all clips
  (7439, 0.2, 5951, 1488),  # the paper's 3D pipelines: 80/20 of the good clips
])
def test_random_split_counts_match_the_paper(total, fraction, train, test):
  names = _fake_names(total)
  split = clips.random_split(names, fraction, seed=0)
  assert (len(split["train"]), len(split["test"])) == (train, test)
  assert sorted(split["train"] + split["test"]) == sorted(names)
  again = clips.random_split(sorted(names), fraction, seed=0)
  assert again == split  # independent of the input order
  other = clips.random_split(names, fraction, seed=1)
  assert other["test"] != split["test"]


def test_random_split_rejects_repeats_and_bad_fractions():
  with pytest.raises(ValueError, match="repeat"):
    clips.random_split(NAMES + NAMES[:1], 0.2, seed=0)
  with pytest.raises(ValueError, match="test_fraction"):
    clips.random_split(NAMES, 1.0, seed=0)


def test_actor_split_is_actor_disjoint_and_deterministic():
  names = _fake_names(2000)  # actors 1001..1007 (288 names each, 272 of the last)
  names += [f"{actor}_IEO_HAP_HI" for actor in range(1008, 1021)]
  split = clips.actor_split(names, 0.25, seed=3)
  actors = {key: {clips.parse_clip_name(n).actor for n in split[key]} for key in split}
  assert not actors["train"] & actors["test"]
  assert len(actors["train"] | actors["test"]) == 20 and len(actors["test"]) == 5
  assert sorted(split["train"] + split["test"]) == sorted(names)
  assert clips.actor_split(list(reversed(names)), 0.25, seed=3) == split
  assert clips.actor_split(names, 0.25, seed=4) != split


def test_split_file_round_trip_and_errors(tmp_path):
  path = tmp_path / "splits" / "random_80_20.json"
  splits = clips.random_split(NAMES, 0.25, seed=0)
  meta = {"kind": "random", "test_fraction": 0.25, "seed": 0}
  clips.write_split_file(path, splits, meta)
  content = json.loads(path.read_text())
  assert set(content) == {"meta", "splits"} and content["splits"] == splits
  read = clips.read_split_file(path, known=NAMES)
  assert read.splits == splits and read.meta == meta
  with pytest.raises(ValueError, match=f"{path}: clip '1001_IEO_HAP_HI' is in 'train' and"):
    clips.write_split_file(path, {"train": NAMES, "test": NAMES[:1]}, meta)
  with pytest.raises(ValueError, match=f"{path}: split 'test' has an unknown clip name"):
    clips.write_split_file(path, {"train": NAMES, "test": ["1001_IEO_HAP"]}, meta)
  assert clips.read_split_file(path).splits == splits  # the failed writes left it alone
  path.write_text(json.dumps({"meta": {}, "splits": {"train": NAMES[:2], "test": NAMES[1:]}}))
  with pytest.raises(ValueError, match=f"{path}: clip '1001_TIE_SAD_XX' is in 'train' and"):
    clips.read_split_file(path)
  path.write_text(json.dumps({"meta": {}, "splits": {"train": ["1001_IEO_XXX_HI"]}}))
  with pytest.raises(ValueError, match=f"{path}: split 'train' has an unknown clip name"):
    clips.read_split_file(path)
  path.write_text(json.dumps({"meta": {}, "splits": {"train": ["1002_IEO_HAP_HI"]}}))
  with pytest.raises(ValueError, match=f"{path}: .*'1002_IEO_HAP_HI', which is not listed"):
    clips.read_split_file(path, known=NAMES)
  path.write_text("{not json")
  with pytest.raises(ValueError, match=f"{path}: not a JSON split file"):
    clips.read_split_file(path)
  path.write_text(json.dumps({"train": NAMES}))
  with pytest.raises(ValueError, match=f"{path}: expected"):
    clips.read_split_file(path)


# Synthetic clips -----------------------------------------------------------------------------

ACTORS, SENTENCES, FPS, SECONDS = (1001, 1002, 1003), ("IEO", "TIE"), 30, (1.0, 2.0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  pytest.importorskip("av")
  from mmjax.projects.cremad import synthetic_clips  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("cremad")
  names = synthetic_clips.write_synthetic_cremad(root, actors=ACTORS, sentences=SENTENCES,
                                                 fps=FPS, seconds=SECONDS, log=lambda _: None)
  return root, names


def _wav(root, name):
  with wave.open(str(root / "AudioWAV" / f"{name}.wav")) as reader:
    assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
    rate = reader.getframerate()
    pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
  return pcm.astype(np.float64) / 32768, rate


def _video(root, name):
  import av  # pylint: disable=import-outside-toplevel
  with av.open(str(root / "VideoFlash" / f"{name}.flv")) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  return np.stack(frames)


def test_synthetic_layout_names_and_coverage(synthetic):
  root, names = synthetic
  assert len(names) == len(ACTORS) * len(SENTENCES) * len(clips.EMOTIONS)
  listed = clips.list_clips(root, log=lambda _: None)
  assert [c.name for c in listed] == names
  parsed = [clips.parse_clip_name(n) for n in names]
  assert {p.emotion for p in parsed} == set(clips.EMOTIONS)
  assert {p.intensity for p in parsed} == {"LO", "MD", "HI", "XX"}
  assert {p.actor for p in parsed} == set(ACTORS)


def test_synthetic_files_decode(synthetic):
  import av  # pylint: disable=import-outside-toplevel
  root, names = synthetic
  for name in names[:: 5]:
    pcm, rate = _wav(root, name)
    seconds = len(pcm) / rate
    assert rate == 16000 and SECONDS[0] - 0.01 <= seconds <= SECONDS[1] + 0.01
    with av.open(str(root / "VideoFlash" / f"{name}.flv")) as container:
      assert container.format.name == "flv"
      video, audio = container.streams.video[0], container.streams.audio[0]
      assert video.codec_context.name == "flv" and audio.codec_context.name.startswith("mp3")
      assert (video.codec_context.width, video.codec_context.height) == (96, 72)
      frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
    assert abs(len(frames) - FPS * seconds) <= 1
    assert frames[0].shape == (72, 96, 3)
    with av.open(str(root / "VideoFlash" / f"{name}.flv")) as container:
      track = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
      track_rate = container.streams.audio[0].rate
    assert abs(len(track) / track_rate - seconds) < 0.15  # MP3 pads up to a frame and a delay
    assert 0.5 < np.sqrt(np.mean(track ** 2)) / np.sqrt(np.mean(pcm ** 2)) < 2.0


def _pitch_and_loudness(pcm, rate):
  """Median strongest-frequency (60..1000 Hz) over voiced 64 ms frames, and the voiced RMS."""
  size = 1024
  frames = pcm[: len(pcm) // size * size].reshape(-1, size)
  rms = np.sqrt(np.mean(frames ** 2, axis=1))
  voiced = frames[rms > 0.5 * rms.max()]
  spectrum = np.abs(np.fft.rfft(voiced * np.hanning(size), axis=1))
  freqs = np.fft.rfftfreq(size, 1 / rate)
  band = (freqs >= 60) & (freqs <= 1000)
  return np.median(freqs[band][np.argmax(spectrum[:, band], axis=1)]), np.sqrt(np.mean(voiced ** 2))


def test_synthetic_voice_carries_the_emotion(synthetic):
  root, _ = synthetic
  for actor in ACTORS:
    pitch, loud = {}, {}
    for emotion in clips.EMOTIONS:
      pitch[emotion], loud[emotion] = _pitch_and_loudness(*_wav(root, f"{actor}_TIE_{emotion}_XX"))
    assert pitch["HAP"] > 1.25 * pitch["NEU"] > 1.25 * pitch["SAD"], pitch
    assert abs(pitch["HAP"] / pitch["FEA"] - 1) < 0.1, pitch  # the audio confuses HAP / FEA
    assert loud["ANG"] > 1.3 * loud["DIS"] and loud["NEU"] > 1.3 * loud["SAD"], loud
    assert pitch["ANG"] > 1.15 * pitch["DIS"], pitch  # ... and separates ANG / DIS


def _mouth(frame):
  """(curvature, opening) of the mouth in a decoded frame [height, width, 3]: the face is the
  region away from the background colour, the mouth the non-skin pixels in its lower part;
  curvature > 0 when the corners sit lower than the middle (image rows grow downwards)."""
  frame = frame.astype(np.float64)
  background = np.median(frame[:, :3].reshape(-1, 3), axis=0)
  face = np.linalg.norm(frame - background, axis=-1) > 30
  rows, cols = np.nonzero(face)
  cy, cx, r = rows.mean(), cols.mean(), (rows.max() - rows.min()) / 2
  skin = np.median(frame[face], axis=0)
  lower = np.zeros_like(face)
  top, bottom = int(cy + 0.15 * r), int(cy + 0.85 * r)
  left, right = int(cx - 0.3 * r), int(cx + 0.3 * r) + 1
  lower[top:bottom, left:right] = True
  mouth = lower & face & (np.linalg.norm(frame - skin, axis=-1) > 50)
  ys, xs = np.nonzero(mouth)
  u = (xs - cx) / (0.3 * r)
  curvature = np.polyfit(u, ys, 2)[0] / r
  opening = mouth.sum(axis=0).max() / r
  return curvature, opening


def test_synthetic_face_carries_the_emotion(synthetic):
  root, _ = synthetic
  for actor in ACTORS:
    mouth = {}  # averaged over the last 10 frames (the expression is on, the lips move)
    for emotion in clips.EMOTIONS:
      frames = _video(root, f"{actor}_TIE_{emotion}_XX")[-10:]
      mouth[emotion] = np.mean([_mouth(frame) for frame in frames], axis=0)
    assert mouth["HAP"][0] < -0.03 < 0.03 < mouth["SAD"][0], mouth  # smile vs corners down
    assert abs(mouth["NEU"][0]) < 0.03 and abs(mouth["ANG"][0]) < 0.03, mouth
    assert mouth["FEA"][1] > 2 * max(mouth["HAP"][1], mouth["NEU"][1]), mouth  # open mouth
    assert abs(mouth["ANG"][1] - mouth["DIS"][1]) < 0.1, mouth  # the video confuses ANG / DIS


def test_synthetic_is_deterministic(synthetic, tmp_path):
  from mmjax.projects.cremad import synthetic_clips  # pylint: disable=import-outside-toplevel
  root, _ = synthetic
  names = synthetic_clips.write_synthetic_cremad(tmp_path, actors=ACTORS[:1], sentences=("TIE",),
                                                 fps=FPS, seconds=SECONDS, log=lambda _: None)
  for name in names:
    np.testing.assert_array_equal(_wav(tmp_path, name)[0], _wav(root, name)[0])
    np.testing.assert_array_equal(_video(tmp_path, name), _video(root, name))
