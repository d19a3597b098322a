"""Flax CLIP against transformers' PyTorch CLIPModel: outputs, checkpoint I/O, presets, deep
prompts (against a PyTorch reference of DESIGN.md 4.4's placement), tokenizer."""

import gzip
import importlib.util
import json
import os

import jax
import numpy as np
import pytest
import torch
from helpers import hf_clip
from safetensors.numpy import load_file, save_file

from mmjax.models import clip
from mmjax.models.clip import tokenizer as tokenizer_module

OUTPUTS = ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text")


@pytest.fixture(scope="module", params=["quick_gelu", "gelu", "legacy_eos"])
def checkpoint(request, tmp_path_factory):
  """(path, torch model) of a tiny HF checkpoint; 'legacy_eos' = eos_token_id 2 (argmax pool)."""
  path = str(tmp_path_factory.mktemp(f"hf_{request.param}"))
  overrides = ({"eos_token_id": 2} if request.param == "legacy_eos"
               else {"hidden_act": request.param})
  model = hf_clip.write_checkpoint(path, seed=1, **overrides)
  return path, model


def _inputs(seed=0):
  ids, mask = hf_clip.padded_text_batch([12, 7, 4, 9], total=12, seed=seed)
  pixels = np.random.default_rng(seed).standard_normal((3, 3, 24, 24)).astype(np.float32)
  return ids, mask, pixels


def test_outputs_match_transformers_for_padded_batches(checkpoint):
  path, torch_model = checkpoint
  model, params = clip.from_pretrained(path)
  ids, mask, pixels = _inputs()
  if torch_model.config.text_config.eos_token_id == 2:  # legacy rule: EOT = highest id
    ids[ids == 999] = 1000 - 1
  with torch.no_grad():
    expected = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                           pixel_values=torch.tensor(pixels))
  out = model.apply(params, input_ids=ids, attention_mask=mask,
                    pixel_values=pixels.transpose(0, 2, 3, 1))
  for key in OUTPUTS:
    np.testing.assert_allclose(np.asarray(out[key]), expected[key].numpy(), atol=1e-4,
                               rtol=1e-4, err_msg=key)
  np.testing.assert_allclose(np.asarray(out["image_sequence"]),
                             expected.vision_model_output.last_hidden_state.numpy(), atol=1e-4)
  valid = mask.astype(bool)  # padded positions are free to differ
  np.testing.assert_allclose(np.asarray(out["text_sequence"])[valid],
                             expected.text_model_output.last_hidden_state.numpy()[valid],
                             atol=1e-4)


def test_save_round_trip_is_bit_exact_and_loads_in_transformers(checkpoint, tmp_path):
  path, torch_model = checkpoint
  _, params = clip.from_pretrained(path)
  clip.save_pretrained(params, clip.read_config(path), str(tmp_path))
  original, saved = load_file(os.path.join(path, "model.safetensors")), load_file(
      os.path.join(tmp_path, "model.safetensors"))
  assert sorted(original) == sorted(saved)
  for name, tensor in original.items():
    assert saved[name].dtype == tensor.dtype and saved[name].shape == tensor.shape, name
    assert saved[name].tobytes() == tensor.tobytes(), name
  from transformers import CLIPModel  # pylint: disable=import-outside-toplevel
  reloaded = CLIPModel.from_pretrained(str(tmp_path)).eval()
  ids, mask, pixels = _inputs(seed=3)
  with torch.no_grad():
    a = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    pixel_values=torch.tensor(pixels))
    b = reloaded(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 pixel_values=torch.tensor(pixels))
  np.testing.assert_array_equal(a.logits_per_image.numpy(), b.logits_per_image.numpy())


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf_plain"))
  return path, hf_clip.write_checkpoint(path, seed=2)


def _copy_with(src, dst, edit):
  os.makedirs(dst, exist_ok=True)
  with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  config, tensors = edit(config, tensors)
  with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f)
  save_file(tensors, os.path.join(dst, "model.safetensors"))
  return dst


