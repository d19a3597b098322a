"""BERT (Devlin et al. 2019) in Flax, with Hugging Face checkpoint import: the backbone of
OSCAR-style models (Li et al. 2020), which append projected region features to the token
embeddings before the encoder.

  embeddings = LayerNorm(word[ids] + position[0..L-1] + token_type[types]) -> Dropout
  x = [embeddings; extra]                              (extra: e.g. OSCAR's regions, [B, R, H])
  per layer (post-LN):  x = LayerNorm(x + Dropout(output(attn(x))))
                        x = LayerNorm(x + Dropout(dense(act(intermediate(x)))))
  attn: softmax(q k^T / sqrt(d_head) + mask) v over `num_attention_heads` heads
  pooled = tanh(pooler(x[:, 0]))
Parameter names mirror transformers' `BertModel` (`embeddings/word_embeddings/embedding` <->
`embeddings.word_embeddings.weight`, `encoder/layer_3/attention/self/query/kernel` <->
`encoder.layer.3.attention.self.query.weight`, transposed), so `params_from_state_dict` reads a
checkpoint's `model.safetensors` (with or without the 'bert.' prefix of task models).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmjax.models.clip.weights import read_state_dict  # noqa: F401  (re-exported)
from mmjax.models.hf_config import read_dataclass_config
from mmjax.nn import Dense, activation
from mmjax.nn.transformer import attention_logits, masked_softmax

__all__ = ["BertConfig", "BertModel", "from_pretrained", "load_tokenizer",
           "params_from_state_dict", "read_config", "read_state_dict", "save_pretrained"]

_IGNORED = re.compile(r"(bert\.)?embeddings\.position_ids$|cls\..*")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BertConfig that the forward pass needs."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  pad_token_id: int = 0


def read_config(path: str) -> BertConfig:
  """The BertConfig of a checkpoint directory's config.json (unknown keys ignored)."""
  return read_dataclass_config(path, BertConfig, ("bert", None),
                               "transformers' BertModel.save_pretrained")


def _dense(features: int, name: str) -> Dense:
  return Dense(features, kernel_init=nn.initializers.normal(0.02), name=name)


class BertSelfAttention(nn.Module):
  """attention.self: query/key/value, softmax weights with dropout. x [B, N, H], mask bool
  [B, 1, 1, N] (True = attend) -> [B, N, H]."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    c = self.config
    heads = c.num_attention_heads
    if c.hidden_size % heads:
      raise ValueError(f"hidden_size {c.hidden_size} is not divisible by {heads} heads")
    q, k, v = (_dense(c.hidden_size, name)(x).reshape(x.shape[:2] + (heads, -1))
               for name in ("query", "key", "value"))
    weights = masked_softmax(attention_logits(q, k), mask, axis=-1)
    weights = nn.Dropout(c.attention_probs_dropout_prob)(weights, deterministic=not train)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(out.shape[:2] + (-1,))


class BertResidualOutput(nn.Module):
  """attention.output and output: LayerNorm(residual + Dropout(dense(x)))."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, residual, *, train: bool = False):
    c = self.config
    x = nn.Dropout(c.hidden_dropout_prob)(_dense(c.hidden_size, "dense")(x),
                                          deterministic=not train)
    return nn.LayerNorm(c.layer_norm_eps, name="LayerNorm")(residual + x)


class BertAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    h = BertSelfAttention(self.config, name="self")(x, mask, train=train)
    return BertResidualOutput(self.config, name="output")(h, x, train=train)


class BertIntermediate(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    return activation(self.config.hidden_act)(_dense(self.config.intermediate_size, "dense")(x))


class BertLayer(nn.Module):
  """One post-LN encoder layer (module docstring)."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    x = BertAttention(self.config, name="attention")(x, mask, train=train)
    h = BertIntermediate(self.config, name="intermediate")(x)
    return BertResidualOutput(self.config, name="output")(h, x, train=train)


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    for i in range(self.config.num_hidden_layers):
      x = BertLayer(self.config, name=f"layer_{i}")(x, mask, train=train)
    return x


class BertEmbeddings(nn.Module):
  """LayerNorm(word + position + token type) -> Dropout: ids, types int [B, L] -> [B, L, H]."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, *, train: bool = False):
    c = self.config
    if input_ids.shape[1] > c.max_position_embeddings:
      raise ValueError(f"{input_ids.shape[1]} tokens > max_position_embeddings="
                       f"{c.max_position_embeddings}")
    init = nn.initializers.normal(0.02)
    x = (nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init,
                  name="word_embeddings")(input_ids)
         + nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=init,
                    name="position_embeddings")(jnp.arange(input_ids.shape[1])[None])
         + nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init,
                    name="token_type_embeddings")(token_type_ids))
    x = nn.LayerNorm(c.layer_norm_eps, name="LayerNorm")(x)
    return nn.Dropout(c.hidden_dropout_prob)(x, deterministic=not train)


