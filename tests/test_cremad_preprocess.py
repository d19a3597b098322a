"""CREMA-D preprocessing: decoding, spectrograms, face crops, and the cached 2D/3D datasets.

Media files are written here: FLV (codec 'flv', 30 fps, each frame's index drawn as two gray
patches, a PCM audio track) with PyAV, WAV (16 kHz) with the stdlib `wave`. The face image is
matplotlib's sample photograph of Grace Hopper.
"""

import json
import os
import time
import wave

import av
import grain
import librosa
import numpy as np
import pytest
import scipy.signal
from PIL import Image

from mmjax.data import av_decode, spectrogram
from mmjax.data.labelled_video import sample_frame_indices
from mmjax.projects.cremad import faces, preprocess

FPS, FRAMES, WIDTH, HEIGHT = 30, 36, 128, 96
AUDIO_RATE_FLV, AUDIO_RATE_WAV = 22050, 16000


def _index_frame(i: int, background: np.ndarray | None = None) -> np.ndarray:
  """A frame whose index is readable after lossy coding: 16 + 32 * digit in two patches."""
  frame = np.full((HEIGHT, WIDTH, 3), 60, np.uint8) if background is None else background.copy()
  frame[:16, :32] = 16 + 32 * (i // 8)
  frame[:16, 32:64] = 16 + 32 * (i % 8)
  return frame


def _frame_index(frame: np.ndarray) -> int:
  high, low = (int(round((frame[4:12, x:x + 24].mean() - 16) / 32)) for x in (4, 36))
  return 8 * high + low


def _tone(seconds: float, rate: int, seed: int) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  noise = np.random.default_rng(seed).standard_normal(t.size)
  return 0.4 * np.sin(2 * np.pi * (300 + 900 * t) * t) + 0.05 * noise


def _write_flv(path, frames: list[np.ndarray], audio: np.ndarray | None = None) -> None:
  with av.open(str(path), "w") as container:
    video = container.add_stream("flv", rate=FPS)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.bit_rate = 4_000_000
    sound = None
    if audio is not None:
      sound = container.add_stream("pcm_s16le", rate=AUDIO_RATE_FLV)
      sound.layout = "mono"
    for frame in frames:
      container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(video.encode())
    if sound is not None:
      pcm = (audio * 32767).astype(np.int16)
      for start in range(0, pcm.size, 1024):
        chunk = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024], format="s16",
                                           layout="mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE_FLV, start
        container.mux(sound.encode(chunk))
      container.mux(sound.encode())


