"""Classification with CLIP from class names (CoOp / ViFi-CLIP style prompts).

Each class c becomes the text `template.format(c)` ("a photo of a {}." by default); an image or a
video is assigned to the class whose text embedding is closest in cosine similarity (see
`Clip.classify`). With a plain CLIP this is zero-shot classification; with deep prompts
(num_prompts > 0) the same function gives the prompt-tuned classifier.
"""

from typing import Dict, Sequence

import jax
import numpy as np

from mmjax.models.clip.modules import Clip

DEFAULT_TEMPLATE = "a photo of a {}."


def class_prompts(tokenizer, class_names: Sequence[str], template: str = DEFAULT_TEMPLATE,
                  num_prompts: int = 0) -> Dict[str, np.ndarray]:
  """Tokenized class texts {'input_ids', 'attention_mask'}: int32 [C, L], L = the tokenizer's
  context length minus `num_prompts` (the text prompts take positions 1..N)."""
  if "{}" not in template:
    raise ValueError(f"class template {template!r} has no '{{}}' for the class name")
  if not class_names:
    raise ValueError("no class names given")
  length = tokenizer.context_length - num_prompts
  return tokenizer([template.format(name) for name in class_names], context_length=length)


def zero_shot_logits(model: Clip, params, tokenizer, class_names: Sequence[str],
                     pixel_values, template: str = DEFAULT_TEMPLATE) -> jax.Array:
  """Class logits [B, C] for images [B, S, S, C] or videos [B, T, S, S, C] (NHWC, normalized)."""
  prompts = class_prompts(tokenizer, class_names, template, model.num_prompts)
  return jax.jit(lambda p, x: model.apply(p, x, prompts["input_ids"], prompts["attention_mask"],
                                          method=Clip.classify))(params, pixel_values)
