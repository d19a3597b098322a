"""Weights from other runs: `config.init_from` (big_vision's load-by-subtree idea, from config).

Each entry (configs/defaults.py `init_from_entry`) copies one subtree of a source's variables
into one subtree of this model's, on a fresh run (a resumed run has them in its checkpoint):

  source          an mmjax workdir (its checkpoints/: step 'latest', 'best' or a number), a
                  Hugging Face CLIP directory (config.json + model.safetensors[.index.json]),
                  or a variables file `*.npz` (`write_variables`: '<collection>/<path>' ->
                  array, e.g. a pruned and compacted model from mmjax.train.multirun.pnao)
  source_subtree  '/'-joined path in the source's params ('' = all of them)
  target_subtree  '/'-joined path in this model's params ('' = the root)
  frozen          the target subtree gets no updates (mmjax.train.optimizer.freeze: -0.0
                  updates, no optimizer state), so it stays bit-identical through training

From an mmjax workdir the other variable collections (e.g. 'batch_stats') of the same subtree
come along. Entries apply in order (a later one may overwrite part of an earlier one). Every
leaf of the target subtree must be filled with the same shape and dtype: a mismatch names the
parameter path and both shapes/dtypes; a missing subtree is named with what exists there.
"""

import logging
import os
from typing import Dict, List, Sequence, Tuple

import jax
import numpy as np

from mmjax.models import clip
from mmjax.parallel import path_to_str
from mmjax.train.checkpoint import CheckpointReader, flat_paths

log = logging.getLogger("mmjax")

Flat = Dict[str, np.ndarray]


def entries(config) -> List:
  """config.init_from as a list (empty when absent)."""
  return list(config.get("init_from", ()) or ())


def frozen_subtrees(config) -> Tuple[str, ...]:
  """Target subtrees of the frozen entries (for mmjax.train.optimizer.freeze)."""
  return tuple(str(e["target_subtree"]) for e in entries(config) if e.get("frozen", False))


def load_source(entry, key: str) -> Tuple[Dict[str, Flat], str]:
  """({collection: flat {path: array}}, description) of one entry's source variables."""
  source = os.path.abspath(os.path.expanduser(str(entry["source"])))
  if source.endswith(".npz") and os.path.isfile(source):
    return read_variables(source), f"{source} (variables file)"
  if os.path.isdir(os.path.join(source, "checkpoints")):
    reader = CheckpointReader(os.path.join(source, "checkpoints"))
    step = reader.resolve_step(entry.get("step", "latest"))
    saved = reader.read_arrays(step, keys=("params", "model_state"))
    collections = {"params": flat_paths(saved.get("params", {}))}
    for name, tree in (saved.get("model_state") or {}).items():
      collections[name] = flat_paths(tree)
    return collections, f"{source} (mmjax checkpoint step {step})"
  if os.path.isfile(os.path.join(source, "config.json")):
    module = clip.Clip(clip.read_config(source))
    template = clip.abstract_params(module)["params"]
    params = clip.params_from_state_dict(clip.read_state_dict(source), template, source=source)
    # Hugging Face checkpoints are often stored in float16/bfloat16: cast to the model's dtype.
    params = jax.tree.map(lambda a, t: np.asarray(a, dtype=t.dtype), params, template)
    return {"params": flat_paths(params)}, f"{source} (Hugging Face CLIP)"
  raise FileNotFoundError(f"{key}.source={entry['source']!r}: neither an mmjax workdir (with "
                          "checkpoints/) nor a Hugging Face CLIP directory (with config.json)")


def write_variables(path: str, variables) -> None:
  """Writes a variables dict ({'params': tree, other collections}) as '<collection>/<path>' ->
  array in one .npz (through a temporary file and a rename), for `config.init_from`."""
  arrays = {f"{collection}/{leaf_path}": np.asarray(value)
            for collection, tree in variables.items()
            for leaf_path, value in flat_paths(tree).items()}
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def read_variables(path: str) -> Dict[str, Flat]:
  """{collection: flat {path: array}} of a `write_variables` file."""
  out: Dict[str, Flat] = {}
  with np.load(path, allow_pickle=False) as npz:
    for name in npz.files:
      collection, _, leaf_path = name.partition("/")
      out.setdefault(collection, {})[leaf_path] = npz[name]
  if "params" not in out:
    raise ValueError(f"{path}: a variables file needs 'params/...' arrays, has {sorted(out)}")
  return out


