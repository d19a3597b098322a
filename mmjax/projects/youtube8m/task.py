"""YouTube-8M multi-label video categorization (seed 001: every row of its Tables 4 and 8).

Binds: mmjax.data (TFRecord pipelines, synthetic default), mmjax.projects.youtube8m.model,
the starter code's summed sigmoid cross-entropy, and the GAP/MAP/PERR/Hit@1 evaluator (overall,
per taxonomy level and per level-0 category when config.data.taxonomy_file is set or the synthetic
data provides one).
"""

import jax
import numpy as np

from mmjax import losses, metrics
from mmjax.data import pipeline
from mmjax.projects.youtube8m.model import CROSSMODAL_FUSIONS, build_video_classifier
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit, register
from mmjax.tasks.data_task import DataModuleTask


@register("youtube8m")
class Youtube8mTask(DataModuleTask):
  """Multi-label video categorization (mmjax.tasks.Task).

  Batch: rgb [B, T, 1024] and audio [B, T, 128] (uint8 at frame level, dequantized inside the
  model by `dequantize_frames`; float32 at video level), mask [B, T], labels [B, C] multi-hot,
  weight [B]. Model output: logits [B, C]; predictions sigmoid [B, C].
  """

  evaluator_keys = ("labels", "weight")
  data_module = pipeline

  def __init__(self, config):
    super().__init__(config)
    if config.data.level not in ("frame", "video"):
      raise ValueError(f"config.data.level={config.data.level!r}; expected 'frame' or 'video'")
    self.num_frames = 1 if config.data.level == "video" else config.data.max_frames
    self.feature_names = ("rgb", "audio")
    self.model = self.build_model()
    self.taxonomy_file = ""
    self.taxonomy = None  # mmjax.metrics.Taxonomy, read by prepare

  def build_model(self):
    """The flax module (config.model): the video classifier."""
    return build_video_classifier(
        self.config.model, feature_names=self.feature_names,
        num_classes=self.config.data.num_classes, max_frames=self.num_frames)

  def compiler_options(self, platform: str):
    """On the CPU, the Transformer rows compile without XLA's YNNPACK fusions: they fuse the
    attention backward's [B, H, T, T] matmul with the softmax gradient into a kernel that ran
    at ~7 GFLOP/s, and the paper-size TM-L step took 13.7-16.5 s with them against 11.3-11.7 s
    without (2-core AMD EPYC; this folder's README, "Speed"). NetVLAD and the attention RNN
    keep them (2.4 against 3.8 s and 7.8 against 9.3 s without)."""
    if platform == "cpu" and self.config.model.get("name") == "transformer":
      return {"xla_cpu_experimental_ynn_fusion_type": ""}
    return {}

  def prepare(self, log=print) -> None:
    """Resolves the data patterns (writing the synthetic default once if none are given)."""
    data_config = self.config.data.copy_and_resolve_references()
    patterns = pipeline.resolve_data_patterns(data_config, log=log)
    with data_config.unlocked():
      data_config.train_pattern, data_config.eval_pattern = patterns
    self.data_config = data_config
    if self.config.model.get("fusion") in CROSSMODAL_FUSIONS and not (
        self.config.model.correlation.workdir):
      raise ValueError(f"config.model.fusion={self.config.model.fusion!r} loads a trained "
                       "correlation tower: train configs/ytb8m_correlation.py, then pass "
                       "--config.model.correlation.workdir=<its workdir>")
    self.taxonomy_file = patterns.taxonomy_file
    if patterns.taxonomy_file:
      self.taxonomy = metrics.read_taxonomy(patterns.taxonomy_file, self.config.data.num_classes)

  def example_batch(self, batch_size: int):
    sizes = dict(zip(self.feature_names, self.config.data.feature_sizes))
    dtype = np.uint8 if self.config.data.level == "frame" else np.float32
    batch = {name: np.zeros((batch_size, self.num_frames, size), dtype)
             for name, size in sizes.items()}
    batch["mask"] = np.ones((batch_size, self.num_frames), np.float32)
    batch["labels"] = np.zeros((batch_size, self.config.data.num_classes), np.float32)
    batch["weight"] = np.ones((batch_size,), np.float32)
    return batch

  def loss(self, logits, batch, task_state=None):
    del task_state
    loss = losses.multilabel_sigmoid_cross_entropy(logits, batch["labels"], batch["weight"])
    return loss, {}

  def predictions(self, logits):
    return jax.nn.sigmoid(logits)

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    taxonomy = self.taxonomy
    hierarchy = taxonomy is not None and taxonomy.has_hierarchy
    return metrics.LabelsEvaluator(
        metrics.Youtube8mMetrics(
            self.config.data.num_classes, top_k=20,
            class_levels=None if taxonomy is None else taxonomy.levels,
            class_categories=taxonomy.top if hierarchy else None,
            category_names=taxonomy.categories if hierarchy else ()), "labels")
