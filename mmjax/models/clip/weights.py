"""Hugging Face CLIP checkpoints <-> Flax parameters.

A checkpoint directory is what transformers' `CLIPModel.save_pretrained` writes: `config.json`
plus `model.safetensors` (or shards listed in `model.safetensors.index.json`). Tensor names map to
Flax paths one-to-one (modules.py mirrors them): `a.layers.3.b.weight` <-> `a/layers_3/b/<leaf>`,
with
  torch Linear weight [out, in]        <-> Dense kernel [in, out] (transposed)
  torch Conv2d weight [O, I, H, W]     <-> Conv kernel [H, W, I, O]
  LayerNorm weight / Embedding weight  <-> scale / embedding;  biases, class_embedding and
  logit_scale as they are.
Transposes are exact, so load -> save reproduces every tensor bit for bit (dtype kept).
Deep-prompt parameters (`.../prompts`) are not part of the CLIP format: loading into a prompted
model keeps their initial values; saving skips them.
"""

import json
import os
import re
import struct
from typing import Any, Dict, Optional, Tuple

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from mmjax.models.clip.config import ClipConfig
from mmjax.models.clip.modules import Clip
from mmjax.models.hf_config import read_config_json

# Buffers some checkpoints carry that are not parameters (recomputed, never trained).
_IGNORED = re.compile(r".*embeddings\.position_ids$")
_PROMPTS = "prompts"


def _hf_name(path: Tuple[str, ...]) -> Tuple[str, str]:
  """Flax path -> (HF tensor name, layout: 'linear' | 'conv' | 'same')."""
  *parents, leaf = path
  prefix = ".".join(re.sub(r"^layers_(\d+)$", r"layers.\1", p) for p in parents)
  if leaf == "kernel":
    layout = "conv" if parents[-1] == "patch_embedding" else "linear"
    return f"{prefix}.weight", layout
  if leaf in ("scale", "embedding"):
    return f"{prefix}.weight", "same"
  if leaf == "bias":
    return f"{prefix}.bias", "same"
  return ".".join(parents + [leaf]), "same"  # class_embedding, logit_scale


def _to_flax(tensor: np.ndarray, layout: str) -> np.ndarray:
  if layout == "linear":
    return np.ascontiguousarray(tensor.T)
  if layout == "conv":
    return np.ascontiguousarray(tensor.transpose(2, 3, 1, 0))
  return tensor


