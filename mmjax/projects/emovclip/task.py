"""EmoVCLIP (MER2024, seed 003 section 3.2): video emotion classification with CLIP and deep
vision-language prompt learning on a frozen backbone.

Every frame of a clip goes through the prompted image tower; frame embeddings are mean-pooled
over time; class c's text is `model.template.format(c)` ("a photo of a {}." style) through the
prompted text tower; logits = exp(logit_scale) * cos(video, text_c) (`Clip.classify`). Only
the prompts train: config.optimizer.trainable (a regex on parameter paths) freezes everything
else in the optimizer (mmjax.train.optimizer.freeze). With num_prompts = 0 and no training
steps the same task is CLIP zero-shot classification (configs/emovclip.py:zero_shot).

Binds: mmjax.data.labelled_video (MER-style label CSV + frames, synthetic default),
mmjax.models.clip, weighted cross-entropy, accuracy / weighted F1 (MER's WAF).
"""

import jax
import numpy as np
import optax

from mmjax import losses, metrics
from mmjax.data import labelled_video
from mmjax.models import clip
from mmjax.models.clip import adapter
from mmjax.models.clip.classify import class_prompts
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit, register
from mmjax.tasks.data_task import DataModuleTask


@register("emovclip")
class EmoVClipTask(DataModuleTask):
  """Video emotion classification with a prompt-tuned CLIP (mmjax.tasks.Task).

  Batch: pixel_values [B, T, H, W, 3] (CLIP-normalized frames), label [B] int32, weight [B].
  Model output: logits [B, K] over the K class prompts; predictions softmax [B, K].
  """

  evaluator_keys = ("label", "weight")
  data_module = labelled_video

  def __init__(self, config):
    super().__init__(config)
    self.class_names = tuple(config.data.class_names)
    self.clip = adapter.build_clip(config.model)
    adapter.check_image_size(config.data, self.clip.config)
    self.tokenizer = adapter.tokenizer(config.model)
    prompts = class_prompts(self.tokenizer, self.class_names, config.model.template,
                            self.clip.num_prompts)
    self.model = adapter.CheckpointModel(
        self.clip, clip.Clip.classify,
        lambda b: {"pixel_values": b["pixel_values"],
                   "class_input_ids": prompts["input_ids"],
                   "class_attention_mask": prompts["attention_mask"]})

  def pretrained_params(self, params):
    return adapter.pretrained_params(self.config.model, params)

  def example_batch(self, batch_size: int):
    size = self.clip.config.vision.image_size
    return {"pixel_values": np.zeros((batch_size, self.config.data.num_frames, size, size, 3),
                                      np.float32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32)}

  def loss(self, logits, batch, task_state=None):
    """Weighted mean cross-entropy over the clips (padding rows have weight 0)."""
    del task_state
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (logits.argmax(-1) == batch["label"]).astype(logits.dtype)
    return losses.weighted_mean(per_example, batch["weight"]), {
        "accuracy": losses.weighted_mean(correct, batch["weight"])}

  def predictions(self, logits):
    return jax.nn.softmax(logits)

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return metrics.LabelsEvaluator(metrics.ClassificationMetrics(len(self.class_names)), "label")
