"""Loading config files' shared modules by path.

Config files (configs/*.py) are loaded by path by ml_collections (`--config=configs/ytb8m.py`),
so the folder is not on sys.path; `load_sibling(__file__, "defaults")` imports
configs/defaults.py next to the calling file, once per process, wherever it was launched from.
"""

import importlib.util
import os
import sys
import types


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
