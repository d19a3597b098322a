"""In-process trainer runs: every config's tiny variant, every model/fusion, NaN handling, bad
records."""

import glob
import json
import logging
import os
import re

import jax
import numpy as np
import pytest
from conftest import ROOT, config_module, load_config

from mmjax import parallel
from mmjax.data import tfrecord
from mmjax.tasks import get_task
from mmjax.train import NonFiniteLossError, evaluate_checkpoint, train_and_evaluate
from mmjax.train.bad_records import TooManyBadRecordsError
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.evaluate import EmptySplitError, evaluate
from mmjax.train.metric_writer import drop_rows_after
from mmjax.train.snapshot import ConfigChangedError
from mmjax.train.steps import abstract_train_state, create_train_state, make_eval_step
from mmjax.train.trainer import build_optimizer_for
from mmjax.train.validate import numeric_leaves, rule_for, validate_config

CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) != "defaults.py")
VARIANTS = [(name, variant) for name in CONFIGS for variant in config_module(name).VARIANTS]


# The headline metrics each task's evaluator reports (all in [0, 1]).
TASK_METRICS = {
    "youtube8m": ("gap", "map", "perr", "hit_at_1"),
    "clip_pretrain": ("i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5"),
    "emovclip": ("accuracy", "weighted_f1", "macro_f1"),
    "youtube8m_correlation": ("accuracy", "fpr", "fnr"),
    "avdigits": ("accuracy", "weighted_f1", "macro_f1"),
    "memotion3": ("accuracy", "weighted_f1", "macro_f1"),
    "cremad": ("accuracy", "weighted_f1", "macro_f1", "accuracy_emotion"),
    "mer2023": ("accuracy", "weighted_f1", "macro_f1"),
    "mer2024_fusion": ("accuracy", "weighted_f1", "macro_f1"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_has_a_tiny_variant_that_trains(name, cache_dir, tmp_path):
  config = load_config(name, "tiny")
  metrics = train_and_evaluate(config, str(tmp_path))
  assert metrics and all(0.0 <= metrics[f"eval/{k}"] <= 1.0 for k in TASK_METRICS[config.task])
  assert metrics["eval/num_examples"] > 0 and np.isfinite(metrics["eval/loss"])


@pytest.mark.parametrize("name,variant", VARIANTS)
def test_every_variant_builds_its_task_and_state_shapes(name, variant):
  """Each variant (and the default) locks, and its task and train state build (shapes only:
  the paper variants are full size); the tiny ones also train above and in other tests."""
  for variants in ("", variant, f"{variant},tiny"):
    config = load_config(name, variants)
    task = get_task(config)
    abstract, _ = abstract_train_state(task, build_optimizer_for(config, task),
                                       parallel.make_mesh(config.mesh), config.sharding_rules,
                                       config.seed)
    assert jax.tree.leaves(abstract.params)


def test_unknown_variant_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown variant\(s\) \['bogus'\]; valid variants: "
                     r"\['attention_rnn_cmc', .*'netvlad_late', 'paper', 'tiny', "
                     r"'transformer_cmc', 'transformer_cmg', 'transformer_early', "
                     r"'transformer_late'\]"):
    load_config("ytb8m", "tiny,bogus")
  assert load_config("ytb8m", "paper,netvlad").model.name == "netvlad"
  assert load_config("ytb8m", "netvlad,early").model.fusion == "early"
  assert load_config("ytb8m", "paper,tiny").batch_size == 8  # left to right


def test_every_config_docstring_lists_its_variants():
  for name in CONFIGS:
    module = config_module(name)
    for variant in module.VARIANTS:
      assert f"  {variant} " in module.__doc__, (name, variant)


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_step_gathers_only_what_the_evaluator_reads(name, cache_dir):
  """Model inputs (frames, pixels) stay sharded; only labels and weights come back."""
  config = load_config(name, "tiny")
  task = get_task(config)
  mesh = parallel.make_mesh(config.mesh)
  state, shardings = create_train_state(task, build_optimizer_for(config, task), mesh,
                                        config.sharding_rules, config.seed)
  batch = parallel.global_batch(task.example_batch(2), mesh)
  _, evaluator_batch, _, weight = make_eval_step(task, mesh, shardings)(state, batch)
  assert sorted(evaluator_batch) == sorted(task.evaluator_keys)
  assert float(weight) == 2.0 and jax.tree.leaves(evaluator_batch)


# The attention-RNN rows train in tests/test_compare_report.py (launch/compare.py).
@pytest.mark.parametrize("variants", ["tiny,netvlad,early", "tiny,netvlad", "tiny,early"])
def test_models_and_fusions_train(variants, cache_dir, tmp_path):
  config = load_config("ytb8m", variants)
  config.total_steps = 4
  metrics = train_and_evaluate(config, str(tmp_path))
  assert metrics["eval/num_examples"] == 24


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cache_dir, tmp_path):
  config = load_config("ytb8m", "tiny")
  config.total_steps, config.eval_every_steps = 4, 0
  train_and_evaluate(config, str(tmp_path))
  config.total_steps, config.optimizer.learning_rate = 12, 1e38  # params overflow -> NaN loss
  with pytest.raises(NonFiniteLossError, match="the last good checkpoint is step 4"):
    train_and_evaluate(config, str(tmp_path), allow_config_change=True)
  checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), save_every=1, keep=10)
  assert checkpointer.all_steps() == [4]
  checkpointer.close()


