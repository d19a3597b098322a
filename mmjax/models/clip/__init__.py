"""Flax CLIP (Radford et al. 2021) with Hugging Face checkpoint I/O, the CLIP tokenizer and deep
vision-language prompts. transformers 5 ships no Flax models, so this is ours.

  model, params = from_pretrained("/path/to/clip-vit-base-patch32")   # config.json + safetensors
  tokenizer = load_tokenizer("/path/to/clip-vit-base-patch32")
  out = model.apply(params, **tokenizer(["a photo of a cat"]), pixel_values=images_nhwc)
  out["logits_per_image"], out["text_embeds"], out["image_sequence"], ...
"""

from mmjax.models.clip.config import PRESETS, ClipConfig, TextConfig, VisionConfig, get_config
from mmjax.models.clip.modules import Clip
from mmjax.models.clip.tokenizer import ClipTokenizer, load_tokenizer
from mmjax.models.clip.weights import (
                                       abstract_params,
                                       example_inputs,
                                       from_pretrained,
                                       init_params,
                                       params_from_state_dict,
                                       read_config,
                                       read_state_dict,
                                       save_pretrained,
                                       state_dict_from_params,
)

__all__ = [
    "Clip", "ClipConfig", "ClipTokenizer", "PRESETS", "TextConfig", "VisionConfig",
    "abstract_params", "example_inputs", "from_pretrained", "get_config", "init_params",
    "load_tokenizer", "params_from_state_dict", "read_config", "read_state_dict",
    "save_pretrained", "state_dict_from_params",
]
