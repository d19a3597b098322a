"""The CLIP tasks end to end: contrastive pretraining exports a checkpoint that mmjax and
transformers load; EmoVCLIP prompt tuning starts from a checkpoint and changes nothing but the
prompts; zero-shot classification against a PyTorch reference."""

import os

import jax
import numpy as np
import pytest
import torch
from conftest import load_config
from helpers import hf_clip
from safetensors.numpy import load_file

from mmjax.models import clip
from mmjax.models.clip.classify import class_prompts, zero_shot_logits
from mmjax.train import train_and_evaluate
from mmjax.train.export import export_checkpoint
from mmjax.train.trainer import restore_for_eval


def test_pretraining_checkpoint_exports_to_a_directory_mmjax_and_transformers_load(
    cache_dir, tmp_path):
  config = load_config("clip_pretrain", "tiny")
  workdir = str(tmp_path / "run")
  metrics = train_and_evaluate(config, workdir)
  assert {"eval/i2t_r@1", "eval/t2i_r@5", "eval/loss"} <= set(metrics)
  assert metrics["eval/num_examples"] == 32
  output = str(tmp_path / "hf")
  assert export_checkpoint(config, workdir, output) == config.total_steps
  task, state, _, _, _ = restore_for_eval(config, workdir)
  model, params = clip.from_pretrained(output)
  trained = jax.tree.map(np.asarray, state.params)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params["params"])[0]:
    np.testing.assert_array_equal(leaf, _at(trained, path))
  batch = next(iter(task.eval_dataset(8, 0, 1)))
  ours = model.apply(params, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"])
  from transformers import CLIPModel  # pylint: disable=import-outside-toplevel
  reference = CLIPModel.from_pretrained(output).eval()
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                         attention_mask=torch.tensor(batch["attention_mask"]),
                         pixel_values=torch.tensor(batch["pixel_values"].transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(np.asarray(ours["logits_per_image"]),
                             expected.logits_per_image.numpy(), atol=1e-4, rtol=1e-4)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """A random 'tiny'-preset CLIP saved in the Hugging Face format (32 px, real vocabulary)."""
  path = str(tmp_path_factory.mktemp("tiny_clip"))
  config = clip.get_config("tiny")
  clip.save_pretrained(clip.init_params(clip.Clip(config), seed=7), config, path)
  return path


def test_prompt_tuning_starts_from_the_checkpoint_and_trains_only_prompts(
    cache_dir, tiny_checkpoint, tmp_path):
  config = load_config("emovclip", "tiny")
  config.model.checkpoint = tiny_checkpoint
  metrics = train_and_evaluate(config, str(tmp_path))
  assert {"eval/accuracy", "eval/weighted_f1"} <= set(metrics)
  _, state, _, _, _ = restore_for_eval(config, str(tmp_path))
  params = jax.tree.map(np.asarray, state.params)
  backbone = clip.state_dict_from_params(params)
  original = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
  assert sorted(backbone) == sorted(original)
  for name, tensor in original.items():  # bit-identical after training
    assert backbone[name].tobytes() == tensor.tobytes(), name
  fresh = clip.init_params(clip.Clip(clip.get_config("tiny"), 4, 2), seed=config.seed)["params"]
  for tower in ("text_model", "vision_model"):
    assert params[tower]["prompts"].shape == (2, 4, 64)
    assert not np.allclose(params[tower]["prompts"], fresh[tower]["prompts"]), tower


def test_zero_shot_video_logits_match_a_pytorch_reference(tmp_path):
  torch_model = hf_clip.write_checkpoint(str(tmp_path), seed=3, vocab_size=49408,
                                         eos_token_id=49407, bos_token_id=49406,
                                         pad_token_id=49407)
  model, params = clip.from_pretrained(str(tmp_path))
  tokenizer = clip.load_tokenizer(str(tmp_path), context_length=24)
  names = ["neutral", "angry", "happy", "sad"]
  frames = np.random.default_rng(0).standard_normal((2, 3, 24, 24, 3)).astype(np.float32)
  logits = np.asarray(zero_shot_logits(model, params, tokenizer, names, frames))
  prompts = class_prompts(tokenizer, names)
  with torch.no_grad():
    text = torch_model.get_text_features(
        input_ids=torch.tensor(prompts["input_ids"], dtype=torch.long),
        attention_mask=torch.tensor(prompts["attention_mask"])).pooler_output
    image = torch_model.get_image_features(
        pixel_values=torch.tensor(frames.reshape(6, 24, 24, 3).transpose(0, 3, 1, 2))
    ).pooler_output.reshape(2, 3, -1).mean(1)
    text, image = text / text.norm(dim=-1, keepdim=True), image / image.norm(dim=-1,
                                                                              keepdim=True)
    expected = (torch_model.logit_scale.exp() * image @ text.T).numpy()
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_zero_shot_variant_evaluates_the_checkpoint(cache_dir, tiny_checkpoint, tmp_path):
  config = load_config("emovclip", "zero_shot")
  config.model.checkpoint = tiny_checkpoint
  config.data.synthetic.num_train, config.data.synthetic.num_eval = 24, 12
  config.data.synthetic.max_frames = 6
  config.eval_batch_size = 8
  metrics = train_and_evaluate(config, str(tmp_path))
  model, params = clip.from_pretrained(tiny_checkpoint)
  from mmjax.tasks import get_task  # pylint: disable=import-outside-toplevel
  task = get_task(config)
  task.prepare(lambda *_: None)
  correct = total = 0
  for batch in task.eval_dataset(8, 0, 1):
    logits = zero_shot_logits(model, params, clip.load_tokenizer(), config.data.class_names,
                               batch["pixel_values"], config.model.template)
    keep = batch["weight"] > 0
    correct += int((np.asarray(logits).argmax(-1) == batch["label"])[keep].sum())
    total += int(keep.sum())
  assert metrics["eval/num_examples"] == total == 12
  assert metrics["eval/accuracy"] == pytest.approx(correct / total)
