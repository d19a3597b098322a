"""The loop every feature extractor shares: batched, sharded over the local devices, resumable,
with progress lines.

An `Extractor` says which feature files a sample gets, how to read one sample, how to batch
samples, what to compute and how to cut a batch's outputs into per-sample features; `extract`
runs it over a list of sample names:

  1. Samples whose every output file exists (mmjax.data.mertools_layout.has_feature) are
     skipped: an interrupted run started again goes on where it stopped, and deleting a file
     recomputes that sample only. Files are written atomically, so none is ever partial.
  2. `extractor.order` may reorder the rest (HuBERT sorts by length, so a batch pads little)
     and checks every input before anything is computed.
  3. Samples are read by `workers` threads, two batches ahead of the computation.
  4. A batch of `batch_size` rows (the last one padded by `extractor.collate`) is split over a
     1-D 'data' mesh of the local devices; the variables are replicated; `extractor.apply` runs
     under jax.jit (one compilation per distinct batch shape).
  5. Each real row's features are written; a progress line (samples done of pending, samples/s,
     ETA) is logged every `log_every` samples and at the end.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Protocol, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh

from mmjax import parallel
from mmjax.data import mertools_layout

__all__ = ["Extractor", "Output", "check_levels", "data_mesh", "extract"]

log = logging.getLogger("mmjax")

Output = Tuple[str, str]  # (extractor name, level 'UTT' | 'FRA'): one file per sample
_BATCHES_AHEAD = 2


class Extractor(Protocol):
  """What `extract` needs from a feature extractor (mmjax.features.hubert, .clip)."""

  outputs: Sequence[Output]  # the files every sample gets
  variables: Any  # the model's variables (host arrays), replicated over the mesh

  def order(self, names: Sequence[str]) -> List[str]:
    """The names in the order to compute them; raises for an input that cannot be used."""

  def load(self, name: str) -> Any:
    """One sample's host inputs (thread-safe); errors name the file."""

  def collate(self, examples: Sequence[Any], rows: int) -> Dict[str, np.ndarray]:
    """A batch of `rows` rows from `examples` (len <= rows; the rest is padding)."""

  def apply(self, variables, batch: Dict[str, Any]) -> Any:
    """The jitted computation: a pytree of arrays whose leading axis is the batch's."""

  def features(self, outputs: Any, row: int, example: Any) -> Dict[Output, np.ndarray]:
    """Row `row` of `outputs` (host numpy) -> {output: its array} for one sample."""


def check_levels(levels: Sequence[str]) -> Tuple[str, ...]:
  """`levels` as a tuple; ValueError naming --levels unless distinct values of LEVELS."""
  levels, allowed = tuple(levels), mertools_layout.LEVELS
  if not levels or not set(levels) <= set(allowed) or len(set(levels)) != len(levels):
    raise ValueError(f"--levels={','.join(levels)}: expected distinct values of {allowed}")
  return levels


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D mesh ('data',) over `devices` (default: this process's devices)."""
  devices = list(jax.local_devices() if devices is None else devices)
  return parallel.make_mesh((("data", len(devices)),), devices)


def _is_done(root: str, outputs: Sequence[Output], name: str) -> bool:
  return all(mertools_layout.has_feature(root, extractor, level, name)
             for extractor, level in outputs)


def _loaded_batches(pool: concurrent.futures.Executor, load: Callable[[str], Any],
                    names: Sequence[str], batch_size: int
                    ) -> Iterator[Tuple[Sequence[str], List[Any]]]:
  """(names, loaded examples) per batch, loading `_BATCHES_AHEAD` batches ahead in `pool`."""
  chunks = [names[i:i + batch_size] for i in range(0, len(names), batch_size)]
  queued = collections.deque()
  for k, chunk in enumerate(chunks):
    while len(queued) <= _BATCHES_AHEAD and k + len(queued) < len(chunks):
      ahead = chunks[k + len(queued)]
      queued.append([pool.submit(load, name) for name in ahead])
    yield chunk, [future.result() for future in queued.popleft()]


def extract(extractor: Extractor, names: Sequence[str], root: str, *, batch_size: int,
            mesh: Mesh | None = None, workers: int = 4, log_every: int = 100,
            prefix: str = "features") -> Dict[str, Any]:
  """Writes `extractor`'s features of every sample in `names` under `root` (module docstring).

  Args:
    extractor: the feature extractor.
    names: sample names (distinct).
    root: the feature root (mmjax.data.mertools_layout).
    batch_size: samples per batch, a multiple of the mesh's size.
    mesh: a 1-D ('data',) mesh; default `data_mesh()` (all local devices).
    workers: threads reading samples.
    log_every: samples between progress lines (>= 1).
    prefix: the progress lines' first word.

  Returns:
    {'samples': len(names), 'skipped': already done, 'written': computed now, 'seconds',
    'samples_per_s' (of the computed ones)}.

  Raises:
    ValueError: duplicate names, a batch size the mesh does not divide (naming --batch_size),
      log_every < 1; the extractor's errors for unusable inputs.
  """
  if len(set(names)) != len(names):
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    raise ValueError(f"sample names repeat: {repeated[:8]}")
  mesh = mesh or data_mesh()
  if batch_size < 1 or batch_size % mesh.size:
    raise ValueError(f"--batch_size={batch_size} must be a positive multiple of the "
                     f"{mesh.size} devices it is split over")
  if log_every < 1:
    raise ValueError(f"--log_every={log_every} must be >= 1")
  pending = [name for name in names if not _is_done(root, extractor.outputs, name)]
  log.info("%s: %d samples, %d already done, %d to compute on %d device(s)", prefix,
           len(names), len(names) - len(pending), len(pending), mesh.size)
  start = time.monotonic()
  pending = extractor.order(pending)
  replicated, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  variables = jax.device_put(extractor.variables, replicated)
  step = jax.jit(extractor.apply, in_shardings=(replicated, rows), out_shardings=rows)
  written = 0
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    for chunk, examples in _loaded_batches(pool, extractor.load, pending, batch_size):
      batch = jax.device_put(extractor.collate(examples, batch_size), rows)
      outputs = jax.device_get(step(variables, batch))
      for row, (name, example) in enumerate(zip(chunk, examples)):
        for (feature, level), array in extractor.features(outputs, row, example).items():
          mertools_layout.write_feature(root, feature, level, name, array)
      before, written = written, written + len(chunk)
      if written // log_every > before // log_every or written == len(pending):
        seconds = time.monotonic() - start
        rate = written / max(seconds, 1e-9)
        log.info("%s: %d/%d samples, %.2f samples/s, ETA %.0f s", prefix, written,
                 len(pending), rate, (len(pending) - written) / rate)
  seconds = time.monotonic() - start
  return {"samples": len(names), "skipped": len(names) - len(pending), "written": written,
          "seconds": seconds, "samples_per_s": written / max(seconds, 1e-9)}
