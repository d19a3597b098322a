"""Shared fixtures. Tests run on the CPU; the sharding tests spawn subprocesses with 8 fake
devices (XLA_FLAGS must be set before jax starts, so not in this process)."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """One synthetic-data cache for the whole session (datasets are written once, reused)."""
  path = tmp_path_factory.mktemp("mmjax_cache")
  os.environ["MMJAX_CACHE"] = str(path)
  return str(path)


def config_module(name: str):
  """The module configs/<name>.py, loaded by path as ml_collections does."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str, variants: str = ""):
  """configs/<name>.py get_config(variants), e.g. load_config('ytb8m', 'tiny,netvlad')."""
  return config_module(name).get_config(variants)


def config_defaults():
  """configs/defaults.py (trainer defaults, optimizer_config, init_from_entry, eval_splits)."""
  from mmjax.config_files import load_sibling  # pylint: disable=import-outside-toplevel
  return load_sibling(os.path.join(ROOT, "configs", "ytb8m.py"), "defaults")


@pytest.fixture(autouse=True)
def _mmjax_logs_reach_caplog():
  """The trainer's setup_logging stops 'mmjax' records propagating (absl's root handler would
  print them twice); re-enable propagation so caplog sees them whatever ran before."""
  import logging  # pylint: disable=import-outside-toplevel
  logging.getLogger("mmjax").propagate = True
  yield
