"""Trains the hooked test task (tests/helpers/hooked_task.py) in a subprocess, so the kill and
resume test can SIGKILL it: train_hooked.py TESTS_DIR WORKDIR [key=value ...] (config
overrides: tests/helpers/runs.apply_overrides)."""

import sys

sys.path.insert(0, sys.argv[1])  # the tests directory
from conftest import load_config  # pylint: disable=wrong-import-position

from helpers.hooked_task import hooked_config  # pylint: disable=wrong-import-position
from helpers.runs import apply_overrides  # pylint: disable=wrong-import-position
from mmjax.train import train_and_evaluate  # pylint: disable=wrong-import-position


def main():
  config = hooked_config(load_config)
  apply_overrides(config, sys.argv[3:])
  train_and_evaluate(config, sys.argv[2])


if __name__ == "__main__":
  main()
