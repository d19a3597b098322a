"""The CREMA-D task (seed 002): one shared encoder classifies the emotion of a clip from its
face, its mel spectrogram, or both joined side by side into one input.

config.model: encoders.py (the encoder, its size, pretrained checkpoint, dropout).
config.data: data.py (the dataset's files, preprocessing, split, modality, ablation).
config.loss: mmjax.tasks.blended_heads over the single head 'emotion' (cross-entropy, as in
  Table 4; 'focal' is available).
Metrics of an evaluation split: accuracy, weighted and macro F1, and the mean cross-entropy
'loss_emotion' (Tables 1-3 report loss and accuracy on the train and test splits).
"""

from __future__ import annotations

import functools

import numpy as np

from mmjax.projects.cremad import clips, data, encoders
from mmjax.tasks import register
from mmjax.tasks.blended_heads import BlendedHeads, BlendedHeadsTask
from mmjax.tasks.data_task import DataModuleTask

__all__ = ["CremadTask"]


@register("cremad")
class CremadTask(BlendedHeadsTask, DataModuleTask):
  """Emotion classification over CREMA-D inputs (module docstring).

  Batch: inputs float32 [B, ...] (data.input_shape), frames int32 [B], label int32 [B], weight
  float32 [B]. Model output: {'emotion': logits [B, 6]}.
  """

  evaluator_keys = ("label", "weight")
  data_module = data

  def __init__(self, config):
    super().__init__(config)
    self.num_classes = len(clips.EMOTIONS)
    self.input_shape = data.input_shape(config.data)
    self.model = encoders.build_model(config.model, self.input_shape, self.num_classes)
    self.blended = BlendedHeads((encoders.HEAD,), encoders.HEAD, self.num_classes, config.loss)

  def example_batch(self, batch_size: int):
    return {"inputs": np.zeros((batch_size,) + self.input_shape, np.float32),
            "frames": np.ones((batch_size,), np.int32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32)}

  @functools.cached_property
  def _pretrained(self):
    return encoders.load_pretrained(self.model, self.config.model, self.input_shape)

  def pretrained_params(self, params):
    """The encoder's weights from config.model.checkpoint (None when it is empty)."""
    if self._pretrained is None:
      return None
    return {**encoders.as_host(params), "encoder": self._pretrained["params"]}

  def pretrained_model_state(self, model_state):
    """The checkpoint's BatchNorm statistics (None without a checkpoint or BatchNorm)."""
    if self._pretrained is None or "batch_stats" not in model_state:
      return None
    return {**encoders.as_host(model_state),
            "batch_stats": {"encoder": self._pretrained["batch_stats"]}}