def test_resume_with_an_incompatible_config_names_the_checkpoint(cache_dir, tmp_path):
  config = load_config("ytb8m", "tiny")
  config.total_steps, config.eval_every_steps = 4, 0
  train_and_evaluate(config, str(tmp_path))
  config.total_steps, config.optimizer.reduce_on_plateau = 8, False  # another optimizer state
  config.log_every_steps = 4  # safe to change
  with pytest.raises(ConfigChangedError, match=r"config.json: this resume changes keys .*: "
                     r"optimizer.reduce_on_plateau: True -> False\. Start a new"):
    train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match="checkpoints/4 does not match"):
    train_and_evaluate(config, str(tmp_path), allow_config_change=True)


def test_safe_keys_may_change_on_resume_and_eval_reads_the_snapshot(cache_dir, tmp_path):
  config = load_config("ytb8m", "tiny")
  config.total_steps, config.eval_every_steps = 4, 0
  train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["optimizer"]["learning_rate"] == config.optimizer.learning_rate
  config.total_steps, config.log_every_steps, config.keep_checkpoints = 6, 3, 5
  config.data.num_threads = 2
  train_and_evaluate(config, str(tmp_path))  # all safe: resumes
  assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 6
  metrics = evaluate_checkpoint(None, str(tmp_path))  # no config: the snapshot
  assert metrics["eval/num_examples"] == 24


class _ListHandler(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_bad_records_fail_or_are_skipped_counted_and_bounded(cache_dir, tmp_path):
  config = load_config("ytb8m", "tiny")
  get_task(config).prepare(lambda *a: None)  # writes the synthetic data once
  source = sorted(glob.glob(os.path.join(cache_dir, "youtube8m_synthetic_*", "train-*")))[0]
  good = list(tfrecord.iter_tfrecord(source))
  bad_dir = tmp_path / "bad"
  bad_dir.mkdir()
  # Every 4th record is not a proto: 1 in 4 of the records read is bad.
  records = [b"not a proto" if i % 4 == 3 else r for i, r in enumerate(good)]
  tfrecord.write_tfrecord(bad_dir / "train-0.tfrecord", records)
  config.data.train_pattern = str(bad_dir / "train-*.tfrecord")
  config.data.eval_pattern = os.path.join(os.path.dirname(source), "validate-*")
  config.total_steps, config.eval_every_steps, config.log_every_steps = 6, 0, 2
  with pytest.raises(tfrecord.RecordError, match=r"train-0.tfrecord: record \d+"):
    train_and_evaluate(config, str(tmp_path / "strict"))

  config.data.skip_bad_records, config.data.max_bad_fraction = True, 0.5
  handler = _ListHandler()
  logging.getLogger("mmjax.data").addHandler(handler)
  try:
    train_and_evaluate(config, str(tmp_path / "lenient"))
  finally:
    logging.getLogger("mmjax.data").removeHandler(handler)
  # The first five are named (file, record index, reason); the rest are only counted.
  named = [m for m in handler.messages if m.startswith("skipped bad record")]
  assert len(named) == 5 and all(re.search(r"train-0.tfrecord: record \d+: ", m) for m in named)
  rows = [json.loads(line) for line in open(tmp_path / "lenient" / "metrics.jsonl")]
  windows = [r["bad_records"] for r in rows if r["split"] == "train"]
  assert len(windows) == 3 and sum(windows) > 5  # 6 steps x 8 examples need > 5 bad skipped
  assert rows[-1]["split"] == "eval"

  config.data.max_bad_fraction = 0.1
  with pytest.raises(TooManyBadRecordsError, match=r"training records read in this run were bad "
                     r"\(2\d\.\d\d% > config.data.max_bad_fraction=0.1\)"):
    train_and_evaluate(config, str(tmp_path / "bounded"))


def test_metric_rows_past_the_resume_step_are_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "split": "train", "loss": float(s)} for s in (2, 4, 6, 8)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 10, "spl')  # torn
  assert drop_rows_after(str(path), 4) == 3
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4]
  assert drop_rows_after(str(path), 4) == 0 and drop_rows_after(str(tmp_path / "none"), 1) == 0