def _drop_and_add(config, tensors):
  del tensors["text_model.encoder.layers.1.mlp.fc2.weight"]
  tensors["vision_model.extra_head.weight"] = np.zeros((2, 2), np.float32)
  return config, tensors


def _widen(config, tensors):
  config["projection_dim"] = 20
  config["text_config"]["projection_dim"] = config["vision_config"]["projection_dim"] = 20
  return config, tensors


@pytest.mark.parametrize("edit,message", [
    (_drop_and_add, r"missing tensors: text_model\.encoder\.layers\.1\.mlp\.fc2\.weight.*"
     r"unexpected tensors: vision_model\.extra_head\.weight"),
    (_widen, r"text_projection\.weight: checkpoint \[16, 48\], model expects \[20, 48\]"),
])
def test_missing_unexpected_and_mismatched_tensors_are_named(plain_checkpoint, tmp_path, edit,
                                                             message):
  path, _ = plain_checkpoint
  with pytest.raises(ValueError, match=message):
    clip.from_pretrained(_copy_with(path, str(tmp_path / "bad"), edit))


def test_unusable_directories_have_clear_errors(plain_checkpoint, tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    clip.from_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(ValueError, match="not a CLIPModel config"):
    clip.from_pretrained(str(tmp_path))
  path, _ = plain_checkpoint
  (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"no model.safetensors.*pytorch_model\.bin"):
    clip.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("name,patch", [("ViT-B/32", 32), ("ViT-B/16", 16)])
def test_presets_have_the_openai_shapes(name, patch):
  from transformers import CLIPConfig, CLIPModel  # pylint: disable=import-outside-toplevel
  config = clip.get_config(name)
  abstract = clip.abstract_params(clip.Clip(config))["params"]
  with torch.device("meta"):
    reference = CLIPModel(CLIPConfig(vision_config={"patch_size": patch}))
  expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
              if not k.endswith("position_ids")}
  ours = {k: v.shape for k, v in clip.state_dict_from_params(
      jax.tree.map(lambda s: np.empty(s.shape, np.uint8), abstract)).items()}
  assert ours == expected
  total = sum(int(np.prod(s)) for s in ours.values())
  assert total == {32: 151_277_313, 16: 149_620_737}[patch]


def test_wrong_image_size_is_rejected(plain_checkpoint):
  model, params = clip.from_pretrained(plain_checkpoint[0])
  with pytest.raises(ValueError, match=r"pixel_values must be \[B, 24, 24, 3\] \(NHWC\)"):
    model.apply(params, pixel_values=np.zeros((1, 3, 24, 24), np.float32))


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_prompts_match_a_pytorch_reference(plain_checkpoint, depth):
  path, torch_model = plain_checkpoint
  model, params = clip.from_pretrained(path, num_prompts=4, prompt_depth=depth, seed=5)
  prompts = params["params"]
  text_prompts = np.asarray(prompts["text_model"]["prompts"])
  vision_prompts = np.asarray(prompts["vision_model"]["prompts"])
  assert text_prompts.shape == (depth, 4, 48) and vision_prompts.shape == (depth, 4, 40)
  ids, mask, pixels = _inputs(seed=1)
  text_ref, image_ref = hf_clip.prompted_reference(torch_model, text_prompts, vision_prompts,
                                                   ids, mask, pixels)
  text = model.apply(params, ids, mask, method=clip.Clip.encode_text)
  image = model.apply(params, pixels.transpose(0, 2, 3, 1), method=clip.Clip.encode_image)
  np.testing.assert_allclose(np.asarray(text["embeds"]), text_ref, atol=1e-4)
  np.testing.assert_allclose(np.asarray(image["embeds"]), image_ref, atol=1e-4)
  assert text["sequence"].shape == (4, 12, 48) and image["sequence"].shape == (3, 10, 40)
  # The backbone is the checkpoint's: prompts are the only new parameters.
  _, plain = clip.from_pretrained(path)
  assert clip.state_dict_from_params(params["params"]).keys() == clip.state_dict_from_params(
      plain["params"]).keys()


