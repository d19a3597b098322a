"""Checks of a config's numeric keys at start, so a bad value fails at once with its key named
(not as a ZeroDivisionError or a shape error deep in the loop).

RULES maps dotted key patterns (fnmatch, matched against e.g. 'optimizer.learning_rate' or
'model.transformer.d_model') to a constraint. Every numeric key of every shipped config is
covered (tests/test_trainer.py walks them); keys no rule covers are not checked.
"""

import fnmatch
import math
from typing import Any, Callable, Iterator, List, Tuple

import ml_collections

Check = Tuple[str, Callable[[Any], bool]]

INT_AT_LEAST_0: Check = ("an integer >= 0", lambda v: _is_int(v) and v >= 0)
INT_AT_LEAST_1: Check = ("an integer >= 1", lambda v: _is_int(v) and v >= 1)
POSITIVE: Check = ("a finite number > 0", lambda v: _is_real(v) and v > 0)
NON_NEGATIVE: Check = ("a finite number >= 0", lambda v: _is_real(v) and v >= 0)
PROBABILITY: Check = ("a probability in [0, 1)", lambda v: _is_real(v) and 0 <= v < 1)
FACTOR: Check = ("a number in (0, 1]", lambda v: _is_real(v) and 0 < v <= 1)
FRACTION: Check = ("a fraction in [0, 1]", lambda v: _is_real(v) and 0 <= v <= 1)

RULES: List[Tuple[str, Check]] = [
    ("seed", INT_AT_LEAST_0),
    ("total_steps", INT_AT_LEAST_0),
    ("batch_size", INT_AT_LEAST_1),
    ("eval_batch_size", INT_AT_LEAST_1),
    ("log_every_steps", INT_AT_LEAST_1),
    ("eval_every_steps", INT_AT_LEAST_0),
    ("checkpoint_every_steps", INT_AT_LEAST_1),
    ("keep_checkpoints", INT_AT_LEAST_1),
    ("max_nonfinite_steps", INT_AT_LEAST_0),
    ("optimizer.learning_rate", POSITIVE),
    ("optimizer.grad_clip_norm", NON_NEGATIVE),
    ("optimizer.plateau_patience", INT_AT_LEAST_0),
    ("optimizer.plateau_factor", FACTOR),
    ("optimizer.plateau_threshold", NON_NEGATIVE),
    ("optimizer.warmup_steps", INT_AT_LEAST_0),
    ("optimizer.decay_steps", INT_AT_LEAST_0),
    ("optimizer.end_learning_rate_factor", FRACTION),
    ("*dropout_rate", PROBABILITY),
    ("data.num_threads", INT_AT_LEAST_1),
    ("data.num_workers", INT_AT_LEAST_0),
    ("data.prefetch_batches", INT_AT_LEAST_0),
    ("data.eval_max_examples", INT_AT_LEAST_0),
    ("data.synthetic.seed", INT_AT_LEAST_0),
    ("data.synthetic.label_noise", PROBABILITY),
    ("data.synthetic.num_test", INT_AT_LEAST_0),
    ("data.max_bad_fraction", FRACTION),
    ("data.holdout_fraction", PROBABILITY),
    ("data.holdout_seed", INT_AT_LEAST_0),
    ("data.avdigits.seed", INT_AT_LEAST_0),
    ("data.avdigits.imbalance", PROBABILITY),
    ("data.split_seed", INT_AT_LEAST_0),
    ("data.test_fraction", PROBABILITY),
    ("data.fps", POSITIVE),
    ("data.mertools.max_frames", INT_AT_LEAST_0),
    ("data.mertools.synthetic.seed", INT_AT_LEAST_0),
    ("data.*", INT_AT_LEAST_1),  # sizes and counts: max_frames, num_classes, image_size, ...
    ("correlation.negative_weight", POSITIVE),
    ("model.num_prompts", INT_AT_LEAST_0),
    ("model.prompt_depth", INT_AT_LEAST_0),
    ("model.modality_dropout", PROBABILITY),
    ("model.attention_dropout", PROBABILITY),
    ("model.dropout", PROBABILITY),
    ("loss.valence_weight", NON_NEGATIVE),
    ("model.width_multiplier", POSITIVE),
    ("loss.focal_gamma", NON_NEGATIVE),
    ("loss.focal_alpha", NON_NEGATIVE),
    ("loss.head_weights.*", NON_NEGATIVE),
    ("pnao.k", PROBABILITY),
    ("pnao.rounds", INT_AT_LEAST_1),
    ("protocol.folds", INT_AT_LEAST_1),
    ("protocol.self_training_rounds", INT_AT_LEAST_0),
    ("protocol.top_k", INT_AT_LEAST_1),
    ("model.*", INT_AT_LEAST_1),  # widths, depths, heads, clusters
]


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def numeric_leaves(config, prefix: str = "") -> Iterator[Tuple[str, Any]]:
  """(dotted key, value) of every int/float value of `config`, tuple elements included (the
  key of a tuple element is the tuple's key)."""
  for key in sorted(config.keys()):
    value = config[key]
    path = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from numeric_leaves(value, path + ".")
    elif isinstance(value, (tuple, list)):
      for item in value:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
          yield path, item
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield path, value


def rule_for(key: str):
  """The first rule whose pattern matches `key`, or None."""
  return next((check for pattern, check in RULES if fnmatch.fnmatchcase(key, pattern)), None)


def validate_config(config) -> None:
  """Raises ValueError naming the first numeric key that breaks its rule (module docstring).
  Keys under init_from, mesh and sharding_rules are checked where they are used."""
  for key, value in numeric_leaves(config):
    if key.split(".")[0] in ("init_from", "mesh", "sharding_rules"):
      continue
    check = rule_for(key)
    if check is not None and not check[1](value):
      raise ValueError(f"config.{key}={value!r}: must be {check[0]}")
