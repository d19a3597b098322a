"""Config-file mechanics: loading a config folder's shared module by path, setting existing
keys, and combining variants.

Config files (configs/*.py) are loaded by path by ml_collections (`--config=configs/ytb8m.py`),
so the folder is not on sys.path; `load_sibling(__file__, "defaults")` imports
configs/defaults.py next to the calling file, once per process, wherever it was launched from.
"""

import importlib.util
import os
import sys
import types
from typing import Callable, Dict

import ml_collections


def load_sibling(config_file: str, name: str) -> types.ModuleType:
  """The module `<directory of config_file>/<name>.py` (cached in sys.modules under a name
  derived from its absolute path, so two config folders never share a module)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{config_file}: its shared module {path} does not exist")
  module_name = "mmjax_config_" + path.replace(os.sep, "_").replace(".", "_")
  module = sys.modules.get(module_name)
  if module is None:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[module_name]
      raise
  return module


# The configs folder of this checkout (the repository root's configs/, next to mmjax/).
CHECKOUT_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs")


def load_checkout_config(name: str, variants: str = "",
                         folder: str = CHECKOUT_CONFIGS) -> ml_collections.ConfigDict:
  """`<folder>/<name>.py`'s get_config(variants) (default folder: this checkout's configs/), for
  benchmarks and protocols that build their runs from the repository's configs."""
  return load_sibling(os.path.join(folder, f"{name}.py"), name).get_config(variants)


def update_keys(config: ml_collections.ConfigDict, values: Dict, what: str) -> None:
  """Sets existing keys of `config` from `values`; an unknown key raises KeyError naming `what`
  and the known keys."""
  for key, value in values.items():
    if key not in config:
      raise KeyError(f"{what}: unknown key {key!r}; known: {sorted(config.keys())}")
    config[key] = value


def set_keys(config: ml_collections.ConfigDict, **values) -> None:
  """Sets existing keys of `config` (the whole config or a section, e.g. config.data.synthetic)
  in place, as variants do; an unknown key raises KeyError instead of adding a new one."""
  update_keys(config, values, "set_keys")


def apply_variants(config: ml_collections.ConfigDict, spec: str,
                   variants: Dict[str, Callable[[ml_collections.ConfigDict], None]],
                   config_file: str) -> ml_collections.ConfigDict:
  """Applies the comma-separated variants of `spec` (the text after ':' in --config) in order,
  then locks the config. An unknown name raises ValueError listing the valid ones."""
  names = [name.strip() for name in (spec or "").split(",") if name.strip()]
  unknown = [name for name in names if name not in variants]
  if unknown:
    raise ValueError(f"{config_file}: unknown variant(s) {unknown}; valid variants: "
                     f"{sorted(variants)}; combine them with commas, e.g. --config=FILE:tiny,paper")
  for name in names:
    variants[name](config)
  config.lock()
  return config
