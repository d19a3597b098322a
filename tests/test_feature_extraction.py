"""Feature extraction into the MERTools layout (mmjax.features, launch/extract_features.py) with
tiny random models: HuBERT hidden states of .wav files, CLIP embeddings of frames from a Hugging
Face checkpoint and from an EmoVCLIP workdir. The files equal direct model calls, a rerun
computes only what is missing, bad inputs are named, and the launcher on 8 fake CPU devices
writes what one device does."""

import os
import re
import shutil
import sys

import jax
import numpy as np
import pytest
import soundfile
from helpers import hf_hubert, runs
from PIL import Image

from mmjax import features, parallel
from mmjax.data import labelled_video
from mmjax.data.mertools_layout import feature_file
from mmjax.models import clip, hubert
from mmjax.tasks import get_task
from mmjax.train import snapshot
from mmjax.train.steps import create_train_state
from mmjax.train.trainer import build_optimizer_for, checkpointer_for
from tests.conftest import load_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RATE = 16000
LENGTHS = {"s0": 1200, "s1": 1600, "s2": 2500, "s3": 900, "s4": 3000}  # samples
LAYERS = (0, 2)
ATOL = 1e-5


def _write_wav(path, samples: int, rate: int = RATE, seed: int = 0) -> None:
  waveform = np.random.default_rng(seed).normal(size=samples) * 0.1 + 0.05
  soundfile.write(str(path), waveform.astype(np.float32), rate, subtype="PCM_16")


def _load(root, extractor: str, level: str, name: str) -> np.ndarray:
  return np.load(feature_file(str(root), extractor, level, name))


