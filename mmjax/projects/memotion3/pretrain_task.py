"""CLIP contrastive pretraining on image-text pairs (seed 000 eq. 2-3; Radford et al. 2021).

Binds: mmjax.data.image_text (CSV/JSONL pair lists, synthetic default), mmjax.models.clip,
the symmetric contrastive loss over the global batch (mmjax.losses.clip_contrastive_loss,
embeddings gathered across the 'data' mesh axis), and image-text retrieval recall@k over the
whole eval set. The checkpointed params are exactly Clip's: `launch/export_clip.py` writes them
as a Hugging Face directory that `mmjax.models.clip.from_pretrained` (and transformers) load.
"""

import jax.numpy as jnp
import numpy as np

from mmjax import losses, metrics
from mmjax.data import image_text
from mmjax.models import clip
from mmjax.models.clip import adapter
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit, register
from mmjax.tasks.data_task import DataModuleTask


@register("clip_pretrain")
class ClipPretrainTask(DataModuleTask):
  """CLIP contrastive pretraining on image-text pairs (mmjax.tasks.Task).

  Batch: input_ids / attention_mask [B, L] int32, pixel_values [B, H, W, 3], weight [B].
  Model output: Clip's outputs; the loss is symmetric cross-entropy over the global batch.
  """

  evaluator_keys = ("input_ids", "weight")
  data_module = image_text

  def __init__(self, config):
    super().__init__(config)
    self.clip = adapter.build_clip(config.model)
    adapter.check_image_size(config.data, self.clip.config)
    self.model = adapter.CheckpointModel(
        self.clip, clip.Clip.__call__,
        lambda b: {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                   "pixel_values": b["pixel_values"]})
    self.tokenizer = adapter.tokenizer(config.model)
    self.dataset_args = (self.tokenizer,)

  def pretrained_params(self, params):
    return adapter.pretrained_params(self.config.model, params)

  def example_batch(self, batch_size: int):
    batch = clip.example_inputs(self.clip.config, batch_size)
    batch["weight"] = np.ones((batch_size,), np.float32)
    return batch

  def loss(self, outputs, batch, task_state=None):
    del task_state
    loss = losses.clip_contrastive_loss(outputs["image_embeds"], outputs["text_embeds"],
                                        outputs["logit_scale"], weight=batch["weight"])
    return loss, {"temperature": 1.0 / jnp.exp(outputs["logit_scale"])}

  def predictions(self, outputs):
    return {"image_embeds": outputs["image_embeds"], "text_embeds": outputs["text_embeds"]}

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return _RetrievalEvaluator()


class _RetrievalEvaluator:
  def __init__(self):
    self._metrics = metrics.RetrievalMetrics(ks=(1, 5))

  def update(self, predictions, batch):
    self._metrics.update(predictions["image_embeds"], predictions["text_embeds"],
                         batch["input_ids"], batch["weight"])

  def compute(self):
    return self._metrics.compute()
