"""HuBERT (Hsu et al. 2021) in Flax, with Hugging Face checkpoint import: transformers'
`HubertModel` in eval mode (no dropout, no SpecAugment masking), for feature extraction.

  waveform [B, N] (16 kHz; zero-mean unit-variance per utterance when the checkpoint's
  preprocessor_config.json says do_normalize, see `normalize_waveform`)
  feature encoder: per conv layer i (kernel k_i, stride s_i, conv_dim[i] channels, bias iff
    conv_bias): x = act(norm_i(conv_i(x))), norm_i = GroupNorm with one group per channel on
    layer 0 only (feat_extract_norm 'group', HuBERT-base) or LayerNorm over channels on every
    layer ('layer', HuBERT-large); frames T = (...((N - k_0) // s_0 + 1) - k_1) // s_1 + 1 ...
  feature projection: Dense(LayerNorm(x)) (the LayerNorm iff feat_proj_layer_norm) -> [B, T, H]
  positional embedding: pos(x) = gelu(conv(x)), a grouped conv (kernel K =
    num_conv_pos_embeddings, num_conv_pos_embedding_groups groups, padding K // 2, the last
    output dropped when K is even) whose weight is weight-normalised:
    w[:, :, k] = g[k] v[:, :, k] / ||v[:, :, k]||
  post-norm encoder (do_stable_layer_norm False):
    h_0 = LayerNorm(x + pos(x));  h_i = LN_f(y + ff(y)),  y = LN_a(h_{i-1} + attn(h_{i-1}))
    last_hidden_state = h_L
  stable (pre-norm) encoder (do_stable_layer_norm True):
    h_0 = x + pos(x);  h_i = y + ff(LN_f(y)),  y = h_{i-1} + attn(LN_a(h_{i-1}))
    last_hidden_state = LayerNorm(h_L)   (the encoder's final norm)
  attn: softmax(q k^T / sqrt(d_head) + mask) v over num_attention_heads heads; ff: Dense(act(
  Dense(x))) through intermediate_size.

`hidden_states` is (h_0, ..., h_L), what transformers 5 returns with output_hidden_states=True:
h_0 is the input of the first layer and h_L the last layer's output, so for the stable variant
h_L is *before* the final LayerNorm (transformers 4 put LayerNorm(h_L) there instead).

Padded batches (attention_mask [B, N], 1 = sample, right padding): the frames each utterance
has on its own (`num_frames`) are its valid frames; padded frames are zeroed before the
positional conv and masked as attention keys, as transformers does. Transformers' group-norm
variant computes the GroupNorm statistics over the padded sequence, so its result depends on
the padding; here they are taken over the valid frames only, so every utterance's valid frames
equal those of the utterance run alone, unpadded, in both variants (tests/test_hubert.py).

Parameter names mirror transformers' (`encoder/layers_3/attention/q_proj/kernel` <->
`encoder.layers.3.attention.q_proj.weight`, transposed), so `from_pretrained` reads a
checkpoint's model.safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.models.clip.weights import read_state_dict
from mmjax.models.hf_config import read_dataclass_config
from mmjax.models.torch_import import variables_from_state_dict
from mmjax.nn import Dense, SelfAttention, activation

__all__ = ["PRESETS", "HubertConfig", "HubertModel", "Preprocessing", "conv_output_lengths",
           "from_pretrained", "init_params", "min_samples", "normalize_waveform", "num_frames",
           "params_from_state_dict", "read_config", "read_preprocessing"]

_NORMS = ("group", "layer")
_CONV_NORM_EPS = 1e-5  # torch's GroupNorm / LayerNorm default, which the conv layers use


@dataclasses.dataclass(frozen=True)
class HubertConfig:
  """The fields of transformers' HubertConfig that the forward pass needs (defaults: HuBERT-
  base). Sequences are stored as tuples."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  feat_extract_norm: str = "group"
  feat_extract_activation: str = "gelu"
  feat_proj_layer_norm: bool = True
  conv_dim: Tuple[int, ...] = (512,) * 7
  conv_stride: Tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_kernel: Tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_bias: bool = False
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  conv_pos_batch_norm: bool = False
  do_stable_layer_norm: bool = False

  def __post_init__(self):
    for name in ("conv_dim", "conv_stride", "conv_kernel"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel) > 0:
      raise ValueError(f"conv_dim {self.conv_dim}, conv_stride {self.conv_stride} and "
                       f"conv_kernel {self.conv_kernel} must have the same length")
    if self.feat_extract_norm not in _NORMS:
      raise ValueError(f"feat_extract_norm={self.feat_extract_norm!r}; expected one of {_NORMS}")
    if self.conv_pos_batch_norm:
      raise ValueError("conv_pos_batch_norm=True (a BatchNorm positional conv) is not supported")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}")


