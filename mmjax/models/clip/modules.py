"""Flax (linen) CLIP: text and vision transformers, projections and the learnable temperature,
with optional deep vision-language prompts (ViFi-CLIP / EmoVCLIP).

Architecture (Radford et al. 2021; DESIGN.md 4.4), parameter names mirror transformers' CLIPModel
so checkpoints convert by name (mmjax.models.clip.weights):
  block:   x = x + out_proj(attn(layer_norm1(x)));  x = x + fc2(act(fc1(layer_norm2(x))))
  text:    token + position embeddings -> causal blocks -> final_layer_norm on all tokens
           -> pooled = hidden[EOT]
  vision:  patch conv (no bias) -> [class; patches] + position embeddings -> pre_layrnorm
           -> blocks -> pooled = post_layernorm(hidden[:, 0])
  model:   text_embeds = text_projection(pooled_t), image_embeds = visual_projection(pooled_v)
           logits_per_text = exp(logit_scale) * norm(text_embeds) . norm(image_embeds)^T

Deep prompts (num_prompts N > 0, prompt_depth D): each tower owns `prompts` [D, N, width]
(init normal std 0.02). Vision: prompts[0] are appended after the patch tokens, after the
position embedding (so they get none) and before pre_layrnorm; before each layer 0 < i < D the
previous layer's prompt outputs are dropped and replaced by prompts[i]. Text: prompts[0] sit at
positions 1..N right after SOS (they take positions 1..N and their position embeddings, the real
tokens move up by N, so input_ids may be at most max_position_embeddings - N long); replaced
likewise at positions 1..N; the EOT index shifts by N. Returned token sequences omit the prompt
positions, so they always align with the inputs.
"""

from typing import Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.clip.config import ClipConfig, TextConfig, VisionConfig
from mmjax.nn import EncoderBlock, l2_normalize


def _normal(std: float):
  return nn.initializers.normal(stddev=std)


class Encoder(nn.Module):
  """num_hidden_layers pre-LN EncoderBlocks (mmjax.nn.transformer; `layers_0`, ...). Before
  layer i (0 < i < depth) the callable `replace_prompts(x, i)` swaps in that layer's prompts."""
  config: object

  def setup(self):
    c = self.config
    self.layers = [EncoderBlock(c.num_attention_heads, c.intermediate_size, c.hidden_act,
                                c.layer_norm_eps, num_layers=c.num_hidden_layers)
                   for _ in range(c.num_hidden_layers)]

  def __call__(self, x, mask, replace_prompts=None):
    """x: [B, L, width] -> [B, L, width]."""
    for i, layer in enumerate(self.layers):
      if replace_prompts is not None and i > 0:
        x = replace_prompts(x, i)
      x = layer(x, mask)
    return x


def _prompt_params(module: nn.Module, depth: int, num: int, width: int, num_layers: int):
  if depth < 1 or depth > num_layers:
    raise ValueError(f"prompt_depth={depth} must be in [1, num_hidden_layers={num_layers}]")
  return module.param("prompts", _normal(0.02), (depth, num, width))


def _prompt_replacer(prompts: jnp.ndarray, depth: int, positions: slice):
  """(x [B, L, W], layer i) -> x with x[:, positions] = prompts[i] for 0 < i < depth."""
  def replace(x, i):
    return x.at[:, positions].set(prompts[i].astype(x.dtype)) if i < depth else x
  return replace


class TextEmbeddings(nn.Module):
  """token_embedding(ids) (+ prompts at positions 1..N) + position_embedding[:L + N]."""
  config: TextConfig

  @nn.compact
  def __call__(self, input_ids: jnp.ndarray, prompts: Optional[jnp.ndarray] = None
               ) -> jnp.ndarray:
    """input_ids: int [B, L]; prompts: [N, width] or None. Returns [B, L + N, width]."""
    c = self.config
    x = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=_normal(0.02),
                 name="token_embedding")(input_ids)
    if prompts is not None:
      first = jnp.broadcast_to(prompts, (x.shape[0],) + prompts.shape).astype(x.dtype)
      x = jnp.concatenate([x[:, :1], first, x[:, 1:]], axis=1)
    position = nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=_normal(0.01),
                        name="position_embedding")
    return x + position(jnp.arange(x.shape[1]))[None]


