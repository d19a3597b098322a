"""The config snapshot: <workdir>/config.json, the resolved config of the run.

Written at the first start of a run (process 0, atomic). A resume compares the config it is
given with the snapshot: a change in a key that changes the model, the data, the optimizer or
the batch refuses to start and lists the keys with old and new values (`allow_changes=True`,
launch/train.py --allow_config_change, overrides); the keys in SAFE_TO_CHANGE may change freely.
launch/eval.py evaluates with the snapshot when no --config is given.
"""

import fnmatch
import json
import logging
import os
from typing import Any, Dict, List, Tuple

import jax
import ml_collections

log = logging.getLogger("mmjax")

SNAPSHOT_FILE = "config.json"

# Keys (fnmatch patterns on dotted paths) a resumed run may change: how long to train, how
# often to log, evaluate and save (and whether in the background), how much to keep, where the
# data cache lives, how many reader threads, what to evaluate, the device layout, and the
# fresh-run-only init_from.
SAFE_TO_CHANGE = (
    "total_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "checkpoint_background", "max_nonfinite_steps", "best_metric",
    "best_mode", "mesh",
    "sharding_rules", "init_from", "model.correlation.workdir", "evals", "evals.*",
    "eval_batch_size",
    "data.num_threads", "data.prefetch_batches", "data.eval_max_examples",
    "data.skip_bad_records", "data.max_bad_fraction", "data.synthetic.directory", "data.eval_*",
)


# Keys added by a later release, with the value that behaves as before: a snapshot written
# before they existed matches a config holding exactly that value (so such runs still resume).
ADDED_KEY_DEFAULTS = {
    "optimizer.schedule": "constant", "optimizer.warmup_steps": 0, "optimizer.decay_steps": 0,
    "optimizer.end_learning_rate_factor": 0.0,
}


class ConfigChangedError(ValueError):
  """A resume whose config differs from the run's snapshot in a key that is not safe."""


def _plain(value: Any) -> Any:
  """JSON-able nested dicts/lists of a ConfigDict value."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    return {str(k): _plain(value[k]) for k in sorted(value.keys())}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples (the configs' sequence type), dicts kept."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def flat(config) -> Dict[str, Any]:
  """{dotted key: JSON-able value} of every leaf (sequences are leaves)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      path = f"{prefix}{key}"
      if isinstance(value, dict) and value:
        walk(value, path + ".")
      else:
        out[path] = value
  walk(_plain(config), "")
  return out


def path(workdir: str) -> str:
  return os.path.join(workdir, SNAPSHOT_FILE)


def write(config, workdir: str) -> None:
  """Writes the snapshot (process 0; atomic rename)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  tmp = path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_plain(config), f, indent=1, sort_keys=True)
  os.replace(tmp, path(workdir))


def read(workdir: str) -> ml_collections.ConfigDict:
  """The snapshot as a locked ConfigDict (FileNotFoundError naming the file when absent)."""
  if not os.path.isfile(path(workdir)):
    raise FileNotFoundError(f"{path(workdir)}: no config snapshot (pass --config)")
  with open(path(workdir)) as f:
    config = ml_collections.ConfigDict(_tuples(json.load(f)))
  config.lock()
  return config


def differences(old, new) -> List[Tuple[str, Any, Any]]:
  """(key, old value, new value) for every key whose value differs (missing = None; a key of
  ADDED_KEY_DEFAULTS missing from `old` counts as its default)."""
  old_flat, new_flat = flat(old), flat(new)
  for key, default in ADDED_KEY_DEFAULTS.items():
    if key not in old_flat and key in new_flat:
      old_flat[key] = default
  return [(key, old_flat.get(key), new_flat.get(key))
          for key in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(key) != new_flat.get(key)]


def is_safe(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_TO_CHANGE)


def check_resume(config, workdir: str, allow_changes: bool = False) -> None:
  """On a resume: refuses (ConfigChangedError) when `config` differs from the snapshot in a key
  that is not safe to change, listing every such key with its old and new value; logs the safe
  changes; then rewrites the snapshot with `config`. Writes it when the run predates
  snapshots."""
  if os.path.isfile(path(workdir)):
    with open(path(workdir)) as f:
      old = json.load(f)
    changed = differences(old, config)
    unsafe = [(k, a, b) for k, a, b in changed if not is_safe(k)]
    listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in unsafe)
    if unsafe and not allow_changes:
      raise ConfigChangedError(
          f"{path(workdir)}: this resume changes keys that change the model, the data, the "
          f"optimizer or the batch: {listing}. Start a new --workdir, restore the old values, "
          "or pass --allow_config_change (train_and_evaluate(..., allow_config_change=True)).")
    if unsafe:
      log.warning("config changed on resume (allowed): %s", listing)
    for key, a, b in changed:
      if is_safe(key):
        log.info("config changed on resume: %s: %r -> %r", key, a, b)
  write(config, workdir)
