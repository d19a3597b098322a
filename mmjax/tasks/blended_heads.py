"""The loss of a classifier with several heads (one per modality plus a fused one), from
`config.loss`: a pure function of the heads' logits that tasks share.

  loss = sum_k w_k * mean_n weight_n * l(logits_k[n], label[n])        (seed 000 eq. 7)

l: config.loss.name 'cross_entropy' or 'focal' (mmjax.losses.softmax_focal_loss,
-alpha_y (1 - p_y)^gamma log p_y, with focal_gamma and focal_alpha: per class, () = none).
Head weights w_k, by config.loss.gblend.mode:
  'off'      config.loss.head_weights ({head: w}; heads with w = 0 are left out)
  'offline'  the JSON file gblend.weights_file (mmjax.transforms.gblend.read_weights_file)
  'online'   re-estimated after every evaluation from the eval splits gblend.train_split and
             gblend.holdout_split (mmjax.transforms.gblend.OnlineGBlend), kept in the task
             state (and so in the checkpoint)
Predictions are every head's softmax; accuracy and the evaluator's metrics come from the main
(fused) head only.
"""

from __future__ import annotations

import functools
import logging
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import losses, metrics
from mmjax.tasks.protocol import DEFAULT_SPLIT, AfterEvaluation, EvalSplit
from mmjax.transforms import gblend

__all__ = ["GBLEND_EVAL_SPLITS", "GBLEND_MODES", "LOSSES", "BlendedHeads", "BlendedHeadsTask"]

GBLEND_MODES = ("off", "offline", "online")
LOSSES = ("cross_entropy", "focal")
# The config.evals entries online G-Blend measures (the train and held-out parts of the training
# file), for data modules with the keys data.eval_split ('train') and data.eval_subset.
GBLEND_EVAL_SPLITS = {
    "gblend_train": {"data": {"eval_split": "train", "eval_subset": "train"}},
    "gblend_holdout": {"data": {"eval_split": "train", "eval_subset": "holdout"}},
}
log = logging.getLogger("mmjax")


class BlendedHeads:
  """The blended multi-head loss and its task hooks (module docstring).

  Args:
    heads: the model's output heads, e.g. ('audio', 'image', 'fused').
    main: the head whose predictions count (accuracy, metrics).
    num_classes: C.
    loss_config: config.loss (name, focal_gamma, focal_alpha, head_weights, gblend.{mode,
      weights_file, train_split, holdout_split}).

  Raises:
    ValueError: a bad config.loss key (named).
  """

  def __init__(self, heads: Sequence[str], main: str, num_classes: int, loss_config):
    self.heads, self.main, self.num_classes = tuple(heads), main, int(num_classes)
    if main not in self.heads:
      raise ValueError(f"the main head {main!r} is not one of the heads {self.heads}")
    self.per_example = self._per_example_loss(loss_config)
    self.mode = loss_config.gblend.mode
    if self.mode not in GBLEND_MODES:
      raise ValueError(f"config.loss.gblend.mode={self.mode!r}; expected one of {GBLEND_MODES}")
    self.fixed_weights = self._fixed_weights(loss_config)
    self.online = (gblend.OnlineGBlend(self.heads, loss_config.gblend.train_split,
                                       loss_config.gblend.holdout_split)
                   if self.mode == "online" else None)

  def _per_example_loss(self, loss_config):
    if loss_config.name not in LOSSES:
      raise ValueError(f"config.loss.name={loss_config.name!r}; expected one of {LOSSES}")
    alpha = tuple(loss_config.focal_alpha or ())
    if alpha and len(alpha) != self.num_classes:
      raise ValueError(f"config.loss.focal_alpha has {len(alpha)} values; "
                       f"{self.num_classes} classes")
    gamma = float(loss_config.focal_gamma) if loss_config.name == "focal" else 0.0
    return functools.partial(losses.softmax_focal_loss, alpha=np.array(alpha, np.float32)
                             if alpha else None, gamma=gamma)

  def _fixed_weights(self, loss_config):
    """{head: w} for modes 'off' and 'offline'; None for 'online' (from the task state)."""
    if self.mode == "offline":
      return dict(zip(self.heads, gblend.read_weights_file(loss_config.gblend.weights_file,
                                                           self.heads).tolist()))
    if self.mode == "online":
      return None
    weights = {k: float(v) for k, v in dict(loss_config.head_weights).items()}
    unknown = sorted(set(weights) - set(self.heads))
    if unknown or not any(weights.values()):
      raise ValueError(f"config.loss.head_weights={weights}: heads are {list(self.heads)} and at "
                       "least one weight must be > 0")
    return weights

  def head_weights(self, task_state) -> Dict:
    """{head: w} used by the loss (heads with weight 0 are left out)."""
    if self.online is not None:
      return {h: task_state["gblend"]["weights"][i] for i, h in enumerate(self.heads)}
    return {h: w for h, w in self.fixed_weights.items() if w}

  def loss(self, outputs, batch, task_state):
    """(total loss, {'accuracy' of the main head, 'loss_<head>'}) for batch['label'] [B] and
    batch['weight'] [B]."""
    weights = self.head_weights(task_state)
    total, per_head = losses.blended_loss({h: outputs[h] for h in weights}, batch["label"],
                                          weights, self.per_example, batch["weight"])
    correct = (outputs[self.main].argmax(-1) == batch["label"]).astype(jnp.float32)
    aux = {"accuracy": losses.weighted_mean(correct, batch["weight"])}
    aux.update({f"loss_{h}": v for h, v in per_head.items()})
    return total, aux

  def predictions(self, outputs):
    return {h: jax.nn.softmax(outputs[h]) for h in self.heads}

  def new_evaluator(self):
    return metrics.HeadsEvaluator(self.num_classes, main=self.main)

  def init_task_state(self):
    if self.online is None:
      return {}
    return {"gblend": self.online.init_state(np.full(len(self.heads), 1.0 / len(self.heads)))}

  def after_evaluation(self, step, metrics_by_split, task_state) -> AfterEvaluation:
    if self.online is None:
      return AfterEvaluation()
    state, estimate = self.online.update(task_state["gblend"], metrics_by_split)
    if estimate is not None:
      shown = ", ".join(f"{h} {w:.3f}" for h, w in zip(self.heads, state["weights"]))
      log.info("step %d: G-Blend weights %s%s", step, shown,
               f" ({estimate.reason})" if estimate.reason else "")
    return AfterEvaluation(task_state={"gblend": state})


class BlendedHeadsTask:
  """Task hooks delegated to `self.blended` (a BlendedHeads the task builds): loss,
  predictions, new_evaluator, init_task_state, after_evaluation."""

  blended: BlendedHeads

  def loss(self, outputs, batch, task_state):
    return self.blended.loss(outputs, batch, task_state)

  def predictions(self, outputs):
    return self.blended.predictions(outputs)

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return self.blended.new_evaluator()

  def init_task_state(self, params):
    del params
    return self.blended.init_task_state()

  def after_evaluation(self, step, metrics_by_split, task_state):
    return self.blended.after_evaluation(step, metrics_by_split, task_state)
