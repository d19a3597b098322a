"""Trains the hooked test task (tests/helpers/hooked_task.py) in a subprocess, so the kill and
resume test can SIGKILL it: train_hooked.py TESTS_DIR WORKDIR [key=value ...] (config
overrides, values parsed as Python literals)."""

import ast
import sys

sys.path.insert(0, sys.argv[1])  # the tests directory
from conftest import load_config  # pylint: disable=wrong-import-position
from helpers.hooked_task import hooked_config  # pylint: disable=wrong-import-position

from mmjax.train import train_and_evaluate  # pylint: disable=wrong-import-position


def main():
  config = hooked_config(load_config)
  for override in sys.argv[3:]:
    key, value = override.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = ast.literal_eval(value)
  train_and_evaluate(config, sys.argv[2])


if __name__ == "__main__":
  main()