PRESETS = {
    "base": HubertConfig(),
    # HuBERT-large (and chinese-hubert-large): LayerNorm conv stack with biases, pre-norm encoder.
    "large": HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, feat_extract_norm="layer", conv_bias=True,
                          do_stable_layer_norm=True),
    # Seconds on a CPU: HuBERT-base's conv strides (a frame per 20 ms at 16 kHz), tiny widths.
    "tiny": HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4),
}


def read_config(path: str) -> HubertConfig:
  """The HubertConfig of a checkpoint directory's config.json (model_type 'hubert'; unknown
  keys ignored; ValueError naming the file otherwise)."""
  return read_dataclass_config(path, HubertConfig, ("hubert",),
                               "transformers' HubertModel.save_pretrained")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What the checkpoint's feature extractor (transformers' Wav2Vec2FeatureExtractor) does to a
  waveform: its sampling rate and whether it normalises each utterance."""
  sampling_rate: int = 16000
  do_normalize: bool = True
  source: str = "transformers' Wav2Vec2FeatureExtractor defaults (no preprocessor_config.json)"


def read_preprocessing(path: str) -> Preprocessing:
  """`<path>/preprocessor_config.json`'s sampling_rate and do_normalize; transformers'
  defaults (16000, True) for a missing file or key."""
  file = os.path.join(path, "preprocessor_config.json")
  if not os.path.isfile(file):
    return Preprocessing()
  with open(file, encoding="utf-8") as f:
    values = json.load(f)
  return Preprocessing(int(values.get("sampling_rate", 16000)),
                       bool(values.get("do_normalize", True)), file)


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
  """(x - mean(x)) / sqrt(var(x) + 1e-7) over one utterance, in float32 (transformers'
  Wav2Vec2FeatureExtractor with do_normalize=True)."""
  x = np.asarray(waveform, np.float32)
  return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def conv_output_lengths(config: HubertConfig, lengths) -> List:
  """The lengths after each conv layer of the feature encoder, n -> (n - k) // s + 1, for
  lengths given as ints, numpy or jax arrays. A result <= 0 means too short (no frame)."""
  out = []
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    lengths = (lengths - kernel) // stride + 1
    out.append(lengths)
  return out


def num_frames(config: HubertConfig, num_samples: int) -> int:
  """T, the frames (hidden-state rows) of an utterance of `num_samples` samples (0: shorter
  than `min_samples`)."""
  return max(int(conv_output_lengths(config, int(num_samples))[-1]), 0)


def min_samples(config: HubertConfig) -> int:
  """The fewest input samples that give one frame (the receptive field: 400 = 25 ms at 16 kHz
  for HuBERT-base and -large)."""
  samples = 1
  for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
    samples = (samples - 1) * stride + kernel
  return samples


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class ChannelNorm(nn.Module):
  """GroupNorm with one group per channel (torch's GroupNorm(C, C)): each channel normalised
  over time, then scaled and shifted. x [B, T, C], valid bool [B, T] or None (all frames) ->
  [B, T, C]; the statistics are over the valid frames (biased variance, eps 1e-5)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray | None) -> jnp.ndarray:
    weight = (jnp.ones(x.shape[:2], x.dtype) if valid is None else valid.astype(x.dtype))[..., None]
    count = jnp.maximum(weight.sum(axis=1, keepdims=True), 1.0)
    mean = (x * weight).sum(axis=1, keepdims=True) / count
    var = (jnp.square(x - mean) * weight).sum(axis=1, keepdims=True) / count
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return (x - mean) * jax.lax.rsqrt(var + _CONV_NORM_EPS) * scale + bias


class ConvLayer(nn.Module):
  """Conv layer `index` of the feature encoder: act(norm(conv(x))) (module docstring).
  x [B, N_in, C_in], lengths [B] (this layer's output lengths) or None -> [B, N_out, C_out]."""
  config: HubertConfig
  index: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, lengths) -> jnp.ndarray:
    c, i = self.config, self.index
    x = nn.Conv(c.conv_dim[i], (c.conv_kernel[i],), strides=(c.conv_stride[i],),
                padding="VALID", use_bias=c.conv_bias, name="conv")(x)
    if c.feat_extract_norm == "layer":
      x = _layer_norm(_CONV_NORM_EPS, "layer_norm")(x)
    elif i == 0:
      valid = None if lengths is None else jnp.arange(x.shape[1])[None] < lengths[:, None]
      x = ChannelNorm(name="layer_norm")(x, valid)
    return activation(c.feat_extract_activation)(x)