def test_prompted_text_must_leave_room_for_the_prompts(plain_checkpoint):
  model, params = clip.from_pretrained(plain_checkpoint[0], num_prompts=4, prompt_depth=1)
  ids, mask = hf_clip.padded_text_batch([5], total=21)
  with pytest.raises(ValueError, match=r"text length 21 \+ 4 prompts exceeds "
                     "max_position_embeddings=24"):
    model.apply(params, ids, mask, method=clip.Clip.encode_text)


def test_video_embedding_is_the_mean_of_frame_embeddings(plain_checkpoint):
  model, params = clip.from_pretrained(plain_checkpoint[0])
  frames = np.random.default_rng(0).standard_normal((2, 3, 24, 24, 3)).astype(np.float32)
  video = model.apply(params, frames, method=clip.Clip.encode_video)
  per_frame = model.apply(params, frames.reshape(6, 24, 24, 3), method=clip.Clip.encode_image)
  np.testing.assert_allclose(np.asarray(video),
                             np.asarray(per_frame["embeds"]).reshape(2, 3, -1).mean(1),
                             atol=1e-6)


# -------------------------------------------------------------------------------------------
# Tokenizer.


def test_tokenizer_gives_the_reference_ids_padding_and_mask():
  tokenizer = clip.load_tokenizer()
  out = tokenizer(["a photo of a cat", "A  Photo of a CAT"])
  assert out["input_ids"].shape == out["attention_mask"].shape == (2, 77)
  assert out["input_ids"].dtype == np.int32
  for row in range(2):
    assert out["input_ids"][row, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert out["attention_mask"][row].tolist() == [1] * 7 + [0] * 70
  long = tokenizer(["cat " * 200])
  assert long["input_ids"][0, 0] == 49406 and long["input_ids"][0, -1] == 49407
  assert long["attention_mask"].all()


def _open_clip_vocab_dir(tmp_path):
  """vocab.json + merges.txt built from open_clip's copy of OpenAI's BPE file (construction of
  OpenAI's SimpleTokenizer: bytes, bytes + '</w>', the first 48,894 merges, two specials)."""
  spec = importlib.util.find_spec("open_clip")
  if spec is None:
    pytest.skip("open-clip-torch (test extra installed by .ci/run) is not installed")
  bpe = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
  merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  extra = [b for b in range(256) if b not in printable]
  byte_chars = dict(zip(printable + extra, [chr(b) for b in printable]
                        + [chr(256 + i) for i in range(len(extra))]))
  chars = [byte_chars[b] for b in printable + extra]
  vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
  (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  return str(tmp_path)


def test_checkpoint_vocabulary_and_packaged_vocabulary_agree(tmp_path):
  from_files = clip.load_tokenizer(_open_clip_vocab_dir(tmp_path))
  packaged = clip.load_tokenizer()
  assert from_files.source.endswith("vocab.json") and "instant" in packaged.source
  texts = ["a photo of a cat", "Hello, World!! It's 2026 -- café naïve 😀 <b>bold</b>",
           "a  tabby\tcat\n on a mat &amp; a dog", "x" * 300, "CLIP's BPE: don't we'll 3.14"]
  a, b = from_files(texts), packaged(texts)
  np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
  np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])


# Text that NFC normalization changes or keeps whole: decomposed accents (e + U+0301, A + U+030A),
# the Angstrom sign, CJK, a U+001C separator (Python's \s, not Unicode whitespace).
NFC_TEXTS = ["cafe\u0301 nai\u0308ve", "A\u030angstro\u0308m \u212b", "猫が好き 我爱北京 한국어",
             "x\x1cy"]
# Text that only ftfy changes: ligatures, full-width letters and digits, curly quotes, mojibake.
FTFY_TEXTS = ["\ufb01ne \ufb02ow", "ＡＢＣ　ｄｅｆ １２３", "\u201ccurly\u201d caf\xc3\xa9"]


