"""Seed 000's CLIP meme classifiers (Fig. 1-2, eq. 4-6): CLIP-text, CLIP-image, CLIP-multi.

All take the batch {'input_ids', 'attention_mask': int [B, L], 'pixel_values': float32
[B, S, S, 3]} and return {head: logits [B, C]}:

  classifier (every head, Fig. 1):  out(Dropout(fc(x))): Dense(d) -> Dropout -> Dense(C)
  CLIP-text:   F_cls,t = CLIP's pooled text state (final-LN state at the end-of-text token,
               not position 0); x_t = classifier(F_cls,t) + classifier'(h), h = [forward;
               backward] final states of 2 BiLSTM layers (cell size d = lstm_size) over the
               token states  -> {'text': x_t}
  CLIP-image:  F_cls,i = CLIP's pooled image state (post-LN class token);
               x_i = classifier(F_cls,i)  -> {'image': x_i}
  CLIP-multi:  E_t = [F_cls,t, e_t,1..L-1] (the pooled state, then the token states after the
               start token), E_i = [F_cls,i, e_i,1..p] (the pooled state, then the patches), both
               projected to d_e (eq. 4); E = [E_t; E_i] (eq. 5) -> 6 multi-head attention blocks
               (padding tokens masked as keys; by default no residual connection, no
               LayerNorm and no dropout, as the paper chose; `residual=True` gives
               LayerNorm(x + Dropout(attn(x)))) -> F_cls = [E~_t[0], E~_i[0]] (eq. 6) ->
               classifier  -> {'multi': x_multi, 'text': x_t, 'image': x_i}
The text and image logits of CLIP-multi come from its own CLIP-text and CLIP-image
submodules (`text`, `image`), so gradient blending (eq. 7) can weight them; predictions come
from 'multi' only (`PREDICTION_HEAD`).

Parameter trees: CLIP-text {text_model (CLIP's text tower: loads from a CLIP run's or a Hugging
Face checkpoint's 'text_model'), cls_head, lstm, seq_head}; CLIP-image {vision_model, head};
CLIP-multi {text: CLIP-text's tree, image: CLIP-image's tree, text_projection,
image_projection, block_0..5, head}, so the unimodal runs load into 'text' and 'image'
(config.init_from).
"""

from __future__ import annotations

from typing import Dict

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.bert import BertConfig, BertModel
from mmjax.models.clip import ClipConfig
from mmjax.models.clip import sharding as clip_sharding
from mmjax.models.clip.modules import TextTransformer, VisionTransformer
from mmjax.nn import Dense, SelfAttention

__all__ = ["ClipImageClassifier", "ClipMultiClassifier", "ClipTextClassifier", "Classifier",
           "OscarClassifier",
           "AttentionFusionBlock", "BiLstm", "MODELS", "PREDICTION_HEAD", "PARTITION_RULES"]

MODELS = ("text", "image", "multi", "oscar")
PREDICTION_HEAD = {"text": "text", "image": "image", "multi": "multi", "oscar": "oscar"}


class Classifier(nn.Module):
  """The paper's classifier (Fig. 1): Dense(hidden) -> Dropout(rate) -> Dense(num_classes);
  [B, D] -> [B, num_classes]. No activation in between, as the paper describes it."""
  hidden: int
  num_classes: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    x = Dense(self.hidden, name="fc")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return Dense(self.num_classes, name="out")(x)


class BiLstm(nn.Module):
  """`num_layers` bidirectional LSTM layers (cell size `size`) over [B, L, D] with per-example
  lengths [B] (positions >= length are padding: the backward direction starts at the last
  real token). Returns h = [forward final state; backward final state] of the last layer,
  [B, 2 size]."""
  size: int
  num_layers: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    final = None
    for i in range(self.num_layers):
      (_, h_forward), forward = nn.RNN(
          nn.OptimizedLSTMCell(self.size, name=f"forward_{i}"), return_carry=True)(
              x, seq_lengths=lengths)
      (_, h_backward), backward = nn.RNN(
          nn.OptimizedLSTMCell(self.size, name=f"backward_{i}"), return_carry=True,
          reverse=True, keep_order=True)(x, seq_lengths=lengths)
      x = jnp.concatenate([forward, backward], axis=-1)
      final = jnp.concatenate([h_forward, h_backward], axis=-1)  # LSTM carry = (c, h)
    return final


