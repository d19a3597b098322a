"""YouTube-8M video classifiers (seed 001): Transformer, NetVLAD and attention-cluster RNN towers
with early or late fusion of the rgb and audio frame streams (VideoClassifier), and their
cross-modal forms guided by the frozen correlation tower, CM-G / CM-C (CrossModalClassifier).

- early fusion: rgb and audio are concatenated per frame, one tower reads [B, T, 1024 + 128].
- late fusion: one tower per modality; tower embeddings are concatenated and fused by an MLP.
Both end in: Dense(fusion_hidden) -> ReLU -> Dropout -> Dense(num_classes) ("classifier").
Outputs are logits [batch, num_classes]; the loss lives outside the module.
"""

import functools
import math
from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.data.youtube8m import DEQUANTIZATION_TABLE
from mmjax.nn import ContextGating, NetVLAD, TransformerEncoder
from mmjax.nn.crossmodal import (
  AttentionRNN,
  CrossModalAttentionRNN,
  CrossModalNetVLAD,
  CrossModalTransformer,
)
from mmjax.projects.youtube8m.tower import CorrelationTower


def dequantize_frames(frames, mask):
  """Quantized frame features as the models read them, inside the compiled step.

  x[b, t] = table[q[b, t]] where mask[b, t] > 0, else 0, with table[q] = q * 4/255 + 4/512 - 2
  computed by numpy in float32 (`mmjax.data.youtube8m.DEQUANTIZATION_TABLE`): a lookup, not
  arithmetic, so the values are bit-identical to the starter code's on every backend (XLA may
  fuse q * a + b into one FMA). Float features (video level) pass through unchanged.

  Args:
    frames: uint8 [B, T, D] (the pipeline's frame-level batches) or float [B, T, D].
    mask: [B, T], 1 for real frames.

  Returns:
    float32 [B, T, D] (or `frames` itself when it is not uint8).
  """
  if frames.dtype != jnp.uint8:
    return frames
  values = jnp.asarray(DEQUANTIZATION_TABLE)[frames]
  # The barrier materialises the float32 frames once: without it XLA's CPU backend fuses the
  # lookup into its consumers and recomputes it there (measured 1.5-2.5 s slower per step).
  return jax.lax.optimization_barrier(jnp.where(mask[..., None] > 0, values, 0.0))


def willow_head(vlad, hidden_size: int, context_gating: bool, *, train: bool, prefix: str = ""):
  """Dense ('<prefix>netvlad_hidden', no bias) -> BN ('<prefix>hidden_bn') -> ReLU -> context
  gating ('<prefix>context_gating'): [B, K * D] -> [B, hidden_size]. Call inside a compact
  method (the layers belong to the calling module)."""
  h = nn.Dense(hidden_size, use_bias=False, name=f"{prefix}netvlad_hidden")(vlad)
  h = nn.BatchNorm(use_running_average=not train, momentum=0.99, name=f"{prefix}hidden_bn")(h)
  h = nn.relu(h)
  if context_gating:
    h = ContextGating(name=f"{prefix}context_gating")(h, train=train)
  return h


def classifier_head(h, fusion_hidden: int, dropout_rate: float, num_classes: int, *, train: bool):
  """Dense('fusion') -> ReLU -> Dropout -> Dense('classifier'): [B, E] -> logits [B, C]. The
  classifier bias starts at -log(C - 1) (prior p = 1/C). Call inside a compact method."""
  h = nn.relu(nn.Dense(fusion_hidden, name="fusion")(h))
  h = nn.Dropout(dropout_rate)(h, deterministic=not train)
  prior = -math.log(max(num_classes - 1, 1))
  return nn.Dense(num_classes, bias_init=nn.initializers.constant(prior), name="classifier")(h)


class NetVLADTower(nn.Module):
  """NetVLAD -> willow_head (FC "netvlad_hidden", BN, ReLU, context gating; WILLOW).

  [B, T, D], [B, T] -> [B, hidden_size]. The netvlad_hidden kernel is [K * D, hidden_size]
  (131k x hidden for 128 video clusters): the sharding rules split it over the mesh.
  """
  num_clusters: int
  hidden_size: int
  context_gating: bool = True

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    vlad = NetVLAD(self.num_clusters, name="netvlad")(x, mask, train=train)
    return willow_head(vlad, self.hidden_size, self.context_gating, train=train)