def subtree(flat: Flat, prefix: str) -> Flat:
  """{path relative to `prefix`: leaf} of the leaves under `prefix` ('' = all; a leaf's own
  path gives {'': leaf})."""
  prefix = prefix.strip("/")
  if not prefix:
    return dict(flat)
  out = {}
  for path, leaf in flat.items():
    if path == prefix:
      out[""] = leaf
    elif path.startswith(prefix + "/"):
      out[path[len(prefix) + 1:]] = leaf
  return out


def existing_children(flat: Flat, prefix: str) -> List[str]:
  """The names one level below the deepest existing ancestor of `prefix` (for errors)."""
  parts = prefix.strip("/").split("/")
  for depth in range(len(parts) - 1, -1, -1):
    parent = "/".join(parts[:depth])
    children = sorted({rel.split("/")[0] for rel in subtree(flat, parent) if rel})
    if children:
      return [f"{parent}/{c}" if parent else c for c in children]
  return []


def _join(prefix: str, rel: str) -> str:
  return "/".join(p for p in (prefix.strip("/"), rel) if p)


def matched_leaves(source: Flat, target: Flat, entry, key: str, what: str, collection: str
                   ) -> Dict[str, np.ndarray]:
  """{target path: source array} for one collection, after every check (module docstring)."""
  src_prefix, dst_prefix = str(entry["source_subtree"]), str(entry["target_subtree"])
  src, dst = subtree(source, src_prefix), subtree(target, dst_prefix)
  if not dst:
    raise ValueError(f"{key}.target_subtree={dst_prefix!r} is not in this model's {collection}; "
                     f"there are: {existing_children(target, dst_prefix)}")
  if not src:
    raise ValueError(f"{key}.source_subtree={src_prefix!r} is not in the {collection} of "
                     f"{what}; there are: {existing_children(source, src_prefix)}")
  missing, unexpected = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
  if missing or unexpected:
    raise ValueError(
        f"{key}: {what} subtree {src_prefix!r} does not match this model's {dst_prefix!r} "
        f"({collection}): missing in the source {[_join(src_prefix, p) for p in missing]}, "
        f"not in this model {[_join(src_prefix, p) for p in unexpected]}")
  out = {}
  for rel, target_leaf in dst.items():
    array = np.asarray(src[rel])
    if tuple(array.shape) != tuple(target_leaf.shape) or array.dtype != target_leaf.dtype:
      raise ValueError(
          f"{key}: {collection} {_join(dst_prefix, rel)!r} is {tuple(target_leaf.shape)} "
          f"{target_leaf.dtype} in this model but {_join(src_prefix, rel)!r} is "
          f"{tuple(array.shape)} {array.dtype} in {what}")
    out[_join(dst_prefix, rel)] = array
  return out


def apply_init_from(config_entries: Sequence, params, model_state) -> Tuple:
  """(params, model_state) with every entry's subtrees copied in, placed with the shardings of
  the arrays they replace. No-op without entries."""
  replacements: Dict[str, Dict[str, np.ndarray]] = {}
  ours = {"params": flat_paths(params)}
  ours.update({name: flat_paths(tree) for name, tree in model_state.items()})
  for i, entry in enumerate(config_entries):
    key = f"config.init_from[{i}]"
    source, what = load_source(entry, key)
    for collection, target in ours.items():
      if collection == "params" or collection in source:
        if collection != "params" and not subtree(target, str(entry["target_subtree"])):
          continue  # this collection has nothing under the target subtree
        replacements.setdefault(collection, {}).update(
            matched_leaves(source.get(collection, {}), target, entry, key, what, collection))
    frozen = " (frozen)" if entry.get("frozen", False) else ""
    log.info("init_from: %s:%r -> %r%s", what, str(entry["source_subtree"]),
             str(entry["target_subtree"]), frozen)

  def replace(tree, collection):
    new = replacements.get(collection, {})
    def leaf(path, old):
      value = new.get(path_to_str(path))
      return old if value is None else jax.device_put(value, old.sharding)
    return jax.tree_util.tree_map_with_path(leaf, tree)

  return (replace(params, "params"),
          {name: replace(tree, name) for name, tree in model_state.items()})
