"""PyTorch state dicts <-> Flax variables, for backbones whose checkpoints come from torchvision
or other PyTorch ports (ResNet, VGG, GoogLeNet, I3D).

A model supplies `torch_name(path)`: the Flax path of a leaf, its collection first (e.g.
('batch_stats', 'layer1_0', 'bn1', 'mean')), -> the torch tensor name
('layer1.0.bn1.running_mean'). Layouts follow from the Flax leaf:

  'kernel' of rank 2   Dense [in, out]            <- Linear weight [out, in] (transposed)
  'kernel' of rank 4   Conv [kh, kw, I, O]        <- Conv2d weight [O, I, kh, kw]
  'kernel' of rank 5   Conv [kt, kh, kw, I, O]    <- Conv3d weight [O, I, kt, kh, kw]
  anything else        as stored (bias, BatchNorm scale/bias/mean/var)

Transposes are exact, so import -> export reproduces every tensor bit for bit.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple

import jax
import numpy as np
from flax import traverse_util

from mmjax.models.clip.weights import load_safetensors

__all__ = ["TorchName", "read_torch_state_dict", "state_dict_from_variables",
           "torch_layout_to_flax", "variables_from_state_dict"]

TorchName = Callable[[Tuple[str, ...]], str]
_COLLECTIONS = ("params", "batch_stats")


def torch_layout_to_flax(tensor: np.ndarray, leaf: str) -> np.ndarray:
  """A torch tensor in the layout of the Flax leaf named `leaf` (module docstring)."""
  if leaf == "kernel" and tensor.ndim >= 2:
    order = (1, 0) if tensor.ndim == 2 else tuple(range(2, tensor.ndim)) + (1, 0)
    return np.ascontiguousarray(tensor.transpose(order))
  return tensor


def _flax_layout_to_torch(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and array.ndim >= 2:
    order = (1, 0) if array.ndim == 2 else (array.ndim - 1, array.ndim - 2) + tuple(
        range(array.ndim - 2))
    return np.ascontiguousarray(array.transpose(order))
  return array


def read_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{name: numpy array} of a torch checkpoint: `.pth`/`.pt`/`.bin` (torch.load with
  weights_only=True; torch is needed only here; a {'state_dict': ...} wrapper is unwrapped) or
  `.safetensors`. Errors name the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file")
  if path.endswith(".safetensors"):
    return load_safetensors(path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(f"{path}: reading a torch checkpoint needs torch "
                      "(pip install torch), or convert it to .safetensors") from error
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises several types for a bad file
    raise ValueError(f"{path}: not a readable torch checkpoint ({error})") from error
  if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
    loaded = loaded["state_dict"]
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path}: expected a state dict (name -> tensor), found "
                     f"{type(loaded).__name__}")
  return {name: value.detach().cpu().numpy() for name, value in loaded.items()
          if hasattr(value, "detach")}


def _flat(variables: Mapping[str, Any]) -> Dict[Tuple[str, ...], Any]:
  return {path: leaf for path, leaf in traverse_util.flatten_dict(dict(variables)).items()
          if path[0] in _COLLECTIONS}


def _matches(patterns: Iterable[str], text: str) -> bool:
  return any(re.fullmatch(pattern, text) for pattern in patterns)


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], template: Mapping[str, Any],
                              torch_name: TorchName, *, keep: Iterable[str] = (),
                              ignore: Iterable[str] = (), source: str = "state dict"
                              ) -> Dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} shaped like `template` (arrays or
  jax.ShapeDtypeStruct) filled from `state_dict`.

  keep: regexes over '/'-joined Flax paths (collection first) whose template values are kept
    (e.g. a freshly initialised head); ignore: regexes over torch names that may stay unused
    (e.g. '.*num_batches_tracked', auxiliary heads). Raises ValueError naming `source` for a
    missing tensor, a shape mismatch, or tensors that nothing reads.
  """
  keep, ignore = tuple(keep), tuple(ignore)
  flat, used, errors = {}, set(), []
  for path, leaf in _flat(template).items():
    if _matches(keep, "/".join(path)):
      flat[path] = leaf
      continue
    name = torch_name(path)
    if name not in state_dict:
      errors.append(f"missing tensor {name!r} (for {'/'.join(path)})")
      continue
    array = torch_layout_to_flax(np.asarray(state_dict[name]), path[-1])
    if tuple(array.shape) != tuple(leaf.shape):
      errors.append(f"tensor {name!r} has shape {tuple(state_dict[name].shape)}, which gives "
                    f"{tuple(array.shape)} for {'/'.join(path)}; the model needs "
                    f"{tuple(leaf.shape)}")
      continue
    flat[path] = array.astype(leaf.dtype, copy=False)
    used.add(name)
  unused = sorted(name for name in state_dict
                  if name not in used and not _matches(ignore, name))
  if unused:
    errors.append(f"{len(unused)} tensor(s) not used by the model: {unused[:8]}"
                  + (" ..." if len(unused) > 8 else ""))
  if errors:
    raise ValueError(f"{source}: cannot load into the model:\n  " + "\n  ".join(errors))
  return traverse_util.unflatten_dict(flat)


def state_dict_from_variables(variables: Mapping[str, Any], torch_name: TorchName
                              ) -> Dict[str, np.ndarray]:
  """The inverse of variables_from_state_dict: {torch name: numpy array in torch's layout}."""
  return {torch_name(path): _flax_layout_to_torch(np.asarray(jax.device_get(leaf)), path[-1])
          for path, leaf in _flat(variables).items()}