def _write_wav(path, audio: np.ndarray, rate: int = AUDIO_RATE_WAV) -> np.ndarray:
  pcm = (audio * 32767).astype(np.int16)
  with wave.open(str(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.tobytes())
  return pcm


def _grace_hopper() -> np.ndarray:
  cbook = pytest.importorskip("matplotlib.cbook")
  path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
  return np.asarray(Image.open(path).convert("RGB"))


def _resize(image, width, height):
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  """Three clips (a face with a WAV, shapes with a WAV, shapes with audio only in the FLV) and
  an undecodable one."""
  root = tmp_path_factory.mktemp("cremad_media")
  face = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
  face[14:89, 32:96] = _resize(_grace_hopper(), 64, 75)
  shapes = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
  shapes[40:80, 70:120] = (20, 120, 220)
  files = {}
  for name, background, frames, wav in (("1001_DFA_ANG_XX", face, FRAMES, True),
                                        ("1002_IEO_HAP_HI", shapes, 30, True),
                                        ("1003_TIE_SAD_LO", shapes, 25, False)):
    audio = _tone(frames / FPS, AUDIO_RATE_FLV, seed=len(files))
    video = root / f"{name}.flv"
    _write_flv(video, [_index_frame(i, background) for i in range(frames)], audio)
    wav_path = root / f"{name}.wav" if wav else ""
    if wav:
      _write_wav(wav_path, _tone(frames / FPS, AUDIO_RATE_WAV, seed=10 + len(files)))
    files[name] = (name, video, wav_path)
  broken = root / "1004_IWW_FEA_MD.flv"
  broken.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
  files["broken"] = ("1004_IWW_FEA_MD", broken, root / "1001_DFA_ANG_XX.wav")
  return files


# -------------------------------------------------------------------------------------------
# Decoding.


def test_video_frames_at_24_fps_follow_the_pts(media):
  path = media["1001_DFA_ANG_XX"][1]
  with av.open(str(path)) as container:  # the stored timestamps, by hand
    stream = container.streams.video[0]
    pts = sorted(float(p.pts * stream.time_base) for p in container.demux(stream)
                 if p.pts is not None)
  assert len(pts) == FRAMES
  end = pts[-1] + 1 / FPS  # FLV stores no frame durations: the last lasts 1 / average rate
  every = av_decode.read_video_frames(str(path))
  assert every.shape == (FRAMES, HEIGHT, WIDTH, 3) and every.dtype == np.uint8
  assert [_frame_index(f) for f in every] == list(range(FRAMES))
  for fps in (24, 60):
    times = [k / fps for k in range(int(np.ceil(end * fps)) + 1) if k / fps < end - 1e-9]
    expected = [max(i for i, t in enumerate(pts) if t <= time_ + 1e-9) for time_ in times]
    frames = av_decode.read_video_frames(str(path), fps=fps)
    assert [_frame_index(f) for f in frames] == expected
  frames_24 = av_decode.read_video_frames(str(path), fps=24)
  assert len(frames_24) == 29  # k / 24 < 1.2003
  small = av_decode.read_video_frames(str(path), fps=24, size=(50, 40))
  assert small.shape == (29, 40, 50, 3)
  np.testing.assert_array_equal(small[10], _resize(frames_24[10], 50, 40))


def test_middle_frame(media):
  for name, count in (("1001_DFA_ANG_XX", 36), ("1003_TIE_SAD_LO", 25)):
    frame = av_decode.middle_frame(str(media[name][1]))
    assert frame.shape == (HEIGHT, WIDTH, 3)
    assert _frame_index(frame) == count // 2
    np.testing.assert_array_equal(frame, av_decode.read_video_frames(str(media[name][1]))[
        count // 2])


def test_read_audio(media, tmp_path):
  name, video, wav = media["1002_IEO_HAP_HI"]
  with wave.open(str(wav)) as f:
    pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16)
  raw = av_decode.read_audio(str(wav), None)
  np.testing.assert_array_equal(raw, pcm / np.float32(32768))
  t = np.arange(16000) / 16000  # band-limited (< 4 kHz), where resamplers agree
  smooth = _write_wav(tmp_path / "smooth.wav", 0.3 * np.sin(2 * np.pi * 440 * t)
                      + 0.2 * np.sin(2 * np.pi * 3000 * t + 1))
  resampled = av_decode.read_audio(str(tmp_path / "smooth.wav"), 22050)
  assert resampled.dtype == np.float32 and resampled.size == 22050
  reference = scipy.signal.resample_poly(smooth / 32768, 441, 320)  # an independent resampler
  np.testing.assert_allclose(resampled[500:-500], reference[500:-500], atol=1e-3)
  from_flv = av_decode.read_audio(str(video), AUDIO_RATE_FLV)  # the FLV's PCM track
  expected = (_tone(30 / FPS, AUDIO_RATE_FLV, seed=1) * 32767).astype(np.int16) / 32768
  np.testing.assert_array_equal(from_flv, expected.astype(np.float32))
  stereo = np.stack([pcm, pcm // 2], axis=1)  # channels are averaged
  with wave.open(str(tmp_path / "stereo.wav"), "wb") as f:
    f.setnchannels(2)
    f.setsampwidth(2)
    f.setframerate(16000)
    f.writeframes(stereo.astype(np.int16).tobytes())
  np.testing.assert_allclose(av_decode.read_audio(str(tmp_path / "stereo.wav"), None),
                             stereo.mean(axis=1) / 32768, atol=1e-7)


def test_undecodable_files_raise_a_value_error_naming_them(media, tmp_path):
  broken = str(media["broken"][1])
  with pytest.raises(av_decode.DecodeError, match="1004_IWW_FEA_MD.flv") as info:
    av_decode.read_video_frames(broken, fps=24)
  assert isinstance(info.value, ValueError) and info.value.path == broken and info.value.reason
  with pytest.raises(ValueError, match="1004_IWW_FEA_MD.flv"):
    av_decode.middle_frame(broken)
  bad_wav = tmp_path / "bad.wav"
  bad_wav.write_bytes(b"RIFF not really a wav file")
  with pytest.raises(av_decode.DecodeError, match="bad.wav"):
    av_decode.read_audio(str(bad_wav), 22050)
  with pytest.raises(av_decode.DecodeError, match="no audio stream"):
    silent = tmp_path / "silent.flv"
    _write_flv(silent, [_index_frame(0)])
    av_decode.read_audio(str(silent), 22050)


# -------------------------------------------------------------------------------------------
# Spectrograms.


def test_mel_spectrogram_matches_librosa_and_numpy():
  audio = _tone(0.6, 22050, seed=3).astype(np.float32)
  spec = spectrogram.mel_spectrogram_db(audio)
  assert spec.shape == (512, 1 + audio.size // 512) and spec.dtype == np.float32
  direct = librosa.power_to_db(
      librosa.feature.melspectrogram(y=audio, sr=22050, n_fft=2048, hop_length=512, n_mels=512),
      ref=np.max)
  np.testing.assert_allclose(spec, direct, rtol=0, atol=1e-5)
  # numpy: centred frames (zero padding), periodic Hann, |rfft|^2, mel filterbank, dB re max.
  padded = np.pad(audio.astype(np.float64), 1024)
  frames = np.lib.stride_tricks.sliding_window_view(padded, 2048)[::512]
  window = scipy.signal.get_window("hann", 2048, fftbins=True)
  power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
  mel = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=512, dtype=np.float64) @ power.T
  db = 10 * np.log10(np.maximum(mel, 1e-10) / mel.max())
  db = np.maximum(db, -80.0)
  np.testing.assert_allclose(spec, db, rtol=0, atol=1e-4)  # dB; float32 vs float64: ~6e-6
  assert spec.max() == 0 and spec.min() >= -80


def test_to_image_orientation_and_scaling():
  spec = np.full((6, 4), -80.0, np.float32)
  spec[0] = 0.0  # the lowest band loud
  spec[:, 0] = -40.0  # the first time step half way
  image = spectrogram.to_image(spec, 4, 6)  # no resampling
  assert image.shape == (6, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  expected = np.round((spec[::-1] + 80) / 80 * 255).astype(np.uint8)
  np.testing.assert_array_equal(image[..., 0], expected)
  assert image[-1, 1, 0] == 255 and image[0, 1, 0] == 0 and image[0, 0, 0] == 128
  big = spectrogram.to_image(spec, 40, 60)
  assert big.shape == (60, 40, 3)
  assert big[-1, 20, 0] == 255 and big[0, 20, 0] == 0  # low frequencies stay at the bottom
  np.testing.assert_array_equal(spectrogram.to_image(np.zeros((3, 3)), 5, 5), 0)
  ranged = spectrogram.to_image(spec, 4, 6, value_range=(-80.0, 80.0))
  assert ranged[-1, 1, 0] == 128


def test_time_chunks():
  spec = np.arange(20).reshape(2, 10)
  chunks = spectrogram.time_chunks(spec, 3)
  assert [c.shape[1] for c in chunks] == [4, 3, 3]
  np.testing.assert_array_equal(np.concatenate(chunks, axis=1), spec)
  short = spectrogram.time_chunks(spec[:, :3], 5)  # fewer columns than chunks: repeat
  assert [c.shape for c in short] == [(2, 1)] * 5
  assert [int(c[0, 0]) for c in short] == [0, 0, 1, 1, 2]
  assert len(spectrogram.time_chunks(spec, 10)) == 10
  with pytest.raises(ValueError, match="at least one chunk"):
    spectrogram.time_chunks(spec, 0)


# -------------------------------------------------------------------------------------------
# Faces.


def test_face_detection_on_a_photograph():
  photo = _grace_hopper()
  boxes = {}
  for backend in ("mtcnn", "opencv"):
    if backend == "mtcnn":
      pytest.importorskip("facenet_pytorch")
    detector = faces.FaceDetector(backend)
    assert detector.name == backend
    start = time.perf_counter()
    crop, found = faces.crop_face(photo, detector, size=64)
    print(f"{backend}: {time.perf_counter() - start:.3f} s for a 512x600 frame")
    box = detector.detect(photo)
    assert found and crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    left, top, right, bottom = box
    assert 200 < (left + right) / 2 < 330 and 150 < (top + bottom) / 2 < 300  # her face
    expected = _resize(photo[int(np.floor(top)):int(np.ceil(bottom)),
                             int(np.floor(left)):int(np.ceil(right))], 64, 64)
    np.testing.assert_array_equal(crop, expected)
    boxes[backend] = box
  (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes["mtcnn"], boxes["opencv"]
  inter = max(0, min(r1, r2) - max(l1, l2)) * max(0, min(b1, b2) - max(t1, t2))
  union = (r1 - l1) * (b1 - t1) + (r2 - l2) * (b2 - t2) - inter
  assert inter / union > 0.5


def test_no_face_falls_back_to_the_centre_square():
  frame = np.full((72, 96, 3), 180, np.uint8)
  frame[10:30, 5:40] = (255, 0, 0)
  frame[:, 12] = 0  # the first column of the centre square
  for backend in ("opencv", "auto"):
    crop, found = faces.crop_face(frame, faces.FaceDetector(backend), size=224)
    assert not found and crop.shape == (224, 224, 3)
    np.testing.assert_array_equal(crop, _resize(frame[:, 12:84], 224, 224))


def test_backend_choice(monkeypatch):
  installed = all(faces.importlib.util.find_spec(m)
                  for m in ("facenet_pytorch", "torch", "torchvision"))
  assert faces.resolve_backend("auto") == ("mtcnn" if installed else "opencv")
  assert faces.resolve_backend("opencv") == "opencv"
  monkeypatch.setattr(faces.importlib.util, "find_spec", lambda name: None)
  assert faces.resolve_backend("auto") == "opencv"
  assert faces.FaceDetector("auto").name == "opencv"
  with pytest.raises(ValueError, match="unknown face detector backend 'dlib'"):
    faces.FaceDetector("dlib")


# -------------------------------------------------------------------------------------------
# Preprocessing and the cache.


def _mtimes(cache_dir):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(cache_dir) for f in files if f.endswith(".npy")}


def _clips(media):
  return [media[k] for k in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1003_TIE_SAD_LO", "broken")]


def test_preprocess_2d(media, tmp_path):
  pytest.importorskip("facenet_pytorch")
  cache_dir = str(tmp_path / "cache2d")
  lines = []
  start = time.perf_counter()
  manifest = preprocess.preprocess(_clips(media), cache_dir, preprocess.Settings(mode="2d"),
                                   workers=2, log=lines.append)
  print(f"2D: {time.perf_counter() - start:.1f} s for 4 clips, workers=2\n" + "\n".join(lines))
  assert manifest["face_detector"] == "mtcnn"
  assert [c["name"] for c in manifest["clips"]] == ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI",
                                                    "1003_TIE_SAD_LO"]
  assert manifest["no_face"] == ["1002_IEO_HAP_HI", "1003_TIE_SAD_LO"]
  (failed,) = manifest["failed"]
  assert failed["name"] == "1004_IWW_FEA_MD" and failed["file"] == str(media["broken"][1])
  assert any("FAILED 1004_IWW_FEA_MD" in line for line in lines)
  assert any("clips/s, ETA" in line for line in lines)
  with open(os.path.join(cache_dir, "manifest.json")) as f:
    assert json.load(f) == manifest

  vision = preprocess.CachedClips(cache_dir, "vision")
  audio = preprocess.CachedClips(cache_dir, "audio")
  both = preprocess.CachedClips(cache_dir, "multimodal", names=["1003_TIE_SAD_LO",
                                                                "1001_DFA_ANG_XX"])
  assert len(vision) == 3 and len(both) == 2
  item = both[1]
  assert item["name"] == "1001_DFA_ANG_XX" and item["frames"] == 1
  assert item["multimodal"].shape == (224, 448, 3) and item["multimodal"].dtype == np.uint8
  np.testing.assert_array_equal(item["multimodal"][:, :224], vision[0]["vision"])
  np.testing.assert_array_equal(item["multimodal"][:, 224:], audio[0]["audio"])
  # The face clip: the middle frame at 224x224, cropped to the MTCNN box.
  middle = _resize(av_decode.middle_frame(str(media["1001_DFA_ANG_XX"][1])), 224, 224)
  face, found = faces.crop_face(middle, faces.FaceDetector("mtcnn"))
  assert found
  np.testing.assert_array_equal(vision[0]["vision"], face)
  # A clip without a face: the centre square (the whole 224x224 frame).
  middle = _resize(av_decode.middle_frame(str(media["1002_IEO_HAP_HI"][1])), 224, 224)
  np.testing.assert_array_equal(vision[1]["vision"], middle)
  # The spectrogram image of the WAV (16 kHz -> 22,050 Hz), and of the FLV track for clip 3.
  for index, path in ((0, media["1001_DFA_ANG_XX"][2]), (2, media["1003_TIE_SAD_LO"][1])):
    spec = spectrogram.mel_spectrogram_db(av_decode.read_audio(str(path), 22050))
    np.testing.assert_array_equal(audio[index]["audio"], spectrogram.to_image(spec, 224, 224))
  dataset = grain.MapDataset.source(audio)
  assert dataset[2]["name"] == "1003_TIE_SAD_LO" and audio[-1]["name"] == "1003_TIE_SAD_LO"
  with pytest.raises(KeyError, match="1004_IWW_FEA_MD.*failed"):
    preprocess.CachedClips(cache_dir, "vision", names=["1004_IWW_FEA_MD"])

  # Again: nothing recomputed (the broken clip is retried and fails again).
  before, lines = _mtimes(cache_dir), []
  again = preprocess.preprocess(_clips(media), cache_dir,  # fps does not matter in 2D
                                preprocess.Settings(mode="2d", fps=30), workers=2,
                                log=lines.append)
  assert _mtimes(cache_dir) == before and len(before) == 6
  assert "3 of 4 clips cached, 1 to do" in lines[0]
  assert again["clips"] == manifest["clips"] and again["failed"] == manifest["failed"]
  with pytest.raises(preprocess.CacheMismatchError, match="n_mels: 512 in the cache, 128 now") as e:
    preprocess.preprocess(_clips(media), cache_dir, preprocess.Settings(mode="2d", n_mels=128))
  assert cache_dir in str(e.value)


def test_preprocess_3d(media, tmp_path):
  cache_dir = str(tmp_path / "cache3d")
  settings = preprocess.Settings(mode="3d")
  lines = []
  start = time.perf_counter()
  manifest = preprocess.preprocess(_clips(media), cache_dir, settings, workers=2,
                                   log=lines.append)
  print(f"3D: {time.perf_counter() - start:.1f} s for 4 clips, workers=2\n" + "\n".join(lines))
  # k / 24 < end = last pts (rounded to ms in FLV) + 1/30: 1.2003, 1.0003, 0.8333 s
  counts = {"1001_DFA_ANG_XX": 29, "1002_IEO_HAP_HI": 25, "1003_TIE_SAD_LO": 20}
  assert {c["name"]: c["frames"] for c in manifest["clips"]} == counts
  assert manifest["max_frames"] == 29 and manifest["face_detector"] is None
  assert manifest["no_face"] == [] and [f["name"] for f in manifest["failed"]] == [
      "1004_IWW_FEA_MD"]

  name, video, wav = media["1002_IEO_HAP_HI"]
  frames = av_decode.read_video_frames(str(video), fps=24)
  spec = spectrogram.mel_spectrogram_db(av_decode.read_audio(str(wav), 22050))
  chunks = [spectrogram.to_image(c, 224, 224, (spec.min(), spec.max()))
            for c in spectrogram.time_chunks(spec, len(frames))]
  cnn = preprocess.CachedClips(cache_dir, "multimodal", max_frames=32)
  item = cnn[1]
  assert item["name"] == name and item["frames"] == 25
  assert item["multimodal"].shape == (32, 224, 448, 3) and item["multimodal"].dtype == np.uint8
  for t in (0, 13, 23):
    np.testing.assert_array_equal(item["multimodal"][t, :, :224], _resize(frames[t], 224, 224))
    np.testing.assert_array_equal(item["multimodal"][t, :, 224:], chunks[t])
  assert not item["multimodal"][25:].any()  # blank padding
  vision = preprocess.CachedClips(cache_dir, "vision")  # pads to the longest clip
  assert vision[2]["vision"].shape == (29, 224, 224, 3) and vision[2]["frames"] == 20
  assert preprocess.CachedClips(cache_dir, "audio", max_frames=16)[0]["frames"] == 16  # cut

  mae = preprocess.CachedClips(cache_dir, "multimodal", layout="videomae")
  item = mae[1]
  assert item["multimodal"].shape == (32, 224, 224, 3)
  for j, t in enumerate(sample_frame_indices(25, 32)):
    if j in (0, 17, 31):
      np.testing.assert_array_equal(item["multimodal"][j, :, :208],
                                    _resize(_resize(frames[t], 224, 224), 208, 224))
      np.testing.assert_array_equal(item["multimodal"][j, :, 208:], _resize(chunks[t], 16, 224))
  unimodal = preprocess.CachedClips(cache_dir, "audio", layout="videomae")[1]["audio"]
  np.testing.assert_array_equal(unimodal[5], chunks[sample_frame_indices(25, 32)[5]])

  # Resuming: a clip whose meta file is missing (a crash before it finished) is redone alone.
  os.remove(os.path.join(cache_dir, "meta", "1003_TIE_SAD_LO.json"))
  before = _mtimes(cache_dir)
  preprocess.preprocess(_clips(media)[:3], cache_dir, settings, workers=1, log=lambda _: None)
  after = _mtimes(cache_dir)
  changed = sorted(os.path.basename(p) for p in before if before[p] != after[p])
  assert changed == ["1003_TIE_SAD_LO.npy", "1003_TIE_SAD_LO.npy"]
  with pytest.raises(preprocess.CacheMismatchError, match="mode: '3d' in the cache, '2d' now"):
    preprocess.preprocess(_clips(media), cache_dir, preprocess.Settings(mode="2d"))