def _files(root) -> dict:
  """{relative path: array} of every .npy under `root`."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = np.load(path)
  return out


def _assert_same_files(a, b) -> None:
  files_a, files_b = _files(a), _files(b)
  assert sorted(files_a) == sorted(files_b)
  for path, array in files_a.items():
    np.testing.assert_allclose(array, files_b[path], atol=ATOL, err_msg=path)


@pytest.fixture(name="hubert_checkpoint", scope="module")
def fixture_hubert_checkpoint(tmp_path_factory):
  """A tiny group-norm HuBERT (padding must stay out of its GroupNorm statistics) whose
  preprocessor normalises."""
  path = str(tmp_path_factory.mktemp("hubert"))
  reference = hf_hubert.write_checkpoint(path, seed=1)
  transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(path)
  return path, reference


@pytest.fixture(name="wav_dir", scope="module")
def fixture_wav_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("wav")
  for i, (name, samples) in enumerate(LENGTHS.items()):
    _write_wav(path / f"{name}.wav", samples, seed=i)
  (path / "notes.txt").write_text("not a sample")
  return str(path)


def _hubert_features(checkpoint, wav_dir, **kwargs):
  """Batches padded to multiples of 800 samples (50 ms), not 1 s: tests pad little."""
  return features.HubertFeatures(checkpoint[0], wav_dir, name="tiny-hubert", layers=LAYERS,
                                 bucket_seconds=0.05, **kwargs)


@pytest.fixture(name="hubert_root", scope="module")
def fixture_hubert_root(hubert_checkpoint, wav_dir, tmp_path_factory):
  """The HuBERT features of every .wav, extracted in batches of 2 on one device."""
  root = str(tmp_path_factory.mktemp("hubert_features"))
  names = features.sample_names(wav_dir, "wav")
  assert names == sorted(LENGTHS)
  extractor = _hubert_features(hubert_checkpoint, wav_dir)
  summary = features.extract(extractor, names, root, batch_size=2,
                             mesh=features.data_mesh(jax.devices()[:1]))
  assert (summary["written"], summary["skipped"]) == (5, 0)
  return root


def test_hubert_features_equal_transformers_on_each_utterance(hubert_checkpoint, wav_dir,
                                                              hubert_root):
  """Padded batches give each utterance's own hidden states (transformers' HubertModel on the
  utterance alone, normalised as its Wav2Vec2FeatureExtractor does)."""
  path, reference = hubert_checkpoint
  preprocess = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
  for name, samples in LENGTHS.items():
    waveform, _ = soundfile.read(os.path.join(wav_dir, f"{name}.wav"), dtype="float32")
    values = preprocess(waveform, sampling_rate=RATE, return_tensors="pt").input_values
    with torch.no_grad():
      hidden = reference(values, output_hidden_states=True).hidden_states
    for layer in LAYERS:
      frames = _load(hubert_root, f"tiny-hubert-L{layer}", "FRA", name)
      assert frames.shape == (hubert.num_frames(reference.config, samples), 32)
      assert frames.dtype == np.float32
      np.testing.assert_allclose(frames, hidden[layer][0].numpy(), atol=2e-5, err_msg=name)
      np.testing.assert_allclose(_load(hubert_root, f"tiny-hubert-L{layer}", "UTT", name),
                                 frames.mean(axis=0), atol=1e-6)


def test_a_rerun_computes_only_the_samples_with_missing_files(hubert_checkpoint, wav_dir,
                                                              hubert_root, tmp_path, caplog):
  root = str(tmp_path / "features")
  shutil.copytree(hubert_root, root)
  missing = feature_file(root, "tiny-hubert-L2", "FRA", "s3")
  os.remove(missing)
  kept = {path: os.stat(os.path.join(root, path)).st_mtime_ns for path in _files(root)
          if not path.endswith("s3.npy")}
  caplog.set_level("INFO", logger="mmjax")
  summary = features.extract(_hubert_features(hubert_checkpoint, wav_dir),
                             features.sample_names(wav_dir, "wav"), root, batch_size=2,
                             log_every=1)
  assert (summary["samples"], summary["skipped"], summary["written"]) == (5, 4, 1)
  assert "5 samples, 4 already done, 1 to compute" in caplog.text
  assert re.search(r"1/1 samples, [\d.]+ samples/s, ETA 0 s", caplog.text)
  _assert_same_files(root, hubert_root)
  assert {path: os.stat(os.path.join(root, path)).st_mtime_ns for path in kept} == kept


def test_audio_errors_name_the_file(hubert_checkpoint, tmp_path):
  _write_wav(tmp_path / "slow.wav", 1000, rate=8000)
  _write_wav(tmp_path / "short.wav", 15)  # one frame needs 20 samples
  root = str(tmp_path / "features")
  extractor = _hubert_features(hubert_checkpoint, str(tmp_path))
  slow = re.escape(str(tmp_path / "slow.wav"))
  with pytest.raises(ValueError, match=fr"{slow}: sampled at 8000 Hz, but the HuBERT "
                     r"checkpoint takes 16000 Hz .*preprocessor_config.json.*--resample"):
    features.extract(extractor, ["slow", "short"], root, batch_size=1)
  assert not os.path.exists(root)  # every header is checked before anything is computed
  with pytest.raises(ValueError, match=r"short.wav: 15 samples at 16000 Hz is shorter than the "
                     r"20 samples"):
    features.extract(extractor, ["short"], root, batch_size=1)
  with pytest.raises(FileNotFoundError, match=r"sample 'absent': .*absent.wav not found"):
    features.extract(extractor, ["absent"], root, batch_size=1)
  resampling = _hubert_features(hubert_checkpoint, str(tmp_path), resample=True, levels=["FRA"])
  features.extract(resampling, ["slow"], root, batch_size=1)
  assert _load(root, "tiny-hubert-L2", "FRA", "slow").shape == (199, 32)  # 2000 samples
  with pytest.raises(ValueError, match=r"--layers=0,3: expected distinct layers in 0..2"):
    features.HubertFeatures(hubert_checkpoint[0], str(tmp_path), name="x", layers=(0, 3))
  with pytest.raises(ValueError, match=r"--levels=UTT,SEQ"):
    _hubert_features(hubert_checkpoint, str(tmp_path), levels=["UTT", "SEQ"])
  with pytest.raises(ValueError, match=r"--batch_size=0 must be a positive multiple of the 1 "):
    features.extract(extractor, ["short"], root, batch_size=0)


def test_sample_lists(tmp_path):
  labels = tmp_path / "labels.csv"
  labels.write_text("name,discrete,valence\nb,happy,1\na,sad,-1\n")
  assert features.label_names(str(labels)) == ["b", "a"]
  labels.write_text("name\nb\na\nb\n")
  with pytest.raises(ValueError, match=r"labels.csv: line 4: sample 'b' is listed again \(first "
                     r"on line 2\)"):
    features.label_names(str(labels))
  with pytest.raises(ValueError, match=r"no samples \(<name>.wav files\)"):
    features.sample_names(str(tmp_path), "wav")
  with pytest.raises(FileNotFoundError, match="no such input directory"):
    features.sample_names(str(tmp_path / "absent"), "frames")


# -------------------------------------------------------------------------------------------
# CLIP and EmoVCLIP.


@pytest.fixture(name="frames_dir", scope="module")
def fixture_frames_dir(tmp_path_factory):
  """Clips 'a' (5 frames) and 'c' (2 frames) as .npy, 'b' (3 frames) as a folder of PNGs."""
  path = tmp_path_factory.mktemp("frames")
  rng = np.random.default_rng(0)
  for name, count in (("a", 5), ("c", 2)):
    np.save(path / f"{name}.npy", rng.integers(0, 256, (count, 40, 48, 3), dtype=np.uint8))
  (path / "b").mkdir()
  for t in range(3):
    Image.fromarray(rng.integers(0, 256, (36, 30, 3), dtype=np.uint8)).save(
        path / "b" / f"frame_{t:03d}.png")
  return str(path)


def _expected_clip_features(model, variables, frames_dir, names, num_frames):
  """{name: (frame embeds [F, P], Clip.encode_video [P])} by direct model calls."""
  pixels = np.stack([labelled_video.load_clip(labelled_video.find_frames(frames_dir, name),
                                              num_frames, model.config.vision.image_size)
                     for name in names])
  frames = jax.jit(lambda v, x: model.apply(v, x, method=clip.Clip.encode_image)["embeds"])(
      variables, pixels.reshape((-1,) + pixels.shape[2:]))
  video = jax.jit(lambda v, x: model.apply(v, x, method=clip.Clip.encode_video))(variables,
                                                                                 pixels)
  frames = np.asarray(frames).reshape(len(names), num_frames, -1)
  return {name: (frames[i], np.asarray(video)[i]) for i, name in enumerate(names)}


def test_clip_frame_features_equal_the_model(frames_dir, tmp_path):
  checkpoint = str(tmp_path / "tiny_clip")
  config = clip.get_config("tiny")
  clip.save_pretrained(clip.init_params(clip.Clip(config), seed=3), config, checkpoint)
  model, variables = features.from_checkpoint(checkpoint)
  labels = tmp_path / "labels.csv"
  labels.write_text("name,discrete,valence\nc,sad,0\na,happy,1\nb,neutral,0\n")
  names = features.label_names(str(labels))
  assert sorted(names) == features.sample_names(frames_dir, "frames")
  root = str(tmp_path / "features")
  extractor = features.ClipFrameFeatures(model, variables, frames_dir, name="tiny-clip",
                                         num_frames=4)
  features.extract(extractor, names, root, batch_size=2)
  expected = _expected_clip_features(model, variables, frames_dir, names, 4)
  for name, (frames, video) in expected.items():
    assert _load(root, "tiny-clip", "FRA", name).shape == (4, 32)
    np.testing.assert_allclose(_load(root, "tiny-clip", "FRA", name), frames, atol=ATOL)
    np.testing.assert_allclose(_load(root, "tiny-clip", "UTT", name), video, atol=ATOL)
  with pytest.raises(FileNotFoundError, match=r"clip 'z': no frames: neither .*z.npy nor"):
    features.extract(extractor, ["a", "z"], root, batch_size=2)


@pytest.fixture(name="emovclip_run", scope="module")
def fixture_emovclip_run(tmp_path_factory):
  """An EmoVCLIP workdir as training leaves it (config snapshot, a checkpoint at step 5 of
  configs/emovclip.py:tiny's train state: random backbone, random prompts) and its params."""
  workdir = str(tmp_path_factory.mktemp("emovclip"))
  config = load_config("emovclip", "tiny")
  snapshot.write(config, workdir)
  task = get_task(config)
  state, _ = create_train_state(task, build_optimizer_for(config, task),
                                parallel.make_mesh(config.mesh), config.sharding_rules,
                                config.seed)
  checkpointer = checkpointer_for(config, workdir, save_every=1)
  checkpointer.save(5, state, force=True)
  checkpointer.wait()
  checkpointer.close()
  return workdir, jax.tree.map(np.asarray, state.params)


def test_emovclip_features_use_the_runs_prompted_tower(emovclip_run, frames_dir, tmp_path):
  workdir, params = emovclip_run
  model, variables, step = features.from_emovclip_workdir(workdir)
  assert step == 5 and (model.num_prompts, model.prompt_depth) == (4, 2)
  jax.tree.map(np.testing.assert_array_equal, variables["params"], params)
  root = str(tmp_path / "features")
  features.extract(features.ClipFrameFeatures(model, variables, frames_dir, name="emovclip",
                                              levels=["UTT"], num_frames=3),
                   ["a", "b"], root, batch_size=2)
  expected = _expected_clip_features(model, variables, frames_dir, ["a", "b"], 3)
  plain = _expected_clip_features(clip.Clip(model.config), variables, frames_dir, ["a"], 3)
  for name, (_, video) in expected.items():
    np.testing.assert_allclose(_load(root, "emovclip", "UTT", name), video, atol=ATOL)
  assert not np.allclose(expected["a"][1], plain["a"][1], atol=1e-3)  # the prompts count
  assert not os.path.exists(os.path.join(root, "emovclip-FRA"))


def test_emovclip_workdir_errors_name_the_file(emovclip_run, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config.json: no config snapshot"):
    features.from_emovclip_workdir(str(tmp_path))
  config = load_config("clip_pretrain", "tiny")
  snapshot.write(config, str(tmp_path))
  with pytest.raises(ValueError, match=r"config.json: config.task='clip_pretrain'; expected an "
                     r"'emovclip' run"):
    features.from_emovclip_workdir(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"no 'best' checkpoint|no best checkpoint"):
    features.from_emovclip_workdir(emovclip_run[0], "best")


# -------------------------------------------------------------------------------------------
# The launcher, on 8 fake CPU devices.


def _launch(cache_dir, *flags) -> str:
  command = [sys.executable, os.path.join(runs.ROOT, "launch", "extract_features.py"),
             *flags]
  return runs.run(command, runs.env(cache_dir, devices=8), timeout=300).stdout


def test_launcher_on_8_devices_writes_the_one_device_hubert_features(
    cache_dir, hubert_checkpoint, wav_dir, hubert_root, tmp_path):
  root = str(tmp_path / "features")
  labels = tmp_path / "labels.csv"
  labels.write_text("name,discrete,valence\n" + "".join(f"{n},happy,0\n" for n in LENGTHS))
  stdout = _launch(cache_dir, "--extractor=hubert", f"--input={wav_dir}", f"--output={root}",
                   f"--hubert_checkpoint={hubert_checkpoint[0]}", "--name=tiny-hubert",
                   "--layers=0,2", "--batch_size=8", "--bucket_seconds=0.05",
                   f"--labels={labels}")
  assert "hubert: wrote 5 samples, skipped 0 already done" in stdout
  _assert_same_files(root, hubert_root)


def test_launcher_on_8_devices_writes_the_one_device_emovclip_features(
    cache_dir, emovclip_run, frames_dir, tmp_path):
  expected = str(tmp_path / "expected")
  model, variables, _ = features.from_emovclip_workdir(emovclip_run[0])
  features.extract(features.ClipFrameFeatures(model, variables, frames_dir, name="emovclip",
                                              num_frames=3),
                   features.sample_names(frames_dir, "frames"), expected, batch_size=1)
  root = str(tmp_path / "features")
  stdout = _launch(cache_dir, "--extractor=emovclip", f"--input={frames_dir}",
                   f"--output={root}", f"--emovclip_workdir={emovclip_run[0]}",
                   "--num_frames=3", "--batch_size=8")
  assert "EmoVCLIP: step 5 of" in stdout
  _assert_same_files(root, expected)
