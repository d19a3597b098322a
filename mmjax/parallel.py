"""Device mesh, rule-based parameter partitioning and multi-host batch assembly.

Partitioning follows the big_vision/MaxText idea: a list of (regex, spec) rules is matched against
each parameter's '/'-joined path; the first match gives its PartitionSpec; unmatched parameters are
replicated. A mesh axis that does not divide a dimension is dropped from that dimension (the
parameter stays replicated along it), so one rule set works for any device count.
"""

import re
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(axes: Iterable[Sequence[Any]], devices=None) -> Mesh:
  """Mesh from [(name, size), ...]; at most one size may be -1 (the remaining devices).

  Axis types are Auto: shardings are given explicitly to jax.jit (in/out_shardings).
  Raises ValueError naming `config.mesh` when the sizes do not multiply to the device count.
  """
  devices = jax.devices() if devices is None else devices
  names = [str(name) for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh={tuple(axes)}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh={tuple(axes)}: {len(devices)} devices are not divisible by "
                       f"{known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"config.mesh={tuple(axes)} needs {int(np.prod(sizes))} devices; "
                     f"{len(devices)} are available")
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), tuple(names), axis_types=axis_types, devices=devices)


def path_to_str(path) -> str:
  """'/'-joined key path of a pytree leaf, e.g. 'params/rgb_tower/netvlad_hidden/kernel'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def spec_for(name: str, shape: Sequence[int], rules, mesh: Mesh) -> P:
  """PartitionSpec of one array from the first matching rule (replicated when none matches)."""
  for pattern, spec in rules:
    if re.fullmatch(pattern, name):
      spec = tuple(spec)[:len(shape)] + (None,) * max(0, len(shape) - len(spec))
      return P(*[axis if _divides(axis, dim, mesh) else None for axis, dim in zip(spec, shape)])
  return P()


def _divides(axis, dim: int, mesh: Mesh) -> bool:
  if axis is None:
    return True
  axes = axis if isinstance(axis, tuple) else (axis,)
  size = int(np.prod([mesh.shape[a] for a in axes]))
  return dim % size == 0


def tree_shardings(tree, rules, mesh: Mesh):
  """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs) by `rules`."""
  def leaf_sharding(path, leaf):
    return NamedSharding(mesh, spec_for(path_to_str(path), np.shape(leaf), rules, mesh))
  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, data_axis: str = "data") -> NamedSharding:
  """Leading (example) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(data_axis))


def global_batch(local_batch, mesh: Mesh, data_axis: str = "data"):
  """Per-process numpy batch -> global jax.Arrays sharded over `data_axis`.

  Every process passes its own slice (leading dim = global batch / process count);
  jax.make_array_from_process_local_data assembles the global array without copies across hosts.
  """
  sharding = batch_sharding(mesh, data_axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)
