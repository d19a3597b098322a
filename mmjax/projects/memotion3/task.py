"""The Memotion task (seed 000, section 3-4): one CLIP meme classifier for one target.

config.model:
  name          'text' (CLIP-text), 'image' (CLIP-image) or 'multi' (CLIP-multi), see models.py
  preset / checkpoint   the CLIP architecture (mmjax.models.clip.adapter); the weights come
                through config.init_from (a CLIP run's or a Hugging Face directory's
                'text_model' / 'vision_model', or the unimodal runs into 'text' / 'image')
  dropout_rate  the classifiers' dropout (0.1 in the paper)
  lstm_size, lstm_layers             CLIP-text's BiLSTM (512, 2)
  embed_dim, num_blocks, num_heads   CLIP-multi's d_e and attention blocks (512, 6, 8)
  residual, attention_dropout        CLIP-multi's blocks (off and 0: the paper's choice)
config.data: meme_data.py (target 'task_a' or a Task C label).
config.loss: mmjax.tasks.blended_heads over the model's heads (CLIP-multi: text, image, multi,
  predictions from 'multi'); configs/memotion3.py sets Table 3's choice.
Metrics (eval): accuracy, weighted F1 (the challenge's score) and macro F1 of the predicting
head, and each head's loss and accuracy.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from mmjax.models.clip import adapter
from mmjax.projects.memotion3 import meme_data, memotion_table, models
from mmjax.tasks import register
from mmjax.tasks.blended_heads import GBLEND_EVAL_SPLITS, BlendedHeads, BlendedHeadsTask
from mmjax.tasks.data_task import DataModuleTask

__all__ = ["HEADS", "HOLDOUT_FRACTION", "MemotionTask", "apply_table3", "build_model"]

HEADS = {"text": ("text",), "image": ("image",), "multi": ("text", "image", "multi")}
HOLDOUT_FRACTION = 0.2  # of the training memes, for online gradient blending


def apply_table3(config) -> None:
  """Sets Table 3's loss for config.model.name and config.data.target (in place): CLIP-multi
  gradient blending (online, weights from a held-out HOLDOUT_FRACTION of the training memes,
  measured by the eval splits GBLEND_EVAL_SPLITS) unless config.loss.gradient_blending is
  False (then its fused head only); CLIP-text and CLIP-image cross-entropy for Task A (and the
  binary 'hateful' pretraining) and focal loss for the Task C labels. config.evals keeps its
  'eval' split."""
  multi = config.model.name == "multi"
  blend = multi and config.loss.gradient_blending
  task_c = config.data.target in memotion_table.TASK_C_LABELS
  config.loss.name = "focal" if task_c and not multi else "cross_entropy"
  config.loss.gblend.mode = "online" if blend else "off"
  config.loss.head_weights = {models.PREDICTION_HEAD[config.model.name]: 1.0}
  config.data.holdout_fraction = HOLDOUT_FRACTION if blend else 0.0
  config.data.train_subset = "train" if blend else "all"
  with config.unlocked():
    config.evals = ml_collections.ConfigDict({"eval": dict(config.evals.get("eval", {"data": {}})),
                                             **(GBLEND_EVAL_SPLITS if blend else {})})


def build_model(model_config, num_classes: int):
  """The classifier named by config.model.name (models.MODELS)."""
  clip_config = adapter.clip_config(model_config)
  name = model_config.name
  if name == "text":
    return models.ClipTextClassifier(clip_config, num_classes, model_config.lstm_size,
                                     model_config.lstm_layers, model_config.dropout_rate)
  if name == "image":
    return models.ClipImageClassifier(clip_config, num_classes, model_config.dropout_rate)
  if name == "multi":
    return models.ClipMultiClassifier(
        clip_config, num_classes, embed_dim=model_config.embed_dim,
        num_blocks=model_config.num_blocks, num_heads=model_config.num_heads,
        residual=model_config.residual, attention_dropout=model_config.attention_dropout,
        lstm_size=model_config.lstm_size, lstm_layers=model_config.lstm_layers,
        dropout_rate=model_config.dropout_rate)
  raise ValueError(f"config.model.name={name!r}; expected one of {models.MODELS}")


@register("memotion3")
class MemotionTask(BlendedHeadsTask, DataModuleTask):
  """A Memotion 3 classifier (module docstring).

  Batch: pixel_values [B, S, S, 3], input_ids / attention_mask [B, L] int32, label [B] int32,
  weight [B]. Model output: {head: logits [B, C]}.
  """

  evaluator_keys = ("label", "weight")
  data_module = meme_data

  def __init__(self, config):
    super().__init__(config)
    self.class_names = meme_data.class_names(config.data)
    self.num_classes = len(self.class_names)
    self.model = build_model(config.model, self.num_classes)
    adapter.check_image_size(config.data, self.model.clip)
    self.tokenizer = adapter.tokenizer(config.model)
    self.dataset_args = (self.tokenizer,)
    heads = HEADS[config.model.name]
    self.blended = BlendedHeads(heads, models.PREDICTION_HEAD[config.model.name],
                                self.num_classes, config.loss)

  def example_batch(self, batch_size: int):
    size = self.config.data.image_size
    length = self.tokenizer.context_length
    return {"pixel_values": np.zeros((batch_size, size, size, 3), np.float32),
            "input_ids": np.zeros((batch_size, length), np.int32),
            "attention_mask": np.ones((batch_size, length), np.int32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32)}
