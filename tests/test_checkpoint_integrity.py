"""Checkpoint integrity: a latest checkpoint that is truncated, missing a file or half-written
is detected on restore, named with the reason, moved aside (not deleted), and the run falls back
to the newest good step; leftovers of an interrupted save never block a restart; launch/eval.py's
'latest' does the same, while an explicitly requested bad step is an error naming it."""

import glob
import os
import shutil

import pytest
from conftest import load_config

from mmjax.train import train_and_evaluate
from mmjax.train.checkpoint import CorruptCheckpointError
from mmjax.train.trainer import restore_for_eval

# A failed read of a damaged file leaves tensorstore futures that report at garbage collection.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config(total_steps):
  config = load_config("ytb8m", "tiny")
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = total_steps, 0, 4
  config.best_metric = ""
  return config


@pytest.fixture(scope="module")
def eight_steps(cache_dir, tmp_path_factory):
  """A run of 8 steps with checkpoints 4 and 8; tests damage copies of it."""
  workdir = tmp_path_factory.mktemp("eight_steps")
  train_and_evaluate(_config(8), str(workdir))
  return workdir


def _copy(run, tmp_path):
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


def _truncate_largest_data_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
           if os.path.isfile(f) and "/d/" in f]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)


def _remove_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


@pytest.mark.parametrize("damage", [_truncate_largest_data_file, _remove_metadata])
def test_a_damaged_latest_checkpoint_falls_back_and_is_moved_aside(damage, eight_steps, tmp_path):
  workdir = _copy(eight_steps, tmp_path)
  damage(str(workdir / "checkpoints" / "8"))
  config = _config(12)
  train_and_evaluate(config, str(workdir))  # resumes from 4, trains to 12
  moved = os.listdir(workdir / "corrupt_checkpoints")
  assert len(moved) == 1 and moved[0].startswith("8-")
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert steps[-1] == 12 and 8 in steps  # step 8 trained again from the good step 4
  assert restore_for_eval(config, str(workdir))[4] == 12


def test_when_every_checkpoint_is_unreadable_no_restart_starts_afresh(eight_steps, tmp_path):
  workdir, config = _copy(eight_steps, tmp_path), _config(12)
  for step in (4, 8):
    _remove_metadata(str(workdir / "checkpoints" / str(step)))
  with pytest.raises(CorruptCheckpointError, match=r"none of the steps \[4, 8\] was readable"):
    train_and_evaluate(config, str(workdir))
  with pytest.raises(CorruptCheckpointError, match=r"every checkpoint of this run was moved to "
                     r".*corrupt_checkpoints as unreadable"):  # the requeued run
    train_and_evaluate(config, str(workdir))
  assert not os.listdir(workdir / "checkpoints") or not any(
      d.isdigit() for d in os.listdir(workdir / "checkpoints"))


def test_eval_latest_falls_back_but_an_explicit_bad_step_is_an_error(eight_steps, tmp_path):
  workdir, config = _copy(eight_steps, tmp_path), _config(8)
  _truncate_largest_data_file(str(workdir / "checkpoints" / "8"))
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/8 is unreadable"):
    restore_for_eval(config, str(workdir), 8)
  assert restore_for_eval(config, str(workdir), "latest")[4] == 4
  assert os.listdir(workdir / "corrupt_checkpoints")[0].startswith("8-")


def test_leftovers_of_an_interrupted_save_do_not_block_a_restart(eight_steps, tmp_path):
  workdir, config = _copy(eight_steps, tmp_path), _config(12)
  leftover = workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1234567"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "half_written").write_bytes(b"\0" * 100)
  train_and_evaluate(config, str(workdir))
  assert restore_for_eval(config, str(workdir))[4] == 12
  assert not leftover.exists()
