"""config.init_from: sub-models initialised from other runs (mmjax workdirs: latest, best or a
step; Hugging Face CLIP directories), frozen or fine-tuned, with errors that name the paths."""

import jax
import numpy as np
import optax
import pytest
from conftest import config_defaults, load_config
from helpers import runs

from mmjax import parallel
from mmjax.models import clip
from mmjax.tasks import get_task
from mmjax.train import train_and_evaluate
from mmjax.train.init_from import (
  apply_init_from,
  load_source,
  read_variables,
  write_variables,
)
from mmjax.train.steps import create_train_state
from mmjax.train.trainer import build_optimizer_for, restore_for_eval


def _entry(source, **kwargs):
  return config_defaults().init_from_entry(str(source), **kwargs)


@pytest.fixture(scope="module")
def two_runs(cache_dir, tmp_path_factory):
  """Two earlier ytb8m:tiny runs with different seeds: {name: (workdir, final params)}."""
  out = {}
  for name, seed in (("a", 1), ("b", 2)):
    config = load_config("ytb8m", "tiny")
    config.seed, config.total_steps = seed, 4
    workdir = str(tmp_path_factory.mktemp(f"run_{name}"))
    train_and_evaluate(config, workdir)
    out[name] = (workdir, runs.final_params(config, workdir)[1])
  return out


def _fresh_state(config):
  task = get_task(config)
  task.prepare(lambda *_: None)
  mesh = parallel.make_mesh(config.mesh)
  return create_train_state(task, build_optimizer_for(config, task), mesh,
                            config.sharding_rules, config.seed)[0]


def test_two_sub_models_from_two_runs_one_frozen_one_fine_tuned(two_runs, tmp_path):
  (dir_a, params_a), (dir_b, params_b) = two_runs["a"], two_runs["b"]
  config = load_config("ytb8m", "tiny")
  config.total_steps, config.eval_every_steps = 6, 0
  config.init_from = (
      _entry(dir_a, source_subtree="rgb_tower", target_subtree="rgb_tower", frozen=True),
      _entry(dir_b, step=4, source_subtree="audio_tower", target_subtree="audio_tower"))
  state = _fresh_state(config)
  start = jax.tree.map(np.asarray,
                       apply_init_from(config.init_from, state.params, state.model_state)[0])
  runs.assert_trees_equal(start["rgb_tower"], params_a["rgb_tower"])
  runs.assert_trees_equal(start["audio_tower"], params_b["audio_tower"])
  assert not np.array_equal(start["classifier"]["kernel"], params_a["classifier"]["kernel"])

  train_and_evaluate(config, str(tmp_path))
  _, trained, _, _, _ = restore_for_eval(config, str(tmp_path))
  params = jax.tree.map(np.asarray, trained.params)
  runs.assert_trees_equal(params["rgb_tower"], params_a["rgb_tower"])  # frozen: bit-identical
  moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params["audio_tower"]),
                                                    jax.tree.leaves(params_b["audio_tower"]))]
  assert all(moved)  # fine-tuned from run b's weights
  # Frozen parameters carry no optimizer state (no Adam moments).
  masked = [leaf for leaf in jax.tree.leaves(trained.opt_state,
                                             is_leaf=lambda x: isinstance(x, optax.MaskedNode))
            if isinstance(leaf, optax.MaskedNode)]
  assert len(masked) == 2 * len(jax.tree.leaves(params["rgb_tower"]))  # mu and nu


def test_best_step_of_a_source_workdir(two_runs, tmp_path):
  dir_a, params_a = two_runs["a"]
  config = load_config("ytb8m", "tiny")
  config.init_from = (_entry(dir_a, step="best"),)  # the only evaluation: step 4
  state = _fresh_state(config)
  params = apply_init_from(config.init_from, state.params, state.model_state)[0]
  runs.assert_trees_equal(jax.tree.map(np.asarray, params), params_a)


@pytest.mark.parametrize("entry,message", [
    (dict(source_subtree="rgb_towr", target_subtree="rgb_tower"),
     r"source_subtree='rgb_towr' is not in the params of .*; there are: \['audio_tower', "
     r"'classifier', 'fusion', 'rgb_tower'\]"),
    (dict(source_subtree="rgb_tower", target_subtree="rgb_tower/block_9"),
     r"target_subtree='rgb_tower/block_9' is not in this model's params; there are: "
     r"\['rgb_tower/block_0', 'rgb_tower/final_ln', 'rgb_tower/input_projection', "
     r"'rgb_tower/position_embedding'\]"),
    (dict(source_subtree="audio_tower", target_subtree="rgb_tower"),
     r"params 'rgb_tower/input_projection/kernel' is \(1024, 16\) float32 in this model but "
     r"'audio_tower/input_projection/kernel' is \(128, 16\) float32"),
    (dict(step=3), r"no '3' checkpoint; available steps: \[4\]"),
])
def test_errors_name_the_paths_and_what_exists(two_runs, entry, message):
  config = load_config("ytb8m", "tiny")
  config.init_from = (_entry(two_runs["a"][0], **entry),)
  state = _fresh_state(config)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    apply_init_from(config.init_from, state.params, state.model_state)


def test_a_hugging_face_clip_directory_fills_a_frozen_tower(cache_dir, tmp_path):
  config = load_config("clip_pretrain", "tiny")
  module = clip.Clip(clip.get_config("tiny"))
  source = jax.tree.map(np.asarray, clip.init_params(module, seed=7)["params"])
  clip.save_pretrained(source, module.config, str(tmp_path / "hf"))
  config.init_from = (_entry(tmp_path / "hf", source_subtree="vision_model",
                             target_subtree="vision_model", frozen=True),)
  state = _fresh_state(config)
  params = jax.tree.map(np.asarray,
                        apply_init_from(config.init_from, state.params, state.model_state)[0])
  runs.assert_trees_equal(params["vision_model"], source["vision_model"])
  own = jax.tree.map(np.asarray, state.params)
  runs.assert_trees_equal(params["text_model"], own["text_model"])  # untouched
  assert not np.array_equal(own["text_model"]["embeddings"]["token_embedding"]["embedding"],
                            source["text_model"]["embeddings"]["token_embedding"]["embedding"])
  config.init_from = (_entry(tmp_path / "nothing_here"),)
  with pytest.raises(FileNotFoundError, match=r"init_from\[0\].source=.*neither an mmjax"):
    apply_init_from(config.init_from, state.params, state.model_state)


def test_a_variables_file_roundtrips_and_needs_params(tmp_path):
  variables = {"params": {"dense": {"kernel": np.ones((2, 3), np.float32)}},
               "batch_stats": {"bn": {"mean": np.zeros(3, np.float32)}}}
  path = str(tmp_path / "v.npz")
  write_variables(path, variables)
  flat, what = load_source({"source": path}, "config.init_from[0]")
  assert what.endswith("(variables file)")
  np.testing.assert_array_equal(flat["params"]["dense/kernel"], np.ones((2, 3)))
  assert list(flat["batch_stats"]) == ["bn/mean"]
  np.savez(tmp_path / "bad.npz", x=np.zeros(1))
  with pytest.raises(ValueError, match=r"bad.npz: a variables file needs 'params/...' arrays"):
    read_variables(str(tmp_path / "bad.npz"))
