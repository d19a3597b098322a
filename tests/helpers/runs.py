"""Launching launch/ scripts as subprocesses and reading their checkpoints (shared by tests)."""

import ast
import os
import subprocess
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script_command(script: str, workdir: str, *overrides: str,
                   config: str = "configs/ytb8m.py:tiny"):
  return [sys.executable, os.path.join(ROOT, "launch", script), f"--config={config}",
          f"--workdir={workdir}", *overrides]


def signalled_command(workdir: str, *overrides: str, config: str = "configs/ytb8m.py:tiny"):
  """script_command('train.py', ...) through tests/helpers/train_signalled.py, with the
  fault-injecting task 'signalled_youtube8m' (tests/helpers/signalling_task.py)."""
  tests = os.path.join(ROOT, "tests")
  return [sys.executable, os.path.join(tests, "helpers", "train_signalled.py"), tests,
          *script_command("train.py", workdir, *overrides, config=config)[2:],
          "--config.task=signalled_youtube8m"]


def env(cache_dir: str, devices: int = 1) -> dict:
  return dict(os.environ, MMJAX_CACHE=cache_dir, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run(command, environment, timeout=600) -> subprocess.CompletedProcess:
  result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
  assert result.returncode == 0, f"{command}\n{result.stderr[-4000:]}"
  return result


def apply_overrides(config, overrides) -> None:
  """Sets 'a.b=value' overrides on `config`, converting each value to the key's current type
  (tuples and other literals are parsed with ast.literal_eval)."""
  for override in overrides:
    key, value = override.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    current = node[leaf]
    node[leaf] = (ast.literal_eval(value) if isinstance(current, (tuple, list, bool))
                  else type(current)(value))


def wait_for_checkpoint(process: subprocess.Popen, workdir: str, step: int, timeout=300) -> None:
  """Polls until <workdir>/checkpoints/<step> is committed; fails if the process ends first."""
  path = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.time() + timeout
  while not os.path.isdir(path):
    assert process.poll() is None, f"process ended before checkpoint {step} appeared"
    assert time.time() < deadline, f"no checkpoint {step} after {timeout}s"
    time.sleep(0.01)


def final_params(config, workdir: str):
  """Params of the latest checkpoint in `workdir`, as numpy."""
  from mmjax.train.trainer import restore_for_eval  # pylint: disable=import-outside-toplevel
  _, state, _, _, step = restore_for_eval(config, workdir)
  return step, jax.tree.map(np.asarray, state.params)


def assert_trees_equal(a, b) -> None:
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
