"""VideoMAE encoder (Tong et al. 2022): a ViT-B over space-time tubelets, the 3D transformer of
the CREMA-D shared-encoders paper, with Hugging Face checkpoint import and export.

  tubelets:  x [B, T, H, W, 3] -> N = (T / t)(H / p)(W / p) tubelets t x p x p (t = 2, p = 16),
             embedded by `patch_embedding` (Conv3d, kernel = stride = (t, p, p), with bias),
             tokens in (time, row, column) order
  positions: z_0 = tokens + S[:N], S the FIXED sinusoid table S[n, 2i] = sin(n / 10000^(2i/D)),
             S[n, 2i + 1] = cos(n / 10000^(2i/D)) (float64, then float32, as transformers builds
             it), built for the actual N: 32 frames at 224 x 224 give 16 x 14 x 14 = 3136 tokens
  blocks:    pre-LN EncoderBlock (mmjax.nn.transformer, shared with CLIP):
             z = z + out(attn(LN_before(z))); z = z + fc2(gelu(fc1(LN_after(z)))), exact GELU,
             LayerNorm eps = config.layer_norm_eps (1e-12 in the released configs)
  output:    use_mean_pooling = False: y = layernorm(z_L)[:, 0]  (transformers' VideoMAEModel
             applies `layernorm`; its classifier reads the first token: VideoMAE has no class token)
             use_mean_pooling = True: y = fc_norm(mean_n z_L)  (fc_norm eps 1e-5; the Kinetics
             fine-tuned checkpoints)
             -> Dropout(dropout_rate) -> classifier(y) [B, num_classes] (num_classes = 0: y [B, D])
This is transformers' VideoMAEForVideoClassification (VideoMAEModel's last_hidden_state is
`encode`); the paper fine-tunes with dropout 0.5 before the head. The attention and hidden
dropouts of the HF config (0 in the released ones) are not modelled.

Key bias: VideoMAE's key projection has no bias; the shared block's k_proj has one. A key bias b is
exact at zero and stays harmless: the logit of query q against key k_j becomes q.(k_j + b) =
q.k_j + q.b, the same for every key of that query, so the softmax (and hence the output) does not
change and the gradient with respect to b is zero. Import sets it to zero; export drops it.
q_proj/v_proj biases hold VideoMAE's q_bias/v_bias (zero when the config has qkv_bias = False).

Checkpoint names (transformers; 'videomae.' prefix in the classification and pre-training models):
  embeddings.patch_embeddings.projection.{weight,bias}     <- patch_embedding (Conv3d
    [O, I, t, p, p] <-> [t, p, p, I, O])
  encoder.layer.{i}.layernorm_before / layernorm_after     <- layers_{i}/layer_norm1 / layer_norm2
  encoder.layer.{i}.attention.attention.{query,key,value}.weight, .q_bias, .v_bias (hub files;
    transformers 5 names them query.bias / value.bias in memory: both spellings are read)
  encoder.layer.{i}.attention.output.dense                 <- layers_{i}/self_attn/out_proj
  encoder.layer.{i}.intermediate.dense / output.dense      <- layers_{i}/mlp/fc1 / fc2
  layernorm, fc_norm, classifier                            (top level: no prefix)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from mmjax.models.clip import sharding as clip_sharding
from mmjax.models.clip.weights import read_state_dict
from mmjax.models.hf_config import read_dataclass_config
from mmjax.models.torch_import import state_dict_from_variables, variables_from_state_dict
from mmjax.nn import EncoderBlock

__all__ = ["PARTITION_RULES", "VideoMAE", "VideoMAEConfig", "from_pretrained",
           "params_from_state_dict", "read_videomae_config", "save_pretrained",
           "sinusoid_table"]

_FC_NORM_EPS = 1e-5  # transformers' fc_norm is nn.LayerNorm(hidden_size): torch's default eps


@functools.lru_cache(maxsize=8)
def sinusoid_table(num_positions: int, width: int) -> np.ndarray:
  """The fixed position table [num_positions, width] (module docstring), float32."""
  positions = np.arange(num_positions, dtype=np.float64)[:, None]
  angles = positions / np.power(10000, 2 * (np.arange(width) // 2) / width)
  table = np.empty_like(angles)
  table[:, 0::2] = np.sin(angles[:, 0::2])
  table[:, 1::2] = np.cos(angles[:, 1::2])
  return table.astype(np.float32)


class VideoMAE(nn.Module):
  """VideoMAE encoder and head (module docstring). x float32 [batch, frames, height, width,
  channels] -> logits [batch, num_classes] or pooled features [batch, hidden_size]
  (num_classes = 0). frames, height and width must be multiples of tubelet_size / patch_size;
  num_frames and image_size are the defaults for example inputs, any multiple works (the
  position table is fixed, not learned)."""
  num_classes: int = 0
  num_frames: int = 16
  image_size: int = 224
  tubelet_size: int = 2
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.0
  use_mean_pooling: bool = True
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  num_channels: int = 3

  def setup(self):
    kernel = (self.tubelet_size, self.patch_size, self.patch_size)
    self.patch_embedding = nn.Conv(self.hidden_size, kernel, strides=kernel, padding="VALID",
                                   kernel_init=nn.initializers.truncated_normal(0.02))
    self.layers = [EncoderBlock(self.num_heads, self.mlp_dim, self.hidden_act, self.layer_norm_eps,
                                num_layers=self.num_layers) for _ in range(self.num_layers)]
    if self.use_mean_pooling:
      self.fc_norm = _fc_norm()
    else:
      self.layernorm = nn.LayerNorm(self.layer_norm_eps)
    if self.num_classes:
      self.classifier = _classifier(self.num_classes)
    self.dropout = nn.Dropout(self.dropout_rate)

  def encode(self, x: jnp.ndarray) -> jnp.ndarray:
    """Token features [batch, N, hidden_size] of x [batch, frames, height, width, channels],
    N = (frames / tubelet)(height / patch)(width / patch): transformers' VideoMAEModel
    last_hidden_state (after `layernorm` when use_mean_pooling is False)."""
    _, frames, height, width, channels = x.shape
    if (frames % self.tubelet_size or height % self.patch_size or width % self.patch_size
        or channels != self.num_channels):
      raise ValueError(f"VideoMAE: input [batch, frames, height, width, channels] = {x.shape}; "
                       f"frames must be a multiple of tubelet_size={self.tubelet_size}, height "
                       f"and width of patch_size={self.patch_size}, channels {self.num_channels}")
    z = self.patch_embedding(x)
    z = z.reshape(z.shape[0], -1, self.hidden_size)
    z = z + jnp.asarray(sinusoid_table(z.shape[1], self.hidden_size), z.dtype)
    for layer in self.layers:
      z = layer(z, None)
    return z if self.use_mean_pooling else self.layernorm(z)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """x [batch, frames, height, width, channels] -> [batch, num_classes] or [batch, hidden]."""
    z = self.encode(x)
    y = self.fc_norm(z.mean(axis=1)) if self.use_mean_pooling else z[:, 0]
    y = self.dropout(y, deterministic=not train)
    return self.classifier(y) if self.num_classes else y


@dataclasses.dataclass(frozen=True)
class VideoMAEConfig:
  """The fields of a transformers VideoMAEConfig that the encoder needs (ViT-B defaults)."""
  image_size: int = 224
  patch_size: int = 16
  num_channels: int = 3
  num_frames: int = 16
  tubelet_size: int = 2
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  qkv_bias: bool = True
  use_mean_pooling: bool = True

  def model(self, num_classes: int = 0, dropout_rate: float = 0.0) -> VideoMAE:
    """The VideoMAE module of this config with a head of `num_classes` (0: pooled features)."""
    return VideoMAE(num_classes=num_classes, num_frames=self.num_frames,
                    image_size=self.image_size, tubelet_size=self.tubelet_size,
                    patch_size=self.patch_size, hidden_size=self.hidden_size,
                    num_layers=self.num_hidden_layers, num_heads=self.num_attention_heads,
                    mlp_dim=self.intermediate_size, dropout_rate=dropout_rate,
                    use_mean_pooling=self.use_mean_pooling, layer_norm_eps=self.layer_norm_eps,
                    hidden_act=self.hidden_act, num_channels=self.num_channels)

  @classmethod
  def of(cls, model: VideoMAE) -> VideoMAEConfig:
    """The config that describes `model`'s architecture."""
    return cls(image_size=model.image_size, patch_size=model.patch_size,
               num_channels=model.num_channels, num_frames=model.num_frames,
               tubelet_size=model.tubelet_size, hidden_size=model.hidden_size,
               num_hidden_layers=model.num_layers, num_attention_heads=model.num_heads,
               intermediate_size=model.mlp_dim, hidden_act=model.hidden_act,
               layer_norm_eps=model.layer_norm_eps, use_mean_pooling=model.use_mean_pooling)


