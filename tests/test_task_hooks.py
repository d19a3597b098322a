"""The Task protocol's extension points, exercised by tests/helpers/hooked_task.py through the
real trainer: weight-side optimizer transforms, task state (sharded like the params, saved,
restored, exact after a SIGKILL), the after-evaluation hook (new state, early stop), named eval
splits and the best checkpoint, and launch/eval.py's latest / best / step."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import config_defaults, load_config
from helpers import runs
from helpers.hooked_task import EMA_DECAY, hooked_config
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.tasks import get_task
from mmjax.train import evaluate_checkpoint, train_and_evaluate
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.steps import (
  abstract_train_state,
  create_train_state,
  make_train_step,
  step_compiler_options,
)
from mmjax.train.trainer import build_optimizer_for, restore_for_eval


def _records(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _train_pattern(config):
  task = get_task(config)
  task.prepare(lambda *_: None)
  return task.data_config.train_pattern


@pytest.fixture(scope="module")
def two_split_run(cache_dir, tmp_path_factory):
  """16 steps, evaluations every 4 on splits 'val' (the eval data) and 'train' (the train
  files), best checkpoint by the *lowest* val GAP (so it is not simply the latest), keep 1."""
  config = hooked_config(load_config)
  defaults = config_defaults()
  config.evals = defaults.eval_splits(val={},
                                      train_files={"eval_pattern": _train_pattern(config)})
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 16, 4, 100
  config.keep_checkpoints, config.best_metric, config.best_mode = 1, "val/gap", "min"
  config.optimizer.plateau_metric = "val/loss"
  workdir = str(tmp_path_factory.mktemp("two_splits"))
  metrics = train_and_evaluate(config, workdir)
  return config, workdir, metrics


def test_each_split_is_evaluated_and_logged_under_its_name(two_split_run):
  _, workdir, metrics = two_split_run
  records = _records(workdir)
  for split, count in (("val", 24), ("train_files", 64)):
    steps = [r["step"] for r in records if r["split"] == split]
    assert steps == [4, 8, 12, 16]
    assert all(r["num_examples"] == count for r in records if r["split"] == split)
    assert metrics[f"{split}/num_examples"] == count
  last_val = [r for r in records if r["split"] == "val"][-1]
  assert metrics["val/gap"] == pytest.approx(last_val["gap"])
  assert metrics["train_files/gap"] != pytest.approx(metrics["val/gap"])  # different data


def test_a_split_named_train_is_refused(cache_dir, tmp_path):
  config = hooked_config(load_config)
  config.evals = config_defaults().eval_splits(train={})
  with pytest.raises(ValueError, match="config.evals.train"):
    train_and_evaluate(config, str(tmp_path))


def test_best_checkpoint_is_kept_next_to_the_latest_and_restores(two_split_run):
  config, workdir, _ = two_split_run
  evals = [r for r in _records(workdir) if r["split"] == "val"]
  best = min(evals, key=lambda r: (r["gap"], r["step"]))
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert kept == sorted({best["step"], 16})
  metrics = evaluate_checkpoint(config, workdir, "best")
  assert metrics["val/gap"] == pytest.approx(best["gap"], abs=1e-6)
  _, _, _, _, step = restore_for_eval(config, workdir, "best")
  assert step == best["step"]
  _, _, _, _, step = restore_for_eval(config, workdir, "latest")
  assert step == 16
  with pytest.raises(FileNotFoundError, match=r"no '3' checkpoint; available steps"):
    restore_for_eval(config, workdir, 3)


def test_task_state_after_evaluation_hook_and_both_transform_sides(two_split_run):
  config, workdir, _ = two_split_run
  _, state, _, _, _ = restore_for_eval(config, workdir)
  task_state = jax.tree.map(np.asarray, state.task_state)
  params = jax.tree.map(np.asarray, state.params)
  assert int(task_state["evaluations"]) == 4  # after_evaluation ran after every evaluation
  assert float(task_state["loss_scale"]) == 0.5 ** 4
  np.testing.assert_array_equal(params["fusion"]["kernel"][0], 0.0)  # the mask, exactly
  np.testing.assert_array_equal(params["fusion"]["bias"], 0.0)  # zero gradients: never moved
  assert np.abs(params["classifier"]["bias"] - params["classifier"]["bias"].mean()).max() > 0
  assert np.abs(params["fusion"]["kernel"][1:]).min() > 0
  # The EMA follows the params (update_task_state ran every step) but lags them.
  ema, now = task_state["ema"]["classifier"]["kernel"], params["classifier"]["kernel"]
  assert 0 < np.abs(ema - now).max() < np.abs(now).max()


def test_the_train_step_updates_task_state_from_the_new_params(cache_dir):
  """One jitted step: ema_1 = d * ema_0 + (1 - d) * params_1, with params_1 the updated ones."""
  config = hooked_config(load_config)
  task = get_task(config)
  task.prepare(lambda *_: None)
  mesh = parallel.make_mesh(config.mesh)
  tx = build_optimizer_for(config, task)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  ema_0 = jax.tree.map(np.asarray, state.task_state["ema"])
  batch = next(iter(task.train_dataset(config.batch_size, config.seed, 0, 1)))
  state, _ = make_train_step(task, tx, mesh, shardings)(state, parallel.global_batch(batch, mesh))
  params_1 = jax.tree.map(np.asarray, state.params)
  expected = jax.tree.map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, ema_0, params_1)
  for got, want in zip(jax.tree.leaves(jax.tree.map(np.asarray, state.task_state["ema"])),
                       jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert not np.array_equal(jax.tree.leaves(params_1)[0], jax.tree.leaves(ema_0)[0])


def test_task_state_is_partitioned_by_the_parameter_rules(cache_dir):
  config = hooked_config(load_config)
  task = get_task(config)
  mesh = parallel.make_mesh(config.mesh)
  _, shardings = abstract_train_state(task, build_optimizer_for(config, task), mesh,
                                      config.sharding_rules, config.seed)
  assert shardings.params["classifier"]["kernel"].spec == P(None, "model")
  assert shardings.task_state["ema"]["classifier"]["kernel"].spec == P(None, "model")
  assert shardings.task_state["loss_scale"].spec == P()


def test_after_evaluation_can_stop_training(cache_dir, tmp_path):
  config = hooked_config(load_config, stop_after_evals=1)
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 16, 4, 100
  train_and_evaluate(config, str(tmp_path))
  checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), save_every=1, keep=10)
  assert checkpointer.all_steps() == [4]
  checkpointer.close()
  assert max(r["step"] for r in _records(str(tmp_path))) == 4


def test_task_state_survives_sigkill_and_resumes_exactly(cache_dir, tmp_path):
  overrides = ["total_steps=16", "checkpoint_every_steps=4", "eval_every_steps=8",
               "keep_checkpoints=2"]
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  command = lambda w: [sys.executable, os.path.join(tests_dir, "helpers", "train_hooked.py"),
                       tests_dir, w, *overrides]
  reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
  runs.run(command(reference), runs.env(cache_dir))
  process = subprocess.Popen(command(interrupted), env=runs.env(cache_dir), cwd=runs.ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  runs.wait_for_checkpoint(process, interrupted, 8)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL
  result = runs.run(command(interrupted), runs.env(cache_dir))
  assert "resumed from" in result.stderr
  config = hooked_config(load_config)
  final = [restore_for_eval(config, w)[1] for w in (reference, interrupted)]
  host = [jax.tree.map(np.asarray, (s.params, s.task_state, s.opt_state)) for s in final]
  runs.assert_trees_equal(host[0], host[1])
  assert int(host[1][1]["evaluations"]) == 2


class _OptionsTask:
  """Stands in for a task in `step_compiler_options`: returns `options` for every platform and
  records the platforms it was asked about."""

  def __init__(self, options):
    self.options, self.platforms = options, []

  def compiler_options(self, platform):
    self.platforms.append(platform)
    return self.options


def test_step_compiler_options_keeps_known_options_and_drops_unknown_ones_with_a_warning():
  mesh = parallel.make_mesh([("data", -1), ("model", 1)])
  known = _OptionsTask({"xla_cpu_experimental_ynn_fusion_type": ""})
  assert step_compiler_options(known, mesh) == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert known.platforms == ["cpu"]
  with pytest.warns(RuntimeWarning, match="xla_no_such_option.*XLA's defaults"):
    assert step_compiler_options(_OptionsTask({"xla_no_such_option": True}), mesh) == {}
  assert step_compiler_options(_OptionsTask({}), mesh) == {}


@pytest.mark.parametrize("model_name, ynn_fusions", [("transformer", False), ("netvlad", True)])
def test_youtube8m_compiler_options_reach_the_compiled_train_step(model_name, ynn_fusions):
  """The Transformer rows compile without XLA's YNNPACK fusions on the CPU (Youtube8mTask.
  compiler_options); NetVLAD keeps XLA's defaults. Checked in the compiled step's HLO, so an
  option that stops reaching jax.jit fails here."""
  config = load_config("ytb8m", f"tiny,{model_name}_late")
  task = get_task(config)
  assert task.compiler_options("gpu") == {}
  mesh = parallel.make_mesh(config.mesh)
  tx = build_optimizer_for(config, task)
  state, shardings = create_train_state(task, tx, mesh, config.sharding_rules, config.seed)
  batch = parallel.global_batch(task.example_batch(config.batch_size), mesh)
  hlo = make_train_step(task, tx, mesh, shardings).lower(state, batch).compile().as_text()
  if ynn_fusions and "__ynn_fusion" not in hlo:
    pytest.skip("this XLA makes no YNNPACK fusions for NetVLAD by default")
  assert ("__ynn_fusion" in hlo) == ynn_fusions
