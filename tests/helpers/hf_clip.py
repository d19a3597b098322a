"""Tiny CLIP checkpoints written by transformers' PyTorch CLIPModel, and a PyTorch reference of
deep vision-language prompting built from that model's own submodules (tests only)."""

import numpy as np


def tiny_hf_config(**text_overrides):
  """A CLIPConfig small enough for CPU tests; vision 24 px / patch 8 (9 patches)."""
  from transformers import CLIPConfig  # pylint: disable=import-outside-toplevel
  text = dict(vocab_size=1000, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, max_position_embeddings=24, eos_token_id=999,
              bos_token_id=998, pad_token_id=1)
  text.update(text_overrides)
  vision = dict(hidden_size=40, intermediate_size=80, num_hidden_layers=3, num_attention_heads=5,
                image_size=24, patch_size=8)
  return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def write_checkpoint(path: str, seed: int = 0, **text_overrides):
  """Saves a randomly initialized CLIPModel (random logit_scale too) with save_pretrained;
  returns the torch model in eval mode."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import CLIPModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  model = CLIPModel(tiny_hf_config(**text_overrides)).eval()
  with torch.no_grad():
    model.logit_scale.fill_(2.0 + seed * 0.1)
    for name, p in model.named_parameters():  # non-trivial LayerNorm / bias values
      if name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(path)
  return model


def padded_text_batch(lengths, total, bos=998, eos=999, pad=1, vocab=990, seed=0):
  """int64 input_ids / attention_mask [B, total]: SOS, random tokens, EOT, then padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, vocab, (len(lengths), total))
  mask = np.zeros_like(ids)
  ids[:, 0] = bos
  for row, length in enumerate(lengths):
    ids[row, length - 1] = eos
    ids[row, length:] = pad
    mask[row, :length] = 1
  return ids, mask


def prompted_reference(model, text_prompts, vision_prompts, input_ids, attention_mask,
                       pixel_values_nchw):
  """PyTorch deep-prompt CLIP (DESIGN.md 4.4) assembled from the HF model's submodules.

  text_prompts / vision_prompts: [D, N, width] numpy. Returns (text_embeds, image_embeds) after
  the projections, unnormalized.
  """
  import torch  # pylint: disable=import-outside-toplevel
  depth, n = text_prompts.shape[:2]
  tp, vp = torch.tensor(text_prompts), torch.tensor(vision_prompts)
  ids, mask = torch.tensor(input_ids), torch.tensor(attention_mask)
  with torch.no_grad():
    text = model.text_model
    tokens = text.embeddings.token_embedding(ids)
    batch, length = ids.shape
    x = torch.cat([tokens[:, :1], tp[0].expand(batch, n, -1), tokens[:, 1:]], dim=1)
    total = length + n
    x = x + text.embeddings.position_embedding(torch.arange(total))[None]
    valid = torch.cat([mask[:, :1], torch.ones(batch, n, dtype=mask.dtype), mask[:, 1:]], 1)
    allowed = torch.tril(torch.ones(total, total, dtype=torch.bool))[None, None] & (
        valid[:, None, None, :].bool())
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    for i, layer in enumerate(text.encoder.layers):
      if 0 < i < depth:
        x = torch.cat([x[:, :1], tp[i].expand(batch, n, -1), x[:, 1 + n:]], dim=1)
      x = layer(x, additive)
    x = text.final_layer_norm(x)
    eot = (ids == model.config.text_config.eos_token_id).int().argmax(-1) + n
    text_embeds = model.text_projection(x[torch.arange(batch), eot])

    vision = model.vision_model
    pixels = torch.tensor(pixel_values_nchw)
    v = vision.embeddings(pixels)
    v = torch.cat([v, vp[0].expand(v.shape[0], n, -1)], dim=1)
    v = vision.pre_layrnorm(v)
    for i, layer in enumerate(vision.encoder.layers):
      if 0 < i < depth:
        v = torch.cat([v[:, :-n], vp[i].expand(v.shape[0], n, -1)], dim=1)
      v = layer(v, None)
    image_embeds = model.visual_projection(vision.post_layernorm(v[:, 0]))
  return text_embeds.numpy(), image_embeds.numpy()
