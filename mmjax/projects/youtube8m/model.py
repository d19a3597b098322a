"""YouTube-8M video classifiers (seed 001 baselines): Transformer, NetVLAD and attention-cluster
RNN towers with early or late fusion of the rgb and audio frame streams.

- early fusion: rgb and audio are concatenated per frame, one tower reads [B, T, 1024 + 128].
- late fusion: one tower per modality; tower embeddings are concatenated and fused by an MLP.
Both end in: Dense(fusion_hidden) -> ReLU -> Dropout -> Dense(num_classes) ("classifier").
Outputs are logits [batch, num_classes]; the loss lives outside the module.
"""

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn import ContextGating, NetVLAD, TransformerEncoder
from mmjax.nn.crossmodal import AttentionRNN


class NetVLADTower(nn.Module):
  """NetVLAD -> Dense ("netvlad_hidden") -> BN -> ReLU -> context gating (WILLOW head).

  [B, T, D], [B, T] -> [B, hidden_size]. The netvlad_hidden kernel is [K * D, hidden_size]
  (131k x hidden for 128 video clusters): the sharding rules split it over the mesh.
  """
  num_clusters: int
  hidden_size: int
  context_gating: bool = True

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    vlad = NetVLAD(self.num_clusters, name="netvlad")(x, mask, train=train)
    h = nn.Dense(self.hidden_size, use_bias=False, name="netvlad_hidden")(vlad)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.99, name="hidden_bn")(h)
    h = nn.relu(h)
    if self.context_gating:
      h = ContextGating(name="context_gating")(h, train=train)
    return h


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
    streams = [batch[name] for name in self.feature_names]
    tower_names = list(self.feature_names)
    if self.fusion == "early":
      streams, tower_names = [jnp.concatenate(streams, axis=-1)], ["joint"]
    embeddings = [make_tower(name=f"{n}_tower")(x, mask, train=train)
                  for make_tower, n, x in zip(self.towers, tower_names, streams)]
    h = jnp.concatenate(embeddings, axis=-1)
    h = nn.relu(nn.Dense(self.fusion_hidden, name="fusion")(h))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    prior = -math.log(max(self.num_classes - 1, 1))
    return nn.Dense(self.num_classes, bias_init=nn.initializers.constant(prior),
                    name="classifier")(h)


FUSIONS = ("early", "late")
MODELS = ("transformer", "netvlad", "attention_rnn")


def build_video_classifier(model_config, *, feature_names: Sequence[str], num_classes: int,
                           max_frames: int) -> VideoClassifier:
  """Builds the classifier named by `model_config.name` (one of MODELS).

  Raises ValueError naming the config key for an unknown name or fusion.
  """
  if model_config.fusion not in FUSIONS:
    raise ValueError(f"config.model.fusion={model_config.fusion!r}; expected one of {FUSIONS}")
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
