"""launch/train.py with the fault-injecting task of tests/helpers/signalling_task.py registered:
train_signalled.py TESTS_DIR [launch/train.py flags ...] (add --config.task=signalled_youtube8m
and set MMJAX_TEST_SIGNAL)."""

import os
import runpy
import sys

TESTS = sys.argv.pop(1)
sys.path.insert(0, TESTS)
import helpers.signalling_task  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

sys.argv[0] = os.path.join(os.path.dirname(TESTS), "launch", "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