def read_videomae_config(path: str) -> VideoMAEConfig:
  """VideoMAEConfig from `<path>/config.json` (qkv_bias also read as transformers 5's qv_bias;
  unknown keys ignored; ValueError naming the file when model_type is not 'videomae')."""
  return read_dataclass_config(path, VideoMAEConfig, ("videomae",),
                               "transformers' VideoMAE*.save_pretrained", {"qv_bias": "qkv_bias"})


_LAYER_NAMES = {
    "layer_norm1": "layernorm_before",
    "layer_norm2": "layernorm_after",
    "self_attn/q_proj": "attention.attention.query",
    "self_attn/k_proj": "attention.attention.key",
    "self_attn/v_proj": "attention.attention.value",
    "self_attn/out_proj": "attention.output.dense",
    "mlp/fc1": "intermediate.dense",
    "mlp/fc2": "output.dense",
}
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# Tensors of pre-training checkpoints (the MAE decoder) that the encoder does not use.
_PRETRAINING_ONLY = (r"decoder\..*", r"encoder_to_decoder\..*", r"mask_token")
_KEY_BIAS = r"params/layers_\d+/self_attn/k_proj/bias"
_QV_BIAS = r"params/layers_\d+/self_attn/(q_proj|v_proj)/bias"


def _fc_norm() -> nn.LayerNorm:
  return nn.LayerNorm(_FC_NORM_EPS)


