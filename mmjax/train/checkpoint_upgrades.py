"""Upgrades of checkpoints written by earlier releases to today's parameter layout.

Each upgrade maps the flat {'/'-joined path: array} view of a saved train state (params,
optimizer moments and task state alike, since optax mirrors the params tree) to the current
layout. `Checkpointer.restore` applies them when a checkpoint's paths do not match the
current state, so users' checkpoints keep loading after code moves.
"""

import re
from typing import Callable, Dict, List, Tuple

import numpy as np

Arrays = Dict[str, np.ndarray]

# 0.1.0 Transformer blocks (flax MultiHeadDotProductAttention and ln1/ln2/mlp_in/mlp_out) ->
# mmjax.nn.transformer.EncoderBlock (self_attn/{q,k,v,out}_proj, layer_norm1/2, mlp/fc1/fc2).
_V010_BLOCK = re.compile(r"(?P<block>(?:^|.*/)block_\d+)/(?P<rest>.*)$")
_V010_RENAMES = {
    "attention/query/": "self_attn/q_proj/", "attention/key/": "self_attn/k_proj/",
    "attention/value/": "self_attn/v_proj/", "attention/out/": "self_attn/out_proj/",
    "ln1/": "layer_norm1/", "ln2/": "layer_norm2/", "mlp_in/": "mlp/fc1/",
    "mlp_out/": "mlp/fc2/",
}


def _v010_transformer_blocks(arrays: Arrays) -> Arrays:
  """q/k/v kernels [d, heads, head_dim] -> [d, heads * head_dim], biases [heads, head_dim] ->
  [heads * head_dim]; the output kernel [heads, head_dim, d] -> [heads * head_dim, d]. The
  same function: the new attention splits heads in the same order."""
  out = {}
  for path, value in arrays.items():
    match = _V010_BLOCK.match(path)
    rest = match.group("rest") if match else ""
    old = next((o for o in _V010_RENAMES if rest.startswith(o)), None)
    if old is None:
      out[path] = value
      continue
    new_rest = _V010_RENAMES[old] + rest[len(old):]
    value = np.asarray(value)
    if old == "attention/out/" and rest.endswith("kernel"):
      value = value.reshape(-1, value.shape[-1])
    elif old.startswith("attention/") and old != "attention/out/":
      value = value.reshape(value.shape[0], -1) if rest.endswith("kernel") else value.reshape(-1)
    out[f"{match.group('block')}/{new_rest}"] = value
  return out


def _has_v010_blocks(arrays: Arrays) -> bool:
  return any(re.search(r"(?:^|/)block_\d+/attention/query/kernel$", path) for path in arrays)


UPGRADES: List[Tuple[str, Callable[[Arrays], bool], Callable[[Arrays], Arrays]]] = [
    ("the 0.1.0 Transformer block layout", _has_v010_blocks, _v010_transformer_blocks),
]


def upgrade(arrays: Arrays) -> Tuple[Arrays, List[str]]:
  """Applies every upgrade whose detector fires; returns (arrays, names of those applied)."""
  applied = []
  for name, detect, apply in UPGRADES:
    if detect(arrays):
      arrays = apply(arrays)
      applied.append(name)
  return arrays, applied