class TextTransformer(nn.Module):
  """CLIP text tower (module docstring). Parameters: embeddings/{token,position}_embedding,
  encoder/layers_i, final_layer_norm [, prompts [D, N, width]]."""
  config: TextConfig
  num_prompts: int = 0
  prompt_depth: int = 0

  @nn.compact
  def __call__(self, input_ids: jnp.ndarray, attention_mask: Optional[jnp.ndarray] = None
               ) -> Dict[str, jnp.ndarray]:
    """input_ids, attention_mask: int [B, L] (mask 1 = token, 0 = padding; None = all tokens).

    Returns {'pooled': [B, width] (final-LN state at EOT), 'sequence': [B, L, width] (final-LN
    states of the input positions)}.
    """
    c, n = self.config, self.num_prompts
    batch, length = input_ids.shape
    if length + n > c.max_position_embeddings:
      raise ValueError(f"text length {length} + {n} prompts exceeds max_position_embeddings="
                       f"{c.max_position_embeddings}")
    valid = (jnp.ones((batch, length), bool) if attention_mask is None
             else attention_mask.astype(bool))
    prompts = (_prompt_params(self, self.prompt_depth, n, c.hidden_size, c.num_hidden_layers)
               if n else None)
    x = TextEmbeddings(c, name="embeddings")(input_ids, None if prompts is None else prompts[0])
    replace = None
    if n:
      valid = jnp.concatenate([valid[:, :1], jnp.ones((batch, n), bool), valid[:, 1:]], axis=1)
      replace = _prompt_replacer(prompts, self.prompt_depth, slice(1, 1 + n))
    total = length + n
    causal = jnp.tril(jnp.ones((total, total), bool))
    x = Encoder(c, name="encoder")(x, causal[None, None] & valid[:, None, None, :], replace)
    x = nn.LayerNorm(c.layer_norm_eps, name="final_layer_norm")(x)
    pooled = x[jnp.arange(batch), self._eot_index(input_ids) + n]
    sequence = jnp.concatenate([x[:, :1], x[:, 1 + n:]], axis=1) if n else x
    return {"pooled": pooled, "sequence": sequence}

  def _eot_index(self, input_ids: jnp.ndarray) -> jnp.ndarray:
    """First position of eos_token_id (transformers' rule; legacy eos_token_id == 2 configs
    pool at argmax(input_ids), i.e. the highest id, which is EOT in OpenAI's vocabulary)."""
    if self.config.eos_token_id == 2:
      return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == self.config.eos_token_id, axis=-1)


class VisionEmbeddings(nn.Module):
  """[class_embedding; patch_embedding(pixels)] + position_embedding (+ prompts appended)."""
  config: VisionConfig

  @nn.compact
  def __call__(self, pixel_values: jnp.ndarray, prompts: Optional[jnp.ndarray] = None
               ) -> jnp.ndarray:
    """pixel_values: float [B, S, S, C] (NHWC, normalized); prompts: [N, width] or None.

    Returns [B, 1 + (S / patch)^2 + N, width].
    """
    c = self.config
    if pixel_values.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(f"pixel_values must be [B, {c.image_size}, {c.image_size}, "
                       f"{c.num_channels}] (NHWC); got {list(pixel_values.shape)}")
    patches = nn.Conv(c.hidden_size, (c.patch_size,) * 2, strides=(c.patch_size,) * 2,
                      padding="VALID", use_bias=False, kernel_init=_normal(0.02),
                      name="patch_embedding")(pixel_values)
    batch = patches.shape[0]
    patches = patches.reshape(batch, -1, c.hidden_size)
    cls = self.param("class_embedding", _normal(c.hidden_size ** -0.5), (c.hidden_size,))
    cls = jnp.broadcast_to(cls.astype(patches.dtype), (batch, 1, c.hidden_size))
    x = jnp.concatenate([cls, patches], axis=1)
    position = nn.Embed(x.shape[1], c.hidden_size, embedding_init=_normal(0.02),
                        name="position_embedding")
    x = x + position(jnp.arange(x.shape[1]))[None]
    if prompts is not None:
      x = jnp.concatenate(
          [x, jnp.broadcast_to(prompts, (batch,) + prompts.shape).astype(x.dtype)], axis=1)
    return x


class VisionTransformer(nn.Module):
  """CLIP vision tower (module docstring). Parameters: embeddings/{patch_embedding,
  class_embedding, position_embedding}, pre_layrnorm, encoder/layers_i, post_layernorm
  [, prompts [D, N, width]]."""
  config: VisionConfig
  num_prompts: int = 0
  prompt_depth: int = 0

  @nn.compact
  def __call__(self, pixel_values: jnp.ndarray) -> Dict[str, jnp.ndarray]:
    """pixel_values: float [B, S, S, C].

    Returns {'pooled': [B, width] (post_layernorm of the class token), 'sequence':
    [B, 1 + P, width] (encoder output for the class and patch tokens, before post_layernorm)}.
    """
    c, n = self.config, self.num_prompts
    prompts = (_prompt_params(self, self.prompt_depth, n, c.hidden_size, c.num_hidden_layers)
               if n else None)
    x = VisionEmbeddings(c, name="embeddings")(pixel_values,
                                               None if prompts is None else prompts[0])
    x = nn.LayerNorm(c.layer_norm_eps, name="pre_layrnorm")(x)
    replace = _prompt_replacer(prompts, self.prompt_depth, slice(-n, None)) if n else None
    x = Encoder(c, name="encoder")(x, None, replace)
    pooled = nn.LayerNorm(c.layer_norm_eps, name="post_layernorm")(x[:, 0])
    return {"pooled": pooled, "sequence": x[:, :x.shape[1] - n]}