class BertPooler(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(_dense(self.config.hidden_size, "dense")(x[:, 0]))


class BertModel(nn.Module):
  """BERT with optional extra input embeddings (module docstring).

  __call__(input_ids [B, L], attention_mask [B, L] (1 = token), token_type_ids [B, L] or None,
  extra [B, R, H] or None, extra_mask [B, R] or None (1 = real), train) -> {'sequence':
  [B, L + R, H], 'pooled': [B, H]}. Padding (mask 0) is masked as keys in every layer.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None, extra=None,
               extra_mask=None, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    c = self.config
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = BertEmbeddings(c, name="embeddings")(input_ids, token_type_ids, train=train)
    valid = attention_mask.astype(bool)
    if extra is not None:
      x = jnp.concatenate([x, extra.astype(x.dtype)], axis=1)
      extra_valid = (jnp.ones(extra.shape[:2], bool) if extra_mask is None
                     else extra_mask.astype(bool))
      valid = jnp.concatenate([valid, extra_valid], axis=1)
    x = BertEncoder(c, name="encoder")(x, valid[:, None, None, :], train=train)
    return {"sequence": x, "pooled": BertPooler(c, name="pooler")(x)}


def _hf_name(path: Tuple[str, ...]) -> Tuple[str, bool]:
  """Flax path -> (HF tensor name without prefix, transposed?)."""
  *parents, leaf = path
  prefix = ".".join(re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parents)
  if leaf == "kernel":
    return f"{prefix}.weight", True
  return f"{prefix}.{'bias' if leaf == 'bias' else 'weight'}", False


def params_from_state_dict(state_dict: Dict[str, np.ndarray], template,
                           source: str = "state dict") -> Dict:
  """Flax params shaped like `template` (BertModel's params or their ShapeDtypeStructs) from a
  transformers BERT state dict ('bert.' prefixes, as task models save them, are accepted;
  LayerNorm 'gamma'/'beta' of old checkpoints too). Raises ValueError naming missing,
  unexpected and mis-shaped tensors."""
  tensors = {re.sub(r"^bert\.", "", k): v for k, v in state_dict.items()}
  tensors = {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
                    re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
             for k, v in tensors.items()}
  params, missing, mismatched, used = {}, [], [], set()
  for path, leaf in traverse_util.flatten_dict(template).items():
    name, transpose = _hf_name(path)
    if name not in tensors:
      missing.append(name)
      continue
    used.add(name)
    array = np.asarray(tensors[name])
    array = np.ascontiguousarray(array.T) if transpose else array
    if array.shape != tuple(leaf.shape):
      mismatched.append(f"{name}: checkpoint {list(tensors[name].shape)}, model expects "
                        f"{list(leaf.shape)[::-1] if transpose else list(leaf.shape)}")
      continue
    params[path] = array.astype(leaf.dtype)
  unexpected = sorted(k for k in tensors if k not in used and not _IGNORED.fullmatch(k))
  problems = [f"{what}: {', '.join(items)}" for what, items in (
      ("missing tensors", sorted(missing)), ("shape mismatches", mismatched),
      ("unexpected tensors", unexpected)) if items]
  if problems:
    raise ValueError(f"{source} does not match the BERT config: " + " | ".join(problems))
  return traverse_util.unflatten_dict(params)


def from_pretrained(path: str, template) -> Dict:
  """BertModel params from a Hugging Face BERT directory (config.json + model.safetensors),
  shaped like `template`."""
  return params_from_state_dict(read_state_dict(path), template,
                                source=os.path.join(path, "model.safetensors"))


def save_pretrained(params, config: BertConfig, path: str, vocab: list) -> None:
  """Writes a Hugging Face BERT directory: config.json, model.safetensors (BertModel's tensor
  names, torch layouts) and vocab.txt (`vocab`, one token per line, ids in order)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(path, exist_ok=True)
  tensors = {}
  for leaf_path, leaf in traverse_util.flatten_dict(params).items():
    name, transpose = _hf_name(leaf_path)
    array = np.asarray(leaf)
    tensors[name] = np.ascontiguousarray(array.T if transpose else array)
  save_file(tensors, os.path.join(path, "model.safetensors"))
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"model_type": "bert", "architectures": ["BertModel"],
               **dataclasses.asdict(config)}, f, indent=2)
  with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)


def load_tokenizer(path: str):
  """transformers' BertTokenizerFast from the checkpoint directory's vocab.txt (local files
  only)."""
  from transformers import BertTokenizerFast  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(os.path.join(path, "vocab.txt")):
    raise FileNotFoundError(f"{path}: no vocab.txt (the BERT checkpoint's WordPiece vocabulary)")
  return BertTokenizerFast.from_pretrained(path, local_files_only=True)