class VideoClassifier(nn.Module):
  """Multi-label video classifier over named frame streams.

  Attributes:
    towers: one tower constructor per input stream (a single one for early fusion); called with
      name='<feature>_tower' (or 'joint_tower'), so parameter paths read e.g.
      'rgb_tower/netvlad_hidden/kernel'.
    feature_names: batch keys of the modality streams, e.g. ('rgb', 'audio').
    fusion: 'early' or 'late'.
    num_classes: C.
    fusion_hidden: width of the fusion MLP.
    dropout_rate: dropout before the classifier.

  Call: batch dict with feature_names -> [B, T, D_m] and 'mask' [B, T]; returns logits [B, C].
  The classifier bias starts at -log(C - 1) (prior p = 1/C), so the summed sigmoid cross-entropy
  over thousands of mostly-negative classes does not start in the thousands.
  """
  towers: Sequence[Callable[..., nn.Module]]
  feature_names: Sequence[str]
  fusion: str
  num_classes: int
  fusion_hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    mask = batch["mask"]
    streams = [dequantize_frames(batch[name], mask) for name in self.feature_names]
    tower_names = list(self.feature_names)
    if self.fusion == "early":
      streams, tower_names = [jnp.concatenate(streams, axis=-1)], ["joint"]
    embeddings = [make_tower(name=f"{n}_tower")(x, mask, train=train)
                  for make_tower, n, x in zip(self.towers, tower_names, streams)]
    return classifier_head(jnp.concatenate(embeddings, axis=-1), self.fusion_hidden,
                           self.dropout_rate, self.num_classes, train=train)


class CrossModalClassifier(nn.Module):
  """Seed 001's CM-G / CM-C classifier: the frozen correlation tower ('correlation', loaded from
  the tower run by config.init_from) scores p = sigmoid(tower(rgb, audio)); a cross-modal layer
  (mmjax/nn/crossmodal.py) reads both streams with
    CM-G: gate g = p on the cross-modal term (p = 0: no influence, 1: full);
    CM-C: context c = ReLU FC layers (context_layers x context_dim) of p, concatenated with each
          stream's frame input to the cross-modal layer (gate 1);
  the stream embeddings (NetVLAD: each through willow_head) are concatenated into
  classifier_head, as in late fusion.

  Call: batch with 'rgb' [B, T, D_v], 'audio' [B, T, D_a] (uint8 or float, see
  `dequantize_frames`), 'mask' [B, T] -> logits [B, C].
  """
  crossmodal: Callable[..., nn.Module]  # the cross-modal layer (name 'crossmodal')
  correlation: Callable[..., nn.Module]  # the correlation tower (name 'correlation')
  fusion: str  # 'cmg' or 'cmc'
  num_classes: int
  fusion_hidden: int
  dropout_rate: float = 0.0
  context_dim: int = 16
  context_layers: int = 2
  netvlad_head: Tuple[int, bool] = ()  # (hidden_size, context_gating) for NetVLAD streams

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    mask = batch["mask"]
    rgb, audio = (dequantize_frames(batch[name], mask) for name in ("rgb", "audio"))
    # The tower is frozen (config.init_from): no gradient needs to flow into it.
    p = jax.lax.stop_gradient(jax.nn.sigmoid(
        self.correlation(name="correlation")(rgb, audio, mask, mask, train=False)))
    gate, context = None, None
    if self.fusion == "cmg":
      gate = p
    else:
      context = p[:, None]
      for i in range(self.context_layers):
        context = nn.relu(nn.Dense(self.context_dim, name=f"context_{i}")(context))
    embeddings = self.crossmodal(name="crossmodal")(rgb, audio, mask, gate, context, train=train)
    if self.netvlad_head:
      embeddings = [willow_head(e, *self.netvlad_head, train=train, prefix=f"{m}_")
                    for m, e in zip(("rgb", "audio"), embeddings)]
    return classifier_head(jnp.concatenate(embeddings, axis=-1), self.fusion_hidden,
                           self.dropout_rate, self.num_classes, train=train)