class Clip(nn.Module):
  """CLIP with transformers' CLIPModel interface (module docstring).

  Attributes:
    config: the architecture.
    num_prompts: N deep prompts per tower and layer (0: plain CLIP).
    prompt_depth: D, the first D layers carry prompts (1 <= D <= num_hidden_layers).
  """
  config: ClipConfig
  num_prompts: int = 0
  prompt_depth: int = 0

  def setup(self):
    c = self.config
    self.text_model = TextTransformer(c.text, self.num_prompts, self.prompt_depth)
    self.vision_model = VisionTransformer(c.vision, self.num_prompts, self.prompt_depth)
    self.text_projection = nn.Dense(c.projection_dim, use_bias=False,
                                    kernel_init=_normal(c.text.hidden_size ** -0.5))
    self.visual_projection = nn.Dense(c.projection_dim, use_bias=False,
                                      kernel_init=_normal(c.vision.hidden_size ** -0.5))
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(
        c.logit_scale_init_value), ())

  def encode_text(self, input_ids, attention_mask=None) -> Dict[str, jnp.ndarray]:
    """{'embeds': text_projection(pooled) [B, P] (unnormalized, = HF get_text_features),
    'pooled': [B, Dt], 'sequence': [B, L, Dt]}."""
    out = self.text_model(input_ids, attention_mask)
    return {"embeds": self.text_projection(out["pooled"]), **out}

  def encode_image(self, pixel_values) -> Dict[str, jnp.ndarray]:
    """{'embeds': visual_projection(pooled) [B, P] (unnormalized, = HF get_image_features),
    'pooled': [B, Dv], 'sequence': [B, 1 + patches, Dv]}; pixel_values [B, S, S, C]."""
    out = self.vision_model(pixel_values)
    return {"embeds": self.visual_projection(out["pooled"]), **out}

  def encode_video(self, pixel_values) -> jnp.ndarray:
    """Frames [B, T, S, S, C] -> mean over T of the frames' image embeds [B, P] (unnormalized;
    ViFi-CLIP / EmoVCLIP temporal pooling)."""
    batch, frames = pixel_values.shape[:2]
    embeds = self.encode_image(pixel_values.reshape((batch * frames,) + pixel_values.shape[2:]))
    return embeds["embeds"].reshape(batch, frames, -1).mean(axis=1)

  def classify(self, pixel_values, class_input_ids, class_attention_mask=None) -> jnp.ndarray:
    """Class logits from class-name prompts (zero-shot, or prompt-tuned with prompts > 0).

    logits[b, c] = exp(logit_scale) * norm(v_b) . norm(t_c), with v_b the image embedding of
    pixel_values [B, S, S, C] or the mean frame embedding of a video [B, T, S, S, C], and t_c
    the text embedding of class c's prompt (class_input_ids [C, L], e.g. "a photo of a {c}.").
    """
    if pixel_values.ndim == 5:
      visual = self.encode_video(pixel_values)
    else:
      visual = self.encode_image(pixel_values)["embeds"]
    text = self.encode_text(class_input_ids, class_attention_mask)["embeds"]
    return jnp.exp(self.logit_scale) * l2_normalize(visual) @ l2_normalize(text).T

  def __call__(self, input_ids=None, attention_mask=None, pixel_values=None
               ) -> Dict[str, jnp.ndarray]:
    """Runs the towers whose inputs are given.

    Args:
      input_ids: int [Bt, L] token ids (with SOS and EOT), or None.
      attention_mask: int [Bt, L], 1 for tokens, 0 for padding (None: no padding).
      pixel_values: float32 [Bi, S, S, C] NHWC, CLIP-normalized, or None.

    Returns:
      text_embeds [Bt, P], image_embeds [Bi, P] (L2-normalized, as HF returns them),
      text_sequence [Bt, L, Dt], image_sequence [Bi, 1 + patches, Dv], text_pooled,
      image_pooled, and with both towers logits_per_text [Bt, Bi] =
      exp(logit_scale) * text_embeds . image_embeds^T and logits_per_image = its transpose.
    """
    outputs = {}
    if input_ids is not None:
      text = self.encode_text(input_ids, attention_mask)
      outputs.update(text_embeds=l2_normalize(text["embeds"]), text_pooled=text["pooled"],
                     text_sequence=text["sequence"])
    if pixel_values is not None:
      image = self.encode_image(pixel_values)
      outputs.update(image_embeds=l2_normalize(image["embeds"]), image_pooled=image["pooled"],
                     image_sequence=image["sequence"])
    if input_ids is not None and pixel_values is not None:
      logits = jnp.exp(self.logit_scale) * outputs["text_embeds"] @ outputs["image_embeds"].T
      outputs.update(logits_per_text=logits, logits_per_image=logits.T)
    outputs["logit_scale"] = self.logit_scale
    return outputs