def test_every_numeric_key_of_every_config_is_covered_by_a_rule():
  for name, variant in VARIANTS + [(name, "") for name in CONFIGS]:
    config = load_config(name, variant)
    validate_config(config)
    uncovered = [key for key, _ in numeric_leaves(config)
                 if rule_for(key) is None and key.split(".")[0] not in ("mesh", "init_from")]
    assert not uncovered, (name, variant, uncovered)


@pytest.mark.parametrize("key,value,message", [
    ("log_every_steps", 0, r"config.log_every_steps=0: must be an integer >= 1"),
    ("batch_size", -8, r"config.batch_size=-8: must be an integer >= 1"),
    ("model.dropout_rate", 1.5, r"config.model.dropout_rate=1.5: must be a probability"),
    ("optimizer.plateau_factor", 2.0, r"config.optimizer.plateau_factor=2.0: must be a number "
                                      r"in \(0, 1\]"),
    ("optimizer.learning_rate", float("nan"), r"config.optimizer.learning_rate=nan"),
    ("data.synthetic.num_eval", 0, r"config.data.synthetic.num_eval=0"),
    ("model.transformer.num_heads", 0, r"config.model.transformer.num_heads=0"),
])
def test_a_bad_numeric_key_fails_at_start_naming_it(key, value, message, tmp_path):
  config = load_config("ytb8m", "tiny")
  node = config
  *parents, leaf = key.split(".")
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def _train_files(cache_dir):
  return os.path.join(sorted(glob.glob(os.path.join(cache_dir, "youtube8m_synthetic_*")))[0],
                      "train-*")


@pytest.mark.parametrize("eval_files,error", [
    ("missing/*.tfrecord", r"no files match the pattern: '.*missing/\*.tfrecord'"),
    ("empty.tfrecord", r"eval split 'eval' has no examples \(config.data.eval_pattern='.*"
                       r"empty.tfrecord'\)"),
])
def test_a_missing_or_empty_eval_split_fails_before_training(eval_files, error, cache_dir,
                                                             tmp_path):
  train_and_evaluate(load_config("ytb8m", "tiny"), str(tmp_path / "first"))  # synthetic data
  (tmp_path / "empty.tfrecord").write_bytes(b"")
  config = load_config("ytb8m", "tiny")
  config.data.train_pattern = _train_files(cache_dir)
  config.data.eval_pattern = str(tmp_path / eval_files)
  with pytest.raises((FileNotFoundError, ValueError), match=error):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_an_evaluation_over_zero_examples_reports_no_metrics(cache_dir):
  config = load_config("ytb8m", "tiny")
  task = get_task(config)
  task.prepare(lambda *_: None)
  mesh = parallel.make_mesh(config.mesh)
  state, shardings = create_train_state(task, build_optimizer_for(config, task), mesh,
                                        config.sharding_rules, config.seed)
  padding_only = dict(task.example_batch(8), weight=np.zeros((8,), np.float32))
  task.eval_dataset = lambda *args, **kwargs: [padding_only]
  with pytest.raises(EmptySplitError, match="eval split 'eval' had no examples"):
    evaluate(task, make_eval_step(task, mesh, shardings), state, mesh, batch_size=8)
