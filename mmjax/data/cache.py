"""Where generated datasets are cached, and how they are written safely.

A generated (synthetic) dataset lives in `<root>/<name>_<hash>`: root = the configured
directory, else $MMJAX_CACHE, else ~/.cache/mmjax; the hash covers the settings that determine
its content. It is written into a temporary sibling directory that is then renamed, so
concurrent processes never see a partial dataset, and a marker file written last records the
settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable

from mmjax.data.sharded_stream import config_value

__all__ = [
    "MARKER_FILE", "atomic_write_text", "build_atomically", "cache_root", "configured_files",
    "configured_or_default", "dataset_directory", "ensure_dataset", "ensure_synthetic",
    "is_complete", "resolved_data_config", "write_marker"
]

MARKER_FILE = "synthetic.json"
_STALE_TMP_SECONDS = 24 * 3600


def cache_root(directory: str = "") -> str:
  """`directory` if non-empty, else $MMJAX_CACHE, else ~/.cache/mmjax (user-expanded)."""
  root = (directory or os.environ.get("MMJAX_CACHE") or
          os.path.join(os.path.expanduser("~"), ".cache", "mmjax"))
  return os.path.expanduser(root)


def dataset_directory(directory: str, name: str, settings: dict) -> str:
  """`<cache_root(directory)>/<name>_<first 12 hex digits of sha256(settings as JSON)>`."""
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  return os.path.join(cache_root(directory), f"{name}_{key.hexdigest()[:12]}")


def is_complete(directory: str, settings: dict | None = None) -> bool:
  """Whether `directory` has a marker file (`write_marker`) with these `settings`."""
  try:
    with open(os.path.join(directory, MARKER_FILE)) as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return False
  return settings is None or marker.get("settings") == settings


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename (readers never see half)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
  os.replace(tmp, path)


def configured_files(data_config, train_key: str, eval_key: str) -> tuple[str, str] | None:
  """(data.<train_key>, data.<eval_key>) when the user configured real files; None when both are
  empty (use the synthetic default); ValueError naming both keys when only the eval one is set."""
  train = config_value(data_config, train_key, "") or ""
  evaluation = config_value(data_config, eval_key, "") or ""
  if train:
    return train, evaluation
  if evaluation:
    raise ValueError(f"data.{eval_key} is {evaluation!r} but data.{train_key} is empty (the "
                     "synthetic dataset): set both or neither")
  return None


def configured_or_default(data_config, key: str, train_key: str, resolve) -> str:
  """data.<key> if set, else the matching file of `resolve(data_config)` (the (train, eval)
  pair, written synthetically if needed); ValueError naming the key if that is empty too."""
  path = config_value(data_config, key, "")
  if path:
    return path
  train, evaluation = resolve(data_config)
  path = train if key == train_key else evaluation
  if not path:
    raise ValueError(f"config key data.{key} is empty (data.{train_key} is {train!r}): set it")
  return path


def write_marker(directory: str, settings: dict, **extra) -> None:
  """Atomically writes the marker file `{"settings": settings, **extra}` (write it last)."""
  atomic_write_text(os.path.join(directory, MARKER_FILE),
                    json.dumps({"settings": settings, **extra}, indent=2))


def build_atomically(directory: str, write: Callable[[str], None],
                     complete: Callable[[str], bool], *, what: str,
                     log: Callable[[str], None] = print) -> None:
  """Makes sure `directory` holds a complete dataset, writing it if needed.

  If `complete(directory)`, logs that it is reused. Otherwise `write(tmp)` fills a new
  temporary sibling directory, which is then renamed to `directory` (an incomplete one there is
  replaced; if another process renamed its copy first, that one is used). Temporary directories
  of writers that crashed more than a day ago are removed.

  Args:
    directory: the dataset's directory.
    write: fills the directory it is given.
    complete: whether a directory holds the finished dataset (e.g. `is_complete` with the
      settings).
    what: the dataset's name in log lines (e.g. 'synthetic YouTube-8M').
    log: progress printer.
  """
  if complete(directory):
    log(f"{what}: reusing {directory}")
    return
  parent, name = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  now = time.time()
  for entry in os.listdir(parent):  # temporary directories of crashed writers
    path = os.path.join(parent, entry)
    if entry.startswith(f".{name}.tmp-") and now - os.path.getmtime(path) > _STALE_TMP_SECONDS:
      shutil.rmtree(path, ignore_errors=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
  try:
    write(tmp)
    os.chmod(tmp, 0o755)
    if os.path.isdir(directory) and not complete(directory):
      log(f"{what}: replacing incomplete {directory}")
      shutil.rmtree(directory)
    try:
      os.rename(tmp, directory)
      log(f"{what}: ready in {directory}")
    except OSError:
      if not complete(directory):
        raise
      log(f"{what}: another process wrote {directory} first; using it")
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def ensure_dataset(directory: str, name: str, settings: dict, write: Callable[[str], None], *,
                   what: str, log: Callable[[str], None] = print) -> str:
  """Writes (once, atomically) or reuses the generated dataset `name` with `settings`.

  Args:
    directory: the configured cache root ('' for the default, see `cache_root`).
    name: the dataset's name prefix (e.g. 'image_text_synthetic').
    settings: what determines the content (JSON-able; hashed into the path and checked
      against the marker file that `write` must write last, see `write_marker`).
    write: fills the (temporary) directory it is given.
    what: the dataset's name in log lines.
    log: progress printer.

  Returns:
    The dataset's directory, `dataset_directory(directory, name, settings)`.
  """
  path = dataset_directory(directory, name, settings)
  build_atomically(path, write, lambda p: is_complete(p, settings), what=what, log=log)
  return path


def ensure_synthetic(syn_config, name: str, settings: dict, write: Callable[..., object], *,
                     what: str, log: Callable[[str], None] = print) -> str:
  """`ensure_dataset` for a synthetic dataset: cache root data.synthetic.directory (`syn_config`),
  written by `write(directory, log=log, **kwargs)`, kwargs = `settings` less 'version' (the
  writer's keyword arguments). Returns the dataset's directory."""
  kwargs = {k: v for k, v in settings.items() if k != "version"}
  return ensure_dataset(config_value(syn_config, "directory", ""), name, settings,
                        lambda tmp: write(tmp, log=log, **kwargs), what=what, log=log)


def resolved_data_config(data_config, resolve_files, keys, log):
  """A copy of `config.data` whose (train, eval) file keys hold `resolve_files`' answer: the
  configured files, or the synthetic default (written once)."""
  data_config = data_config.copy_and_resolve_references()
  files = resolve_files(data_config, log=log)
  with data_config.unlocked():
    for key, value in zip(keys, files):
      data_config[key] = value
  return data_config
