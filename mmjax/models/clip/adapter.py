"""What CLIP-based tasks share: the model from `config.model`, the trainer-facing adapter, the
tokenizer and pretrained weights.

config.model keys:
  preset       'tiny' | 'ViT-B/32' | 'ViT-B/16' (mmjax.models.clip.PRESETS), used when
               `checkpoint` is empty
  checkpoint   a Hugging Face CLIP directory (config.json + model.safetensors): architecture and
               initial weights come from it; its vocab.json/merges.txt, if present, give the
               tokenizer
  num_prompts, prompt_depth   deep vision-language prompts (0: none)
"""

import os
from typing import Callable, Dict, Optional

import jax
import numpy as np

from mmjax.models import clip


class CheckpointModel:
  """Adapts a Clip method to the trainer's `model.init/apply(variables, batch, train=...)`.

  `inputs(batch)` picks the method's keyword arguments from the batch, so the variables are
  exactly Clip's (what `clip.save_pretrained` writes and `clip.from_pretrained` reads).
  """

  def __init__(self, module: clip.Clip, method: Callable, inputs: Callable[[Dict], Dict]):
    self.module, self.method, self.inputs = module, method, inputs

  def init(self, rngs, batch, train: bool = False):
    del train  # CLIP has no dropout or batch statistics
    return self.module.init(rngs, **self.inputs(batch), method=self.method)

  def apply(self, variables, batch, train: bool = False, **kwargs):
    del train
    return self.module.apply(variables, **self.inputs(batch), method=self.method, **kwargs)


def clip_config(model_config) -> clip.ClipConfig:
  """The architecture: from model.checkpoint's config.json, else the named preset."""
  if model_config.checkpoint:
    return clip.read_config(model_config.checkpoint)
  return clip.get_config(model_config.preset)


def build_clip(model_config) -> clip.Clip:
  num_prompts = int(model_config.get("num_prompts", 0))
  depth = int(model_config.get("prompt_depth", 0)) if num_prompts else 0
  return clip.Clip(clip_config(model_config), num_prompts=num_prompts, prompt_depth=depth)


def tokenizer(model_config) -> clip.ClipTokenizer:
  """The checkpoint's tokenizer files, else OpenAI's vocabulary (mmjax.models.clip.tokenizer)."""
  config = clip_config(model_config)
  return clip.load_tokenizer(model_config.checkpoint or "",
                             context_length=config.text.max_position_embeddings)


def pretrained_params(model_config, params) -> Optional[Dict]:
  """`params` with every CLIP tensor replaced by model.checkpoint's (prompts kept), or None
  without a checkpoint. Host numpy arrays; the trainer places them on the mesh."""
  if not model_config.checkpoint:
    return None
  host = jax.tree.map(np.asarray, jax.device_get(params))
  return clip.params_from_state_dict(
      clip.read_state_dict(model_config.checkpoint), host,
      source=os.path.join(model_config.checkpoint, "model.safetensors"))


def check_image_size(data_config, config: clip.ClipConfig) -> None:
  """config.data.image_size must be the vision tower's input size (the error names both)."""
  expected = config.vision.image_size
  if data_config.image_size != expected:
    raise ValueError(f"config.data.image_size={data_config.image_size} but the CLIP vision "
                     f"tower takes {expected}x{expected} images (config.model): make them equal")