class FeatureEncoder(nn.Module):
  """The conv stack: waveform [B, N] -> features [B, T, conv_dim[-1]]. `lengths`: the output
  lengths of every layer (`conv_output_lengths` of the utterances' lengths) or None."""
  config: HubertConfig

  @nn.compact
  def __call__(self, input_values: jnp.ndarray, lengths) -> jnp.ndarray:
    x = input_values[..., None]
    for i in range(len(self.config.conv_dim)):
      x = ConvLayer(self.config, i, name=f"conv_layers_{i}")(
          x, None if lengths is None else lengths[i])
    return x


class FeatureProjection(nn.Module):
  """Dense(LayerNorm(x)) (the LayerNorm iff feat_proj_layer_norm): [B, T, C] -> [B, T, H]."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    if c.feat_proj_layer_norm:
      x = _layer_norm(c.layer_norm_eps, "layer_norm")(x)
    return Dense(c.hidden_size, name="projection")(x)


class WeightNormConv(nn.Module):
  """The positional conv: x [B, T, H] -> [B, T', H], a grouped conv with padding K // 2 and
  weight w[:, :, k] = g[k] v[:, :, k] / ||v[:, :, k]|| (torch's weight_norm over dim 2), T' =
  T + 1 for even K. Parameters in torch's layout, as checkpoints store them: weight_g [1, 1, K]
  (g), weight_v [H, H / groups, K] (v), bias [H]."""
  kernel: int
  groups: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    width = x.shape[-1]
    weight_g = self.param("weight_g", nn.initializers.ones, (1, 1, self.kernel))
    weight_v = self.param("weight_v", nn.initializers.normal(0.02),
                          (width, width // self.groups, self.kernel))
    bias = self.param("bias", nn.initializers.zeros, (width,))
    norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(0, 1), keepdims=True))
    weight = (weight_g * weight_v / norm).transpose(2, 1, 0)  # [K, H / groups, H]
    return jax.lax.conv_general_dilated(
        x, weight.astype(x.dtype), window_strides=(1,),
        padding=[(self.kernel // 2, self.kernel // 2)], dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=self.groups) + bias


class PositionalConvEmbedding(nn.Module):
  """act(conv(x)) without the conv's last output for an even kernel (module docstring):
  [B, T, H] -> [B, T, H]."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    y = WeightNormConv(c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups,
                       name="conv")(x)
    if c.num_conv_pos_embeddings % 2 == 0:
      y = y[:, :-1]
    return activation(c.feat_extract_activation)(y)


class FeedForward(nn.Module):
  """output_dense(act(intermediate_dense(x))): [..., H] -> [..., intermediate] -> [..., H]."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    h = activation(c.hidden_act)(Dense(c.intermediate_size, name="intermediate_dense")(x))
    return Dense(c.hidden_size, name="output_dense")(h)


class EncoderLayer(nn.Module):
  """One post-norm or stable (pre-norm) layer (module docstring). x [B, T, H], mask bool
  [B, 1, 1, T] (True = attend) -> [B, T, H]."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    attention = SelfAttention(c.num_attention_heads, name="attention")
    layer_norm = _layer_norm(c.layer_norm_eps, "layer_norm")
    final_layer_norm = _layer_norm(c.layer_norm_eps, "final_layer_norm")
    feed_forward = FeedForward(c, name="feed_forward")
    if c.do_stable_layer_norm:
      x = x + attention(layer_norm(x), mask)
      return x + feed_forward(final_layer_norm(x))
    x = layer_norm(x + attention(x, mask))
    return final_layer_norm(x + feed_forward(x))


class Encoder(nn.Module):
  """Positional embedding, the layers and the encoder's LayerNorm (module docstring).
  x [B, T, H], frame_mask bool [B, T] -> ((h_0, ..., h_L), last_hidden_state)."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, frame_mask: jnp.ndarray):
    c = self.config
    x = jnp.where(frame_mask[..., None], x, 0)
    x = x + PositionalConvEmbedding(c, name="pos_conv_embed")(x)
    layer_norm = _layer_norm(c.layer_norm_eps, "layer_norm")
    if not c.do_stable_layer_norm:
      x = layer_norm(x)
    hidden = [x]
    for i in range(c.num_hidden_layers):
      x = EncoderLayer(c, name=f"layers_{i}")(x, frame_mask[:, None, None, :])
      hidden.append(x)
    return tuple(hidden), layer_norm(x) if c.do_stable_layer_norm else x


class HubertModel(nn.Module):
  """transformers' HubertModel in eval mode (module docstring).

  __call__(input_values float [B, N], attention_mask [B, N] (1 = sample, right padding) or
  None) -> {'hidden_states': (h_0, ..., h_L), each [B, T, H]; 'last_hidden_state': [B, T, H];
  'frame_mask': bool [B, T], True on each utterance's valid frames}.
  """
  config: HubertConfig

  @nn.compact
  def __call__(self, input_values: jnp.ndarray, attention_mask: jnp.ndarray | None = None
               ) -> Dict[str, object]:
    c = self.config
    lengths = (None if attention_mask is None
               else conv_output_lengths(c, attention_mask.astype(jnp.int32).sum(-1)))
    features = FeatureEncoder(c, name="feature_extractor")(input_values, lengths)
    frames = jnp.arange(features.shape[1])[None]
    frame_mask = (jnp.ones(features.shape[:2], bool) if lengths is None
                  else frames < lengths[-1][:, None])
    x = FeatureProjection(c, name="feature_projection")(features)
    hidden, last = Encoder(c, name="encoder")(x, frame_mask)
    return {"hidden_states": hidden, "last_hidden_state": last, "frame_mask": frame_mask}


# -------------------------------------------------------------------------------------------
# Hugging Face checkpoints.

_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias",
           "weight_g": "parametrizations.weight.original0",
           "weight_v": "parametrizations.weight.original1"}
# Older checkpoints (the Hub's HuBERT-base/large, chinese-hubert-large) store the positional
# conv's weight norm as torch.nn.utils.weight_norm did; transformers 5 writes parametrizations.
_LEGACY_WEIGHT_NORM = (("weight_g", _LEAVES["weight_g"]), ("weight_v", _LEAVES["weight_v"]))
_IGNORED = (r"masked_spec_embed",)  # SpecAugment's mask vector (training only)
_TASK_PREFIX = "hubert."  # HubertForCTC / HubertForSequenceClassification


def _torch_name(path: Tuple[str, ...]) -> str:
  """Flax path ('params', ..., leaf) -> transformers' tensor name (module docstring)."""
  _, *parents, leaf = path
  prefix = ".".join(re.sub(r"^((?:conv_)?layers)_(\d+)$", r"\1.\2", p) for p in parents)
  return f"{prefix}.{_LEAVES[leaf]}"


def _canonical_names(state_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Task models' 'hubert.' prefix removed (their heads dropped); legacy weight_g/weight_v
  renamed to transformers 5's parametrization names."""
  if any(name.startswith(_TASK_PREFIX) for name in state_dict):
    state_dict = {name[len(_TASK_PREFIX):]: value for name, value in state_dict.items()
                  if name.startswith(_TASK_PREFIX)}
  renamed = {}
  for name, value in state_dict.items():
    for old, new in _LEGACY_WEIGHT_NORM:
      if name.endswith(f".{old}"):
        name = f"{name[:-len(old)]}{new}"
    renamed[name] = value
  return renamed


def _abstract_variables(model: HubertModel) -> Dict:
  """ShapeDtypeStructs of `model`'s variables {'params': ...} (nothing computed)."""
  inputs = jax.ShapeDtypeStruct((1, min_samples(model.config)), jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)


def init_params(model: HubertModel, seed: int = 0) -> Dict:
  """Random float32 host variables {'params': ...} for benchmarks: N(0, 0.02^2) kernels and
  weight_v, norm scales and weight_g 1, biases 0 (numpy; no compilation, unlike model.init,
  whose per-parameter random initialisers take seconds to compile on a CPU)."""
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name = path[-1].key
    if name in ("scale", "weight_g"):
      return np.ones(leaf.shape, np.float32)
    if name == "bias":
      return np.zeros(leaf.shape, np.float32)
    return rng.standard_normal(leaf.shape, np.float32) * np.float32(0.02)

  return jax.tree_util.tree_map_with_path(value, _abstract_variables(model))


def params_from_state_dict(state_dict: Dict[str, np.ndarray], model: HubertModel,
                           source: str = "state dict") -> Dict:
  """Variables {'params': ...} of `model` from a transformers HuBERT state dict (module
  docstring; float32 whatever the stored dtype). ValueError naming `source` and every missing,
  mis-shaped or unused tensor."""
  return variables_from_state_dict(_canonical_names(state_dict), _abstract_variables(model),
                                   _torch_name, ignore=_IGNORED, source=source)


def from_pretrained(path: str) -> Tuple[HubertModel, Dict]:
  """(model, variables) from a Hugging Face HuBERT directory (config.json + model.safetensors,
  as HubertModel.save_pretrained writes it)."""
  model = HubertModel(read_config(path))
  return model, params_from_state_dict(read_state_dict(path), model,
                                       source=os.path.join(path, "model.safetensors"))