def _to_torch(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == "linear":
    return np.ascontiguousarray(array.T)
  if layout == "conv":
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
  return np.array(array)  # a copy that keeps 0-d arrays 0-d (logit_scale)


def params_from_state_dict(state_dict: Dict[str, np.ndarray], template, source: str = "state dict"
                           ) -> Dict[str, Any]:
  """Flax params shaped like `template` (a params tree or its ShapeDtypeStructs) from HF tensors.

  Prompt leaves (absent from CLIP checkpoints) are taken from `template`, which must then hold
  arrays. Raises ValueError listing missing, unexpected and mis-shaped tensors by name.
  """
  flat = traverse_util.flatten_dict(template)
  params, missing, mismatched, used = {}, [], [], set()
  for path, leaf in flat.items():
    if path[-1] == _PROMPTS:
      params[path] = leaf
      continue
    name, layout = _hf_name(path)
    if name not in state_dict:
      missing.append(name)
      continue
    used.add(name)
    array = _to_flax(np.asarray(state_dict[name]), layout)
    if array.shape != tuple(leaf.shape):
      mismatched.append(f"{name}: checkpoint {list(state_dict[name].shape)}, model expects "
                        f"{list(_to_torch(np.empty(leaf.shape, np.uint8), layout).shape)}")
      continue
    params[path] = array
  unexpected = sorted(k for k in state_dict if k not in used and not _IGNORED.fullmatch(k))
  problems = []
  if missing:
    problems.append(f"missing tensors: {', '.join(sorted(missing))}")
  if mismatched:
    problems.append(f"shape mismatches: {'; '.join(mismatched)}")
  if unexpected:
    problems.append(f"unexpected tensors: {', '.join(unexpected)}")
  if problems:
    raise ValueError(f"{source} does not match the CLIP config: " + " | ".join(problems))
  return traverse_util.unflatten_dict(params)


def state_dict_from_params(params) -> Dict[str, np.ndarray]:
  """HF tensor name -> numpy array (torch layout) for every non-prompt parameter."""
  out = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    if path[-1] == _PROMPTS:
      continue
    name, layout = _hf_name(path)
    out[name] = _to_torch(np.asarray(jax.device_get(leaf)), layout)
  return out


def read_config(path: str) -> ClipConfig:
  """ClipConfig from `<path>/config.json` (ValueError naming the file when it is not CLIP)."""
  config_file, config = read_config_json(path, "transformers' CLIPModel.save_pretrained")
  if "text_config" not in config or "vision_config" not in config:
    raise ValueError(f"{config_file} is not a CLIPModel config (no text_config/vision_config; "
                     f"model_type={config.get('model_type')!r})")
  return ClipConfig.from_hf_dict(config)


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def load_safetensors(file: str) -> Dict[str, np.ndarray]:
  """Every tensor of one .safetensors file as a host numpy array in its stored dtype, bfloat16
  included (as ml_dtypes.bfloat16, which numpy-based readers cannot represent).

  Format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
  data_offsets: [start, end]}, "__metadata__": ...}, then the raw little-endian data. Errors
  name the file and the tensor (unknown dtype, truncated data).
  """
  with open(file, "rb") as f:
    raw = f.read()
  if len(raw) < 8:
    raise ValueError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
  header_len = struct.unpack("<Q", raw[:8])[0]
  try:
    header = json.loads(raw[8:8 + header_len])
  except ValueError as e:
    raise ValueError(f"{file}: unreadable safetensors header ({e})") from e
  data = memoryview(raw)[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{file}: tensor {name} has dtype {info['dtype']}; supported: "
                       f"{sorted(_SAFETENSORS_DTYPES)}")
    start, end = info["data_offsets"]
    if end > len(data):
      raise ValueError(f"{file}: tensor {name} ends at byte {end} of {len(data)} (truncated)")
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).copy()
  return tensors


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """All tensors of `<path>/model.safetensors` or of the shards its index file lists, in their
  stored dtypes (float32, float16 or bfloat16 ...; see load_safetensors)."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single):
    return load_safetensors(single)
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(load_safetensors(os.path.join(path, shard)))
    return tensors
  found = sorted(os.listdir(path))
  raise FileNotFoundError(f"{path} has no model.safetensors (or model.safetensors.index.json); "
                          f"found {found}. Save the checkpoint with safetensors "
                          "(save_pretrained(..., safe_serialization=True)).")


def from_pretrained(path: str, num_prompts: int = 0, prompt_depth: int = 0, seed: int = 0
                    ) -> Tuple[Clip, Dict[str, Any]]:
  """(model, params) from a Hugging Face CLIP directory; model.apply(params, input_ids=...,
  attention_mask=..., pixel_values=...) gives HF's CLIPModel outputs (pixels NHWC).

  With num_prompts > 0 the model gets deep prompts (initialized from `seed`) around the loaded
  backbone. Params keep the checkpoint's dtype; `params` is the {'params': ...} variables dict.
  """
  config = read_config(path)
  model = Clip(config, num_prompts=num_prompts, prompt_depth=prompt_depth)
  template = init_params(model, seed) if num_prompts else abstract_params(model)
  params = params_from_state_dict(read_state_dict(path), template["params"],
                                  source=os.path.join(path, "model.safetensors"))
  return model, {"params": params}


def save_pretrained(params, config: ClipConfig, path: str,
                    extra_config: Optional[Dict[str, Any]] = None) -> None:
  """Writes `<path>/config.json` and `<path>/model.safetensors` in transformers' layout
  (loadable by CLIPModel.from_pretrained and by from_pretrained above). `params` may be the
  variables dict or the bare params tree; prompts are not saved."""
  params = params.get("params", params)
  os.makedirs(path, exist_ok=True)
  config_dict = {**config.to_hf_dict(), **(extra_config or {})}
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config_dict, f, indent=2)
  save_file(state_dict_from_params(params), os.path.join(path, "model.safetensors"),
            metadata={"format": "pt"})


def example_inputs(config: ClipConfig, batch: int = 1) -> Dict[str, np.ndarray]:
  """Zero inputs of the right shapes for model.init / eval_shape."""
  length = config.text.max_position_embeddings
  size = config.vision.image_size
  return {"input_ids": np.zeros((batch, length), np.int32),
          "attention_mask": np.ones((batch, length), np.int32),
          "pixel_values": np.zeros((batch, size, size, config.vision.num_channels), np.float32)}


def _init_inputs(model: Clip):
  inputs = example_inputs(model.config)
  # Leave room for the text prompts inside the position table.
  inputs["input_ids"] = inputs["input_ids"][:, :inputs["input_ids"].shape[1] - model.num_prompts]
  inputs["attention_mask"] = inputs["attention_mask"][:, :inputs["input_ids"].shape[1]]
  return inputs


def init_params(model: Clip, seed: int = 0) -> Dict[str, Any]:
  """Randomly initialized variables {'params': ...} (transformers' init scheme)."""
  return jax.jit(lambda key: model.init(key, **_init_inputs(model)))(jax.random.PRNGKey(seed))


def abstract_params(model: Clip):
  """ShapeDtypeStructs of init_params (no allocation)."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **_init_inputs(model)))