def _hugging_face_and_ours(tmp_path):
  """transformers' CLIPTokenizer and ours from the same vocab.json + merges.txt, and ours from
  the packaged vocabulary."""
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
  path = _open_clip_vocab_dir(tmp_path)
  hf = CLIPTokenizer.from_pretrained(path, local_files_only=True)
  return hf, (clip.load_tokenizer(path), clip.load_tokenizer())


def _assert_same_ids(ours, hf, texts, hf_texts):
  expected = hf(hf_texts, padding="max_length", max_length=77, truncation=True)
  got = ours(texts)
  np.testing.assert_array_equal(got["input_ids"], expected["input_ids"], err_msg=ours.source)
  np.testing.assert_array_equal(got["attention_mask"], expected["attention_mask"])


def test_tokenizer_without_ftfy_matches_hugging_face_and_warns_once(tmp_path, monkeypatch,
                                                                    caplog):
  hf, tokenizers = _hugging_face_and_ours(tmp_path)
  monkeypatch.setattr(tokenizer_module, "ftfy", None)
  tokenizer_module._warn_without_ftfy.cache_clear()  # pylint: disable=protected-access
  for ours in tokenizers:
    _assert_same_ids(ours, hf, NFC_TEXTS + FTFY_TEXTS, NFC_TEXTS + FTFY_TEXTS)
  warnings = [r for r in caplog.records if "ftfy is not installed" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_tokenizer_with_ftfy_is_hugging_face_after_ftfy_fix_text(tmp_path, monkeypatch, caplog):
  ftfy = pytest.importorskip("ftfy")
  hf, tokenizers = _hugging_face_and_ours(tmp_path)
  monkeypatch.setattr(tokenizer_module, "ftfy", ftfy)
  texts = NFC_TEXTS + FTFY_TEXTS
  for ours in tokenizers:
    _assert_same_ids(ours, hf, texts, [ftfy.fix_text(text) for text in texts])
  # The documented difference from plain Hugging Face (and from the path without ftfy).
  plain = hf(FTFY_TEXTS, padding="max_length", max_length=77)["input_ids"]
  for row, ids in zip(plain, tokenizers[1](FTFY_TEXTS)["input_ids"].tolist()):
    assert row != ids
  assert not [r for r in caplog.records if "ftfy" in r.getMessage()]


def test_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does-not-exist"):
    clip.load_tokenizer(str(tmp_path / "does-not-exist"))
  with pytest.raises(ValueError, match="context_length=1"):
    clip.load_tokenizer(context_length=1)


def test_sharded_safetensors_checkpoints_load(plain_checkpoint, tmp_path):
  path, _ = plain_checkpoint
  tensors = load_file(os.path.join(path, "model.safetensors"))
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for shard, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, os.path.join(tmp_path, shard))
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
  (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())
  _, sharded = clip.from_pretrained(str(tmp_path))
  _, single = clip.from_pretrained(path)
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("torch_dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints_load(torch_dtype, tmp_path):
  """transformers writes float16/bfloat16 safetensors; they load in their dtype, equal to the
  torch values, and cast to float32 on request."""
  model = hf_clip.write_checkpoint(str(tmp_path / "f32"))
  model.to(getattr(torch, torch_dtype)).save_pretrained(str(tmp_path / "half"))
  tensors = clip.read_state_dict(str(tmp_path / "half"))
  weight = tensors["visual_projection.weight"]
  assert str(weight.dtype) == torch_dtype
  expected = model.visual_projection.weight.detach().float().numpy()
  np.testing.assert_array_equal(weight.astype(np.float32), expected)
  _, params = clip.from_pretrained(str(tmp_path / "half"))
  np.testing.assert_array_equal(
      np.asarray(params["params"]["visual_projection"]["kernel"], np.float32), expected.T)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "model.safetensors").write_bytes(
      (tmp_path / "half" / "model.safetensors").read_bytes()[:-64])
  with pytest.raises(ValueError, match=r"bad/model.safetensors: tensor .* \(truncated\)"):
    clip.read_state_dict(str(tmp_path / "bad"))
