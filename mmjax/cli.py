"""Flags and start-up shared by the launch/ scripts (absl + ml_collections config files)."""

import ast
import os

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags(workdir_help: str, config_required: bool = True) -> None:
  """--config (path[:variant], every field overridable as --config.a.b=value; unknown keys and
  wrong types fail at parse time), --workdir and the multi-host flags."""
  config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help + " Default: ./workdir/<config name>.")
  flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-host).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
  if config_required:
    flags.mark_flag_as_required("config")


def initialize_distributed() -> None:
  from mmjax import distributed  # pylint: disable=import-outside-toplevel
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)


def config_spec() -> tuple:
  """(path, variants) of --config=path[:variants]."""
  path, _, variants = FLAGS["config"].serialize().split("=", 1)[-1].partition(":")
  return path, variants


def workdir() -> str:
  """--workdir, or ./workdir/<config file stem>[_<variant>]."""
  if FLAGS.workdir:
    return FLAGS.workdir
  path, variant = config_spec()
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdir", f"{stem}_{variant}" if variant else stem)


def parse_overrides(pairs) -> dict:
  """['data.max_frames=60', ...] -> {'data.max_frames': 60, ...} (values as Python literals,
  else strings)."""
  overrides = {}
  for pair in pairs:
    key, sep, text = pair.partition("=")
    if not sep:
      raise ValueError(f"--set {pair!r}: expected key=value")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text
  return overrides