FUSIONS = ("early", "late", "cmg", "cmc")
CROSSMODAL_FUSIONS = ("cmg", "cmc")
MODELS = ("transformer", "netvlad", "attention_rnn")


def build_video_classifier(model_config, *, feature_names: Sequence[str], num_classes: int,
                           max_frames: int) -> VideoClassifier:
  """Builds the classifier named by `model_config.name` (one of MODELS).

  Raises ValueError naming the config key for an unknown name or fusion.
  """
  if model_config.fusion not in FUSIONS:
    raise ValueError(f"config.model.fusion={model_config.fusion!r}; expected one of {FUSIONS}")
  if model_config.fusion in CROSSMODAL_FUSIONS:
    return build_crossmodal_classifier(model_config, num_classes=num_classes,
                                       max_frames=max_frames)
  num_towers = 1 if model_config.fusion == "early" else len(feature_names)
  if model_config.name == "transformer":
    t = model_config.transformer
    tower = functools.partial(TransformerEncoder, t.d_model, t.num_heads, t.num_layers, t.mlp_dim,
                              max_frames, model_config.dropout_rate, pool=True)
    towers = [tower] * num_towers
  elif model_config.name == "netvlad":
    v = model_config.netvlad
    if len(v.clusters) < num_towers:
      raise ValueError(f"config.model.netvlad.clusters={v.clusters} has fewer entries than the "
                       f"{num_towers} towers of {model_config.fusion} fusion")
    towers = [functools.partial(NetVLADTower, k, v.hidden_size, v.context_gating)
              for k in v.clusters[:num_towers]]
  elif model_config.name == "attention_rnn":
    r = model_config.attention_rnn
    if len(r.num_units) < num_towers:
      raise ValueError(f"config.model.attention_rnn.num_units={r.num_units} has fewer entries "
                       f"than the {num_towers} towers of {model_config.fusion} fusion")
    towers = [functools.partial(AttentionRNN, r.hidden, n, r.attention_hidden)
              for n in r.num_units[:num_towers]]
  else:
    raise ValueError(f"config.model.name={model_config.name!r}; expected one of {MODELS}")
  return VideoClassifier(towers=tuple(towers), feature_names=tuple(feature_names),
                         fusion=model_config.fusion, num_classes=num_classes,
                         fusion_hidden=model_config.fusion_hidden,
                         dropout_rate=model_config.dropout_rate)


def build_crossmodal_classifier(model_config, *, num_classes: int, max_frames: int,
                                cross: bool = True) -> CrossModalClassifier:
  """The CM-G / CM-C classifier of `model_config.name`'s family (config.model.crossmodal: F's
  kind and the CM-C context layers; config.model.correlation: the tower's size). `cross=False`
  drops the cross-modal term (for comparisons)."""
  c = model_config.crossmodal
  netvlad_head = ()
  if model_config.name == "transformer":
    t = model_config.transformer
    layer = functools.partial(CrossModalTransformer, t.d_model, t.num_heads, t.num_layers,
                              t.mlp_dim, max_frames, c.transform, model_config.dropout_rate,
                              cross)
  elif model_config.name == "netvlad":
    v = model_config.netvlad
    layer = functools.partial(CrossModalNetVLAD, tuple(v.clusters[:2]), c.transform, cross)
    netvlad_head = (v.hidden_size, v.context_gating)
  elif model_config.name == "attention_rnn":
    r = model_config.attention_rnn
    layer = functools.partial(CrossModalAttentionRNN, r.hidden, tuple(r.num_units[:2]),
                              r.attention_hidden, c.transform, cross)
  else:
    raise ValueError(f"config.model.name={model_config.name!r}; expected one of {MODELS}")
  return CrossModalClassifier(
      crossmodal=layer,
      correlation=functools.partial(CorrelationTower, model_config.correlation.hidden),
      fusion=model_config.fusion, num_classes=num_classes,
      fusion_hidden=model_config.fusion_hidden, dropout_rate=model_config.dropout_rate,
      context_dim=c.context_dim, context_layers=c.context_layers, netvlad_head=netvlad_head)