def _token_lengths(attention_mask: jnp.ndarray) -> jnp.ndarray:
  return jnp.sum(attention_mask.astype(jnp.int32), axis=-1)


class ClipTextClassifier(nn.Module):
  """CLIP-text (module docstring). __call__ returns {'text': logits [B, C]}; `features` also
  returns E_t's parts: the pooled state [B, Dt] and the token states [B, L, Dt]."""
  clip: ClipConfig
  num_classes: int
  lstm_size: int = 512
  lstm_layers: int = 2
  dropout_rate: float = 0.1

  def setup(self):
    width = self.clip.text.hidden_size
    self.text_model = TextTransformer(self.clip.text)
    self.cls_head = Classifier(width, self.num_classes, self.dropout_rate)
    self.lstm = BiLstm(self.lstm_size, self.lstm_layers)
    self.seq_head = Classifier(2 * self.lstm_size, self.num_classes, self.dropout_rate)

  def features(self, batch, *, train: bool = False):
    """(logits [B, C], pooled [B, Dt], sequence [B, L, Dt])."""
    out = self.text_model(batch["input_ids"], batch["attention_mask"])
    h = self.lstm(out["sequence"], _token_lengths(batch["attention_mask"]))
    logits = (self.cls_head(out["pooled"], train=train) + self.seq_head(h, train=train))
    return logits, out["pooled"], out["sequence"]

  def __call__(self, batch, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    return {"text": self.features(batch, train=train)[0]}


class ClipImageClassifier(nn.Module):
  """CLIP-image (module docstring). __call__ returns {'image': logits [B, C]}; `features` also
  returns E_i's parts: the pooled state [B, Dv] and [class; patch] states [B, 1 + p, Dv]."""
  clip: ClipConfig
  num_classes: int
  dropout_rate: float = 0.1

  def setup(self):
    self.vision_model = VisionTransformer(self.clip.vision)
    self.head = Classifier(self.clip.vision.hidden_size, self.num_classes, self.dropout_rate)

  def features(self, batch, *, train: bool = False):
    out = self.vision_model(batch["pixel_values"])
    return self.head(out["pooled"], train=train), out["pooled"], out["sequence"]

  def __call__(self, batch, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    return {"image": self.features(batch, train=train)[0]}


class AttentionFusionBlock(nn.Module):
  """One multi-head attention block of CLIP-multi: attn(x) by default (no residual connection,
  no dropout: the paper's choice), or LayerNorm(x + Dropout(attn(x))) with `residual`.
  x [B, N, d_e], mask bool [B, 1, N, N] (True = attend) -> [B, N, d_e]."""
  num_heads: int
  residual: bool = False
  dropout_rate: float = 0.0
  num_layers: int = 6

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    h = SelfAttention(self.num_heads, self.num_layers, name="self_attn")(x, mask)
    if not self.residual:
      return h
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return nn.LayerNorm(name="layer_norm")(x + h)


class ClipMultiClassifier(nn.Module):
  """CLIP-multi (module docstring): {'multi', 'text', 'image'}: logits [B, C] each."""
  clip: ClipConfig
  num_classes: int
  embed_dim: int = 512  # d_e
  num_blocks: int = 6
  num_heads: int = 8
  residual: bool = False
  attention_dropout: float = 0.0
  lstm_size: int = 512
  lstm_layers: int = 2
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, batch, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    text = ClipTextClassifier(self.clip, self.num_classes, self.lstm_size, self.lstm_layers,
                              self.dropout_rate, name="text")
    image = ClipImageClassifier(self.clip, self.num_classes, self.dropout_rate, name="image")
    text_logits, text_pooled, tokens = text.features(batch, train=train)
    image_logits, image_pooled, patches = image.features(batch, train=train)
    e_t = Dense(self.embed_dim, name="text_projection")(
        jnp.concatenate([text_pooled[:, None], tokens[:, 1:]], axis=1))
    e_i = Dense(self.embed_dim, name="image_projection")(
        jnp.concatenate([image_pooled[:, None], patches[:, 1:]], axis=1))
    text_valid = jnp.concatenate([jnp.ones_like(batch["attention_mask"][:, :1]),
                                  batch["attention_mask"][:, 1:]], axis=1).astype(bool)
    valid = jnp.concatenate([text_valid, jnp.ones(e_i.shape[:2], bool)], axis=1)
    mask = valid[:, None, None, :]
    x = jnp.concatenate([e_t, e_i], axis=1)  # eq. 5: [B, L + 1 + p, d_e]
    for i in range(self.num_blocks):
      x = AttentionFusionBlock(self.num_heads, self.residual, self.attention_dropout,
                               self.num_blocks, name=f"block_{i}")(x, mask, train=train)
    fused = jnp.concatenate([x[:, 0], x[:, e_t.shape[1]]], axis=-1)  # eq. 6: [B, 2 d_e]
    logits = Classifier(2 * self.embed_dim, self.num_classes, self.dropout_rate,
                        name="head")(fused, train=train)
    return {"multi": logits, "text": text_logits, "image": image_logits}


class OscarClassifier(nn.Module):
  """OSCAR (Li et al. 2020), the paper's fourth model family: BERT over the word-tag-region
  triple. Tokens [CLS] OCR text [SEP] object tags [SEP] (token types 0, then 1 for the tags)
  are embedded as BERT does; each region's [features; box] is projected to the hidden size
  (Dense + Dropout) and appended after them; the encoder attends over both (padding masked);
  the classifier reads the pooled [CLS] state.

  Batch: bert_input_ids, bert_token_type_ids, bert_attention_mask int [B, L]; region_features
  [B, R, F], region_boxes [B, R, 6], region_mask [B, R]. Returns {'oscar': logits [B, C]}.
  Parameters: {bert: BertModel's (loads from a Hugging Face BERT), region_projection, head}.
  """
  bert: BertConfig
  num_classes: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, batch, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    regions = jnp.concatenate([batch["region_features"], batch["region_boxes"]], axis=-1)
    regions = Dense(self.bert.hidden_size, name="region_projection")(regions)
    regions = nn.Dropout(self.bert.hidden_dropout_prob)(regions, deterministic=not train)
    out = BertModel(self.bert, name="bert")(
        batch["bert_input_ids"], batch["bert_attention_mask"], batch["bert_token_type_ids"],
        regions, batch["region_mask"], train=train)
    logits = Classifier(self.bert.hidden_size, self.num_classes, self.dropout_rate,
                        name="head")(out["pooled"], train=train)
    return {"oscar": logits}


# Partition rules (config.sharding_rules): CLIP's (mmjax.models.clip.sharding: its towers, and
# the fusion blocks' self_attn, which match them), then FSDP over 'data' for the projections,
# the heads and the LSTM kernels.
PARTITION_RULES = clip_sharding.PARTITION_RULES + (
    (r".*(text_projection|image_projection)/kernel", ("data", "model")),
    (r".*(head|cls_head|seq_head)/fc/kernel", ("data", "model")),
    (r".*(head|cls_head|seq_head)/out/kernel", ("data", None)),
    (r".*lstm/.*/kernel", ("data", None)),
    (r".*bert/.*(query|key|value|intermediate/dense)/kernel", ("data", "model")),
    (r".*bert/.*(attention/output|layer_\d+/output)/dense/kernel", ("model", "data")),
    (r".*bert/embeddings/word_embeddings/embedding", ("data", None)),
    (r".*region_projection/kernel", ("data", "model")),
)