def _classifier(num_classes: int) -> nn.Dense:
  return nn.Dense(num_classes, kernel_init=nn.initializers.normal(0.02))


def torch_name(path: Tuple[str, ...]) -> str:
  """Flax variable path (collection first) -> transformers tensor name without the 'videomae.'
  prefix, e.g. ('params', 'layers_3', 'mlp', 'fc1', 'kernel') ->
  'encoder.layer.3.intermediate.dense.weight' (module docstring)."""
  _, *modules, leaf = path
  if modules[0] == "patch_embedding":
    return f"embeddings.patch_embeddings.projection.{_LEAF_NAMES[leaf]}"
  match = re.fullmatch(r"layers_(\d+)", modules[0])
  if match:
    return (f"encoder.layer.{match.group(1)}.{_LAYER_NAMES['/'.join(modules[1:])]}."
            f"{_LEAF_NAMES[leaf]}")
  return f"{modules[0]}.{_LEAF_NAMES[leaf]}"  # layernorm, fc_norm, classifier


def _canonical(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Names without the 'videomae.' prefix, hub q_bias/v_bias as query.bias/value.bias."""
  out = {}
  for name, tensor in state_dict.items():
    name = re.sub(r"^videomae\.", "", name)
    name = re.sub(r"\.attention\.attention\.q_bias$", ".attention.attention.query.bias", name)
    name = re.sub(r"\.attention\.attention\.v_bias$", ".attention.attention.value.bias", name)
    out[name] = tensor
  return out


def _template(model: VideoMAE, tensors: Mapping[str, np.ndarray], zeroed: Tuple[str, ...],
              seed: int) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
  """(template variables, keep patterns) for variables_from_state_dict: the model's parameter
  shapes (jax.eval_shape: no initialisation of the backbone), zeros at the `zeroed` paths, and
  freshly initialised fc_norm / classifier where the checkpoint has none of the right size."""
  x = jnp.zeros((1, model.tubelet_size, model.patch_size, model.patch_size, model.num_channels))
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  flat = {path: (np.zeros(leaf.shape, leaf.dtype)
                 if any(re.fullmatch(p, "/".join(path)) for p in zeroed) else leaf)
          for path, leaf in traverse_util.flatten_dict(template).items()}
  keep = list(zeroed)
  head_key, norm_key = jax.random.split(jax.random.PRNGKey(seed))
  features = jnp.zeros((1, model.hidden_size))
  classifier = tensors.get("classifier.weight")
  if model.num_classes and (classifier is None or classifier.shape[0] != model.num_classes):
    head = jax.jit(_classifier(model.num_classes).init)(head_key, features)["params"]
    flat.update({("params", "classifier", k): np.asarray(v) for k, v in head.items()})
    keep.append(r"params/classifier/.*")
  if model.use_mean_pooling and "fc_norm.weight" not in tensors:
    norm = jax.jit(_fc_norm().init)(norm_key, features)["params"]
    flat.update({("params", "fc_norm", k): np.asarray(v) for k, v in norm.items()})
    keep.append(r"params/fc_norm/.*")
  return traverse_util.unflatten_dict(flat), tuple(keep)


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: VideoMAEConfig, *,
                           num_classes: Optional[int] = None, dropout_rate: float = 0.0,
                           seed: int = 0, source: str = "state dict"
                           ) -> Tuple[VideoMAE, Dict[str, Any]]:
  """(model, variables {'params': ...}) from a transformers VideoMAE state dict (VideoMAEModel,
  VideoMAEForVideoClassification or VideoMAEForPreTraining names; numpy arrays).

  num_classes None: the checkpoint's classifier size (0 when it has none). A different size, or a
  checkpoint without a classifier, gets a new head initialised from `seed` (fc_norm too when the
  checkpoint has none: VideoMAEModel files); the checkpoint's classifier is then not used. Key
  biases are zero (module docstring), and so are q/v biases when config.qkv_bias is False.
  Raises ValueError naming `source` for missing, mis-shaped or unexpected tensors.
  """
  tensors = _canonical(state_dict)
  if num_classes is None:
    num_classes = tensors["classifier.weight"].shape[0] if "classifier.weight" in tensors else 0
  model = config.model(num_classes, dropout_rate)
  template, keep = _template(model, tensors, (_KEY_BIAS,) + (() if config.qkv_bias else
                                                              (_QV_BIAS,)), seed)
  ignore = _PRETRAINING_ONLY + ((r"classifier\..*",) if r"params/classifier/.*" in keep
                                or not num_classes else ())
  variables = variables_from_state_dict(tensors, template, torch_name, keep=keep, ignore=ignore,
                                        source=source)
  return model, variables


def from_pretrained(path: str, *, num_classes: Optional[int] = None, dropout_rate: float = 0.0,
                    seed: int = 0) -> Tuple[VideoMAE, Dict[str, Any]]:
  """(model, variables) from a transformers VideoMAE directory (config.json + model.safetensors);
  model.apply(variables, x) with x [batch, frames, height, width, 3] gives
  VideoMAEForVideoClassification's logits (or the pooled features for num_classes = 0), and
  model.apply(variables, x, method=VideoMAE.encode) VideoMAEModel's last_hidden_state. Arguments
  as params_from_state_dict."""
  return params_from_state_dict(read_state_dict(path), read_videomae_config(path),
                                num_classes=num_classes, dropout_rate=dropout_rate, seed=seed,
                                source=os.path.join(path, "model.safetensors"))


def save_pretrained(variables, model: VideoMAE, path: str) -> None:
  """Writes `<path>/config.json` and `<path>/model.safetensors` as transformers'
  VideoMAEForVideoClassification saves them ('videomae.' prefix, hub q_bias/v_bias names,
  num_labels = model.num_classes; 0 makes the classifier an identity there). The key biases are
  not written (they do not change the outputs: module docstring)."""
  variables = {"params": variables.get("params", variables)}
  tensors = {}
  for name, array in state_dict_from_variables(variables, torch_name).items():
    if name.endswith(".attention.attention.key.bias"):
      continue
    name = re.sub(r"\.attention\.attention\.query\.bias$", ".attention.attention.q_bias", name)
    name = re.sub(r"\.attention\.attention\.value\.bias$", ".attention.attention.v_bias", name)
    if not name.startswith(("fc_norm.", "classifier.")):
      name = "videomae." + name
    tensors[name] = np.ascontiguousarray(array)
  os.makedirs(path, exist_ok=True)
  save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  labels = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
  config = {"model_type": "videomae", "architectures": ["VideoMAEForVideoClassification"],
            **dataclasses.asdict(VideoMAEConfig.of(model)), "qkv_bias": True,
            "id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)


# Partition rules (config.sharding_rules) for FSDP over 'data' (and tensor parallelism over
# 'model' where the mesh has it): the blocks by CLIP's rules (q/k/v_proj, out_proj, fc1, fc2:
# one kernel dimension over 'data', the other over 'model'), the tubelet kernel
# [t, p, p, 3, D] over D, the classifier kernel over its input width; LayerNorms and biases
# outside the blocks replicated.
PARTITION_RULES = (
    (r".*patch_embedding/kernel", (None, None, None, None, ("data", "model"))),
    (r".*classifier/kernel", ("data", None)),
) + clip_sharding.PARTITION_RULES
