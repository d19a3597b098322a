"""The AV-digits task: a small real two-modality benchmark (mmjax.data.avdigits) on which the
papers' training tricks are measured through config alone.

Loss (config.loss):
  name 'cross_entropy' or 'focal' (mmjax.losses.softmax_focal_loss with focal_gamma and
  focal_alpha, per class, () for none), applied to every head that has a weight;
  head weights: gblend.mode 'off' -> config.loss.head_weights ({head: w}; default fused only);
  'offline' -> the JSON of gblend.weights_file (mmjax.transforms.gblend.read_weights_file);
  'online' -> re-estimated after every evaluation from the eval splits gblend.train_split and
  gblend.holdout_split (mmjax.transforms.gblend.OnlineGBlend), kept in the task state.
Predictions: softmax of every head; metrics from the fused head (accuracy, weighted/macro F1)
and per-head losses and accuracies (mmjax.metrics.HeadsEvaluator).
Modality dropout: config.model.modality_dropout (p) and keep_one; an eval split with
data.missing_modalities measures a missing modality. L1 and pruning masks come through
config.optimizer.{gradient,weight}_transforms (mmjax.transforms.pruning).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import losses, metrics
from mmjax.data import avdigits, modality_arrays
from mmjax.projects.avdigits.model import AVDigitsFusion
from mmjax.tasks import DEFAULT_SPLIT, AfterEvaluation, EvalSplit, register
from mmjax.tasks.data_task import DataModuleTask
from mmjax.transforms import gblend

GBLEND_MODES = ("off", "offline", "online")
LOSSES = ("cross_entropy", "focal")
log = logging.getLogger("mmjax")


class _DataModule:
  """mmjax.data.modality_arrays with AV-digits as the default directory."""
  FILE_KEYS = avdigits.FILE_KEYS
  resolve_files = staticmethod(avdigits.resolve_files)
  make_train_dataset = staticmethod(modality_arrays.make_train_dataset)
  make_eval_dataset = staticmethod(modality_arrays.make_eval_dataset)


@register("avdigits")
class AVDigitsTask(DataModuleTask):
  """Digit classification from a picture and a spoken digit (module docstring).

  Batch: image [B, 8, 8], audio [B, 92, 13], audio_frames [B] int32, label [B] int32,
  weight [B], modality_mask [B, M]. Model output: {head: logits [B, 10]}.
  """

  evaluator_keys = ("label", "weight")
  data_module = _DataModule

  def __init__(self, config):
    super().__init__(config)
    model = config.model
    self.modalities = tuple(sorted(model.modalities))
    data_modalities = tuple(config.data.modalities)
    if data_modalities != self.modalities:
      raise ValueError(f"config.data.modalities={data_modalities} must be config.model."
                       f"modalities in sorted order, {self.modalities}")
    self.num_classes = int(config.data.num_classes)
    self.model = AVDigitsFusion(modalities=self.modalities, widths=dict(model.widths),
                                num_classes=self.num_classes,
                                modality_dropout=float(model.modality_dropout),
                                keep_one=bool(model.keep_one))
    self.heads = self.modalities + ("fused",)
    self.per_example = self._per_example_loss(config.loss)
    self.gblend_mode = config.loss.gblend.mode
    if self.gblend_mode not in GBLEND_MODES:
      raise ValueError(f"config.loss.gblend.mode={self.gblend_mode!r}; expected one of "
                       f"{GBLEND_MODES}")
    self.fixed_weights = self._fixed_weights(config.loss)
    self.online = (gblend.OnlineGBlend(self.heads, config.loss.gblend.train_split,
                                       config.loss.gblend.holdout_split)
                   if self.gblend_mode == "online" else None)

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
    if self.gblend_mode == "offline":
      return dict(zip(self.heads, gblend.read_weights_file(loss_config.gblend.weights_file,
                                                           self.heads).tolist()))
    if self.gblend_mode == "online":
      return None
    weights = {k: float(v) for k, v in dict(loss_config.head_weights).items()}
    unknown = sorted(set(weights) - set(self.heads))
    if unknown or not any(weights.values()):
      raise ValueError(f"config.loss.head_weights={weights}: heads are {list(self.heads)} and at "
                       "least one weight must be > 0")
    return weights

  def example_batch(self, batch_size: int):
    return {"image": np.zeros((batch_size, 8, 8), np.float32),
            "audio": np.zeros((batch_size, avdigits.MAX_FRAMES, 13), np.float32),
            "audio_frames": np.ones((batch_size,), np.int32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32),
            "modality_mask": np.ones((batch_size, len(self.modalities)), np.float32)}

  def head_weights(self, task_state):
    """{head: w} used by the loss (heads with weight 0 are left out)."""
    if self.online is not None:
      return {h: task_state["gblend"]["weights"][i] for i, h in enumerate(self.heads)}
    return {h: w for h, w in self.fixed_weights.items() if w}

  def loss(self, outputs, batch, task_state):
    weights = self.head_weights(task_state)
    total, per_head = losses.blended_loss({h: outputs[h] for h in weights}, batch["label"],
                                          weights, self.per_example, batch["weight"])
    correct = (outputs["fused"].argmax(-1) == batch["label"]).astype(jnp.float32)
    aux = {"accuracy": losses.weighted_mean(correct, batch["weight"])}
    aux.update({f"loss_{h}": v for h, v in per_head.items()})
    return total, aux

  def predictions(self, outputs):
    return {h: jax.nn.softmax(outputs[h]) for h in self.heads}

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return metrics.HeadsEvaluator(self.num_classes, main="fused")

  def init_task_state(self, params):
    del params
    if self.online is None:
      return {}
    return {"gblend": self.online.init_state(np.full(len(self.heads), 1.0 / len(self.heads)))}

  def after_evaluation(self, step, metrics_by_split, task_state):
    if self.online is None:
      return AfterEvaluation()
    state, estimate = self.online.update(task_state["gblend"], metrics_by_split)
    if estimate is not None:
      shown = ", ".join(f"{h} {w:.3f}" for h, w in zip(self.heads, state["weights"]))
      log.info("step %d: G-Blend weights %s%s", step, shown,
               f" ({estimate.reason})" if estimate.reason else "")
    return AfterEvaluation(task_state={"gblend": state})
