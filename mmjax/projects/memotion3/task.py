"""The Memotion task (seed 000, section 3-4): one CLIP meme classifier for one target.

config.model:
  name          'text' (CLIP-text), 'image' (CLIP-image), 'multi' (CLIP-multi) or 'oscar'
                (OSCAR over the OCR text, object tags and region features), see models.py
  bert_checkpoint   OSCAR's Hugging Face BERT directory ('' = a small random one with the
                synthetic memes' vocabulary, synthetic_bert.py); regions: config.data.regions
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

import logging

import jax
import ml_collections
import numpy as np

from mmjax.models import bert
from mmjax.models.clip import adapter
from mmjax.projects.memotion3 import meme_data, memotion_table, models, synthetic_bert
from mmjax.tasks import register
from mmjax.tasks.blended_heads import GBLEND_EVAL_SPLITS, BlendedHeads, BlendedHeadsTask
from mmjax.tasks.data_task import DataModuleTask

log = logging.getLogger("mmjax")

__all__ = ["HEADS", "HOLDOUT_FRACTION", "MemotionTask", "apply_table3", "build_model"]

HEADS = {"text": ("text",), "image": ("image",), "multi": ("text", "image", "multi"),
         "oscar": ("oscar",)}
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


def build_model(model_config, num_classes: int, bert_config=None):
  """The classifier named by config.model.name (models.MODELS); OSCAR takes `bert_config`."""
  name = model_config.name
  if name == "oscar":
    return models.OscarClassifier(bert_config, num_classes, model_config.dropout_rate)
  clip_config = adapter.clip_config(model_config)
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

  Batch: the model's inputs (meme_data.ClipInputs or OscarInputs), label [B] int32, weight
  [B]. Model output: {head: logits [B, C]}.
  """

  evaluator_keys = ("label", "weight")
  data_module = meme_data

  def __init__(self, config):
    super().__init__(config)
    self.class_names = meme_data.class_names(config.data)
    self.num_classes = len(self.class_names)
    name = config.model.name
    if name == "oscar":
      self.bert_checkpoint = (config.model.bert_checkpoint or
                              synthetic_bert.synthetic_bert_checkpoint(
                                  config.data.synthetic.directory, log=log.info))
      self.model = build_model(config.model, self.num_classes,
                               bert.read_config(self.bert_checkpoint))
      regions_config = config.data.regions
      self.tokenizer = bert.load_tokenizer(self.bert_checkpoint)
      self.inputs = meme_data.OscarInputs(self.tokenizer, regions_config.max_tokens,
                                          regions_config.max_regions,
                                          regions_config.feature_dim)
    else:
      self.model = build_model(config.model, self.num_classes)
      adapter.check_image_size(config.data, self.model.clip)
      self.tokenizer = adapter.tokenizer(config.model)
      self.inputs = meme_data.ClipInputs(self.tokenizer, config.data.image_size)
    self.dataset_args = (self.inputs,)
    self.blended = BlendedHeads(HEADS[name], models.PREDICTION_HEAD[name], self.num_classes,
                                config.loss)

  def example_batch(self, batch_size: int):
    example = self.inputs.collate([None] * batch_size)
    return {**example, "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32)}

  def pretrained_params(self, params):
    """OSCAR's 'bert' subtree from config.model.bert_checkpoint (the synthetic random one when
    empty); None for the CLIP models (their weights come through config.init_from)."""
    if self.config.model.name != "oscar":
      return None
    host = jax.tree.map(np.asarray, jax.device_get(params))
    host["bert"] = bert.from_pretrained(self.bert_checkpoint, host["bert"])
    return host
