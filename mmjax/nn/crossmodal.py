"""Cross-modal attention (seed 001, "Cross-modal Learning for Multi-modal Video Categorization",
section 2; DESIGN.md 4.3): the attention of one modality, passed through a small transform F, is
added to the attention of the other before it is used, for two frame-aligned streams v (video,
'rgb') and a (audio):

  attention RNN (attention clusters):  c_a = sum_t (alpha_a + g F_v(alpha_v)) h_a
  NetVLAD:                             V_a = sum_t (alpha_a + g F_v(alpha_v)) (x_a - c_a)
  Transformer, head i:                 softmax(l_iv + g F_ia(l_ia)) V_iv,
                                       l_im = Q_im W^Q_im (K_im W^K_im)^T / sqrt(d_head)

and symmetrically for the other stream. F is a ReLU transform or a small ReLU MLP (`transform`).
g [batch] is the cross-modal gate: 1 without a correlation tower, the tower's output in CM-G,
so g = 0 gives exactly the model without the cross-modal term. `context` [batch, E] (CM-C: the
correlation tower's output after its FC layers) is concatenated with each stream's frame input
to the cross-modal layer. Padded frames (mask 0) never reach an output.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.dense import Dense
from mmjax.nn.netvlad import soft_assignment, vlad_centers, vlad_descriptor
from mmjax.nn.pooling import masked_mean
from mmjax.nn.transformer import Mlp, attend, attention_logits, masked_softmax, project_heads

TRANSFORMS = ("relu", "mlp")
STREAMS = ("rgb", "audio")  # parameter-name prefixes of the video and the audio stream
BIAS_INIT = nn.initializers.constant(0.01)  # of the transforms' ReLU units (AttentionTransform)


def _check_transform(transform: str) -> None:
  if transform not in TRANSFORMS:
    raise ValueError(f"cross-modal transform {transform!r}; expected one of {TRANSFORMS} "
                     "(config.model.crossmodal.transform)")


class AttentionTransform(nn.Module):
  """F over attention or assignment vectors, per frame: [..., K_in] -> [..., `features`].

  'relu': F(x) = ReLU(x W + b); 'mlp': F(x) = ReLU(ReLU(x W1 + b1) W2 + b2) with `hidden` units
  (default: `features`). Non-negative, so alpha + F(.) stays a non-negative weighting. Biases
  start at BIAS_INIT > 0: attention and assignment inputs are non-negative, and with zero biases
  an output unit whose weights start mostly negative would be dead (no gradient) from step 0.
  """
  features: int
  transform: str = "relu"
  hidden: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    _check_transform(self.transform)
    if self.transform == "mlp":
      x = nn.relu(nn.Dense(self.hidden or self.features, bias_init=BIAS_INIT, name="hidden")(x))
    return nn.relu(nn.Dense(self.features, bias_init=BIAS_INIT, name="out")(x))


class HeadwiseTransform(nn.Module):
  """F_i over attention logits, one transform per head i, applied to every logit alone:
  [B, H, Lq, Lk] -> [B, H, Lq, Lk].

  'relu': F_i(l) = ReLU(s_i l + b_i) (s = 1, b = 0 at init); 'mlp': F_i(l) =
  ReLU(sum_m w2_im ReLU(w1_im l + b1_im) + b2_i) with `hidden` units per head (b1, b2 start at
  BIAS_INIT, see AttentionTransform).
  """
  transform: str = "relu"
  hidden: int = 8

  @nn.compact
  def __call__(self, logits: jnp.ndarray) -> jnp.ndarray:
    _check_transform(self.transform)
    heads = logits.shape[1]
    if self.transform == "relu":
      scale = self.param("scale", nn.initializers.ones, (heads,))[None, :, None, None]
      bias = self.param("bias", nn.initializers.zeros, (heads,))[None, :, None, None]
      return nn.relu(scale * logits + bias)
    w1 = self.param("w1", nn.initializers.normal(1.0), (heads, self.hidden))
    b1 = self.param("b1", BIAS_INIT, (heads, self.hidden))
    w2 = self.param("w2", nn.initializers.normal(self.hidden ** -0.5), (heads, self.hidden))
    b2 = self.param("b2", BIAS_INIT, (heads,))
    hidden = nn.relu(logits[..., None] * w1[None, :, None, None] + b1[None, :, None, None])
    return nn.relu(jnp.einsum("bhqkm,hm->bhqk", hidden, w2) + b2[None, :, None, None])


def _gate(gate: Optional[jnp.ndarray], like: jnp.ndarray, ndim: int) -> jnp.ndarray:
  """The gate [B] (None: 1) shaped to broadcast against an array of rank `ndim`."""
  if gate is None:
    return jnp.ones((), like.dtype)
  return gate.astype(like.dtype).reshape((-1,) + (1,) * (ndim - 1))


def _with_context(x: jnp.ndarray, context: Optional[jnp.ndarray]) -> jnp.ndarray:
  """x [B, T, D] with `context` [B, E] appended to every frame: [B, T, D + E]."""
  if context is None:
    return x
  frames = jnp.broadcast_to(context[:, None, :].astype(x.dtype),
                            x.shape[:2] + (context.shape[-1],))
  return jnp.concatenate([x, frames], axis=-1)


def crossed_weights(alphas, sizes, mask, gate, transform: str):
  """{m: alpha_m + g F_other(alpha_other)} for the two streams: alphas {m: [B, T, K_m]}, sizes
  {m: K_m}, mask [B, T], gate [B] or None. Call inside a compact method: creates the
  AttentionTransforms 'F_rgb' (K_v -> K_a, for the audio stream) and 'F_audio' (K_a -> K_v)."""
  out = {}
  for m, other in zip(STREAMS, reversed(STREAMS)):
    crossed = AttentionTransform(sizes[m], transform, name=f"F_{other}")(alphas[other])
    out[m] = alphas[m] + _gate(gate, alphas[m], 3) * crossed * mask[..., None]
  return out


class CrossModalEncoderBlock(nn.Module):
  """One pre-LN Transformer block over the two streams with crossed attention logits (module
  docstring): per stream m, x_m += out_proj_m(attention), x_m += MLP_m(LN(x_m)).

  x_v [B, T, D_v], x_a [B, T, D_a] (same T, same number of heads), mask [B, T], gate [B] or None
  -> (x_v, x_a). `cross=False` drops the cross-modal term (the late-fusion block).
  Parameters per stream: '<m>_layer_norm1', '<m>_q_proj', '<m>_k_proj', '<m>_v_proj',
  '<m>_out_proj', '<m>_layer_norm2', '<m>_mlp'; 'F_<m>' transforms stream m's logits for the
  other stream.
  """
  num_heads: int
  mlp_dim: int
  transform: str = "relu"
  dropout_rate: float = 0.0
  num_layers: int = 1
  cross: bool = True

  @nn.compact
  def __call__(self, x_v, x_a, mask, gate=None, *, train: bool = False):
    streams = dict(zip(STREAMS, (x_v, x_a)))
    logits, values, normed = {}, {}, {}
    for m, x in streams.items():
      width = x.shape[-1]
      if width % self.num_heads:
        raise ValueError(f"CrossModalEncoderBlock: {m} width {width} is not divisible by "
                         f"{self.num_heads} heads")
      std = width ** -0.5 * (2 * self.num_layers) ** -0.5
      normed[m] = nn.LayerNorm(1e-6, name=f"{m}_layer_norm1")(x)
      q, k, values[m] = (project_heads(normed[m], self.num_heads, std, f"{m}_{p}_proj")
                         for p in ("q", "k", "v"))
      logits[m] = attention_logits(q, k)  # [B, H, T, T]
    attention_mask = nn.make_attention_mask(mask > 0, mask > 0, dtype=jnp.bool_)
    outputs = []
    for m, other in zip(STREAMS, reversed(STREAMS)):
      combined = logits[m]
      if self.cross:
        # F_other maps the other stream's logits onto this stream's (before the softmax).
        crossed = HeadwiseTransform(self.transform, name=f"F_{other}")(logits[other])
        combined = combined + _gate(gate, combined, 4) * crossed
      x = streams[m]
      h = attend(combined, attention_mask, values[m])
      h = Dense(x.shape[-1], kernel_init=nn.initializers.normal(x.shape[-1] ** -0.5),
                name=f"{m}_out_proj")(h)
      x = x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)
      h = nn.LayerNorm(1e-6, name=f"{m}_layer_norm2")(x)
      h = Mlp(self.mlp_dim, "gelu_new", self.num_layers, name=f"{m}_mlp")(h)
      outputs.append(x + nn.Dropout(self.dropout_rate)(h, deterministic=not train))
    return tuple(outputs)


class CrossModalTransformer(nn.Module):
  """Cross-modal Transformer encoder of two aligned streams: per stream an input projection
  (of the frame features, with `context` appended when given) and learned position embeddings,
  `num_layers` CrossModalEncoderBlocks, a final LayerNorm and the masked mean over real frames.

  x_v [B, T, D_v], x_a [B, T, D_a], mask [B, T], gate [B] or None, context [B, E] or None ->
  (e_v [B, d_model], e_a [B, d_model]).
  """
  d_model: int
  num_heads: int
  num_layers: int
  mlp_dim: int
  max_frames: int
  transform: str = "relu"
  dropout_rate: float = 0.0
  cross: bool = True

  @nn.compact
  def __call__(self, x_v, x_a, mask, gate=None, context=None, *, train: bool = False):
    if x_v.shape[1] > self.max_frames:
      raise ValueError(f"CrossModalTransformer: {x_v.shape[1]} frames > "
                       f"max_frames={self.max_frames}")
    hs = []
    for m, x in zip(STREAMS, (x_v, x_a)):
      h = Dense(self.d_model, name=f"{m}_input_projection")(_with_context(x, context))
      positions = self.param(f"{m}_position_embedding", nn.initializers.normal(0.02),
                             (self.max_frames, self.d_model))
      hs.append(nn.Dropout(self.dropout_rate)(h + positions[None, :h.shape[1]],
                                              deterministic=not train))
    for i in range(self.num_layers):
      hs = CrossModalEncoderBlock(self.num_heads, self.mlp_dim, self.transform,
                                  self.dropout_rate, self.num_layers, self.cross,
                                  name=f"block_{i}")(*hs, mask, gate, train=train)
    return tuple(masked_mean(nn.LayerNorm(name=f"{m}_final_ln")(h), mask)
                 for m, h in zip(STREAMS, hs))


class CrossModalNetVLAD(nn.Module):
  """Cross-modal NetVLAD of two aligned streams (module docstring):

    V_v = vlad(alpha_v + g F_a(alpha_a), x_v, c_v),  V_a = vlad(alpha_a + g F_v(alpha_v), x_a, c_a)

  with alpha_m the masked soft assignment of stream m (K_m clusters; computed from the frame
  features with `context` appended when given) and F_m: K_m -> K_other (AttentionTransform),
  zero at padded frames. x_v [B, T, D_v], x_a [B, T, D_a], mask [B, T] -> (V_v [B, K_v * D_v],
  V_a [B, K_a * D_a]), each L2-normalised as in NetVLAD.
  """
  clusters: Tuple[int, int]  # (K_v, K_a)
  transform: str = "relu"
  cross: bool = True

  @nn.compact
  def __call__(self, x_v, x_a, mask, gate=None, context=None, *, train: bool = False):
    xs = dict(zip(STREAMS, (x_v, x_a)))
    ks = dict(zip(STREAMS, self.clusters))
    alphas = {m: soft_assignment(_with_context(x, context), mask, ks[m], train=train,
                                 prefix=f"{m}_") for m, x in xs.items()}
    if self.cross:
      alphas = crossed_weights(alphas, ks, mask, gate, self.transform)
    return tuple(vlad_descriptor(alphas[m], xs[m],
                                 vlad_centers(self, ks[m], xs[m].shape[-1], prefix=f"{m}_"))
                 for m in STREAMS)


def masked_temporal_softmax(scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """alpha_tn = softmax over real frames t of scores [B, T, N]; 0 at padded frames."""
  alpha = masked_softmax(scores, mask[..., None] > 0, axis=1)
  return alpha * mask[..., None].astype(scores.dtype)


class AttentionClusters(nn.Module):
  """N attention units over a sequence (Long et al. 2018, attention clusters, without the
  shifting operation): alpha_n = softmax_t(w_n^T tanh(W h_t)).

  h [B, T, D], mask [B, T] -> alpha [B, T, N] (0 at padded frames, sums to 1 over real frames).
  """
  num_units: int
  hidden: int

  @nn.compact
  def __call__(self, h: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    scores = Dense(self.num_units, name="score")(jnp.tanh(Dense(self.hidden, name="project")(h)))
    return masked_temporal_softmax(scores, mask)


def cluster_context(weights: jnp.ndarray, h: jnp.ndarray) -> jnp.ndarray:
  """c_n = sum_t w_tn h_t for every unit n, concatenated: [B, T, N], [B, T, D] -> [B, N * D]."""
  context = jnp.einsum("btn,btd->bnd", weights, h)
  return context.reshape(context.shape[0], -1)


class RecurrentStates(nn.Module):
  """LSTM states h_t of a padded sequence (a flax scan over time; jit- and shard-friendly):
  x [B, T, D], mask [B, T] (real frames first) -> [B, T, hidden]. States at real frames do not
  depend on the padding after them."""
  hidden: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    lengths = jnp.sum(mask > 0, axis=1).astype(jnp.int32)
    return nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="lstm")(x, seq_lengths=lengths)


class AttentionRNN(nn.Module):
  """Attention-cluster RNN tower of one stream (the early- and late-fusion baseline): LSTM
  states h, N attention units alpha = AttentionClusters(h), c = [sum_t alpha_tn h_t]_n.
  x [B, T, D], mask [B, T] -> [B, N * hidden]."""
  hidden: int
  num_units: int
  attention_hidden: int

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    del train
    h = RecurrentStates(self.hidden, name="rnn")(x, mask)
    alpha = AttentionClusters(self.num_units, self.attention_hidden, name="attention")(h, mask)
    return cluster_context(alpha, h)


class CrossModalAttentionRNN(nn.Module):
  """Cross-modal attention-cluster RNN of two aligned streams (module docstring):

    c_v = [sum_t (alpha_v + g F_a(alpha_a))_tn h_v,t]_n,  c_a likewise with F_v(alpha_v),

  with h_m the LSTM states of stream m (its frame features with `context` appended when given)
  and alpha_m its N_m attention units; F_m: N_m -> N_other, zero at padded frames.
  x_v [B, T, D_v], x_a [B, T, D_a], mask [B, T] -> (c_v [B, N_v * hidden], c_a [B, N_a * hidden]).
  """
  hidden: int
  num_units: Tuple[int, int]  # (N_v, N_a)
  attention_hidden: int
  transform: str = "relu"
  cross: bool = True

  @nn.compact
  def __call__(self, x_v, x_a, mask, gate=None, context=None, *, train: bool = False):
    del train
    units = dict(zip(STREAMS, self.num_units))
    states, alphas = {}, {}
    for m, x in zip(STREAMS, (x_v, x_a)):
      states[m] = RecurrentStates(self.hidden, name=f"{m}_rnn")(_with_context(x, context), mask)
      alphas[m] = AttentionClusters(units[m], self.attention_hidden,
                                    name=f"{m}_attention")(states[m], mask)
    if self.cross:
      alphas = crossed_weights(alphas, units, mask, gate, self.transform)
    return tuple(cluster_context(alphas[m], states[m]) for m in STREAMS)
