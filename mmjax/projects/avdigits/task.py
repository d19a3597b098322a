"""The AV-digits task: a small real two-modality benchmark (mmjax.data.avdigits) on which the
papers' training tricks are measured through config alone.

Loss (config.loss): mmjax.tasks.blended_heads over the heads audio, image and fused ('fused'
is the main head): cross-entropy or focal loss, head weights fixed, from a G-Blend weights
file, or re-estimated online (default: the fused head only).
Predictions: softmax of every head; metrics from the fused head (accuracy, weighted/macro F1)
and per-head losses and accuracies (mmjax.metrics.HeadsEvaluator).
Modality dropout: config.model.modality_dropout (p) and keep_one; an eval split with
data.missing_modalities measures a missing modality. L1 and pruning masks come through
config.optimizer.{gradient,weight}_transforms (mmjax.transforms.pruning).
"""

from __future__ import annotations

import numpy as np

from mmjax.data import avdigits, modality_arrays
from mmjax.projects.avdigits.model import AVDigitsFusion
from mmjax.tasks import register
from mmjax.tasks.blended_heads import BlendedHeads, BlendedHeadsTask
from mmjax.tasks.data_task import DataModuleTask


class _DataModule:
  """mmjax.data.modality_arrays with AV-digits as the default directory."""
  FILE_KEYS = avdigits.FILE_KEYS
  resolve_files = staticmethod(avdigits.resolve_files)
  make_train_dataset = staticmethod(modality_arrays.make_train_dataset)
  make_eval_dataset = staticmethod(modality_arrays.make_eval_dataset)


@register("avdigits")
class AVDigitsTask(BlendedHeadsTask, DataModuleTask):
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
    self.blended = BlendedHeads(self.heads, "fused", self.num_classes, config.loss)

  def example_batch(self, batch_size: int):
    return {"image": np.zeros((batch_size, 8, 8), np.float32),
            "audio": np.zeros((batch_size, avdigits.MAX_FRAMES, 13), np.float32),
            "audio_frames": np.ones((batch_size,), np.int32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32),
            "modality_mask": np.ones((batch_size, len(self.modalities)), np.float32)}

  def head_weights(self, task_state):
    """{head: w} used by the loss (heads with weight 0 are left out)."""
    return self.blended.head_weights(task_state)
