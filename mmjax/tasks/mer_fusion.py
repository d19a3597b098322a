"""The MER fusion task (seeds 003 and 004's fusion systems): utterance-level MERTools features
(mmjax.data.mertools) -> mmjax.models.mer_fusion.MerFusion -> emotion (and valence).

Loss over the decoders d = 1..S' (rows with a discrete label; weight 0 padding ignored):
  L_e = mean_d CE(e~_d, y),   L_v = mean_d MSE(v^_d, v)
  config.loss.weighting 'awl'   AWL(L_e, L_v) = L_e / d1^2 + L_v / (2 d2^2) + log(1 + d1)
                                + log(1 + d2)   (seed 004 eq. 9; mmjax.losses.
                                uncertainty_weighted_loss, d = softplus(raw) learned with the
                                model)
                        'sum'   L_e + config.loss.valence_weight * L_v
  (without config.model.valence: L_e alone). The L1 term of eq. 8 is a gradient transform
  (config.optimizer.gradient_transforms, mmjax.transforms.pruning.l1_penalty).
Predictions: the decision's emotion posterior 'emotion' [B, C] and valence [B]: for S' > 1 the
entropy fusion of eq. 5-7 (per-example weights, mmjax.fusion.entropy_weights_in_graph) of the
structures' posteriors 'structure_emotion' [B, S', C] and valences 'structure_valence' [B, S'].
Metrics: mmjax.metrics.emotion (WAF, accuracy, MSE, Com = WAF - 0.25 MSE, per structure).

Subclasses register it under a project's name (mmjax/projects/mer2023, mmjax/projects/emovclip).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import fusion, losses
from mmjax.data import mertools, modality_arrays
from mmjax.metrics.emotion import EmotionEvaluator
from mmjax.models.mer_fusion import MerFusion
from mmjax.tasks.data_task import DataModuleTask
from mmjax.tasks.protocol import DEFAULT_SPLIT, EvalSplit

__all__ = ["LOSS_WEIGHTINGS", "MerFusionTask"]

LOSS_WEIGHTINGS = ("awl", "sum")
EXTRA_FIELDS = ("valence", "labelled")


class _DataModule:
  """MERTools features converted to modality_arrays split files."""
  FILE_KEYS = mertools.FILE_KEYS
  resolve_files = staticmethod(mertools.resolve_files)
  make_train_dataset = staticmethod(modality_arrays.make_train_dataset)
  make_eval_dataset = staticmethod(modality_arrays.make_eval_dataset)


def _weighted_mean(values: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
  """sum_b w_b values[b, ...] / sum_b w_b over the batch axis (0 when every weight is 0)."""
  shaped = weight.reshape(weight.shape + (1,) * (values.ndim - 1))
  return (values * shaped).sum(0) / jnp.maximum(weight.sum(), 1e-12)


class MerFusionTask(DataModuleTask):
  """Module docstring. Batch: one [B, D_f] array per field of config.model.structures,
  'valence' [B], 'labelled' [B], 'label' [B] int32, 'weight' [B], 'modality_mask' [B, F]."""

  evaluator_keys = ("label", "weight", "valence", "labelled")
  data_module = _DataModule

  def __init__(self, config):
    super().__init__(config)
    model, data = config.model, config.data
    self.structures = tuple(tuple(s) for s in model.structures)
    self.fields = tuple(sorted({f for s in self.structures for f in s}))
    if tuple(data.modalities) != self.fields:
      raise ValueError(f"config.data.modalities={tuple(data.modalities)} must be the fields of "
                       f"config.model.structures in sorted order, {self.fields}")
    if tuple(data.fields) != self.fields + EXTRA_FIELDS:
      raise ValueError(f"config.data.fields={tuple(data.fields)} must be "
                       f"{self.fields + EXTRA_FIELDS}")
    self.num_classes = len(data.class_names)
    if int(data.num_classes) != self.num_classes:
      raise ValueError(f"config.data.num_classes={data.num_classes} but config.data.class_names "
                       f"has {self.num_classes} names")
    self.weighting = config.loss.weighting
    if self.weighting not in LOSS_WEIGHTINGS:
      raise ValueError(f"config.loss.weighting={self.weighting!r}: expected one of "
                       f"{LOSS_WEIGHTINGS}")
    self.valence = bool(model.valence)
    self.model = MerFusion(
        structures=self.structures, fields=self.fields, num_classes=self.num_classes,
        embed=int(model.embed), hidden=int(model.hidden), widths=dict(model.widths),
        decision=model.decision, valence=self.valence,
        awl=self.valence and self.weighting == "awl", dropout=float(model.dropout),
        modality_dropout=float(model.modality_dropout), keep_one=bool(model.keep_one),
        attention=model.attention)

  def example_batch(self, batch_size: int):
    if not self.data_config.directory:
      self.prepare(lambda _: None)
    split = modality_arrays.load_split(modality_arrays.split_path(self.data_config,
                                                                  "train_split"))
    fields = split.select(self.fields)
    batch = {f: np.zeros((batch_size,) + v.shape[1:], np.float32) for f, v in fields.items()}
    return {**batch, "valence": np.zeros((batch_size,), np.float32),
            "labelled": np.ones((batch_size,), np.float32),
            "label": np.zeros((batch_size,), np.int32),
            "weight": np.ones((batch_size,), np.float32),
            "modality_mask": np.ones((batch_size, len(self.fields)), np.float32)}

  def loss(self, outputs, batch, task_state):
    del task_state
    weight = batch["weight"] * batch["labelled"]
    logits = outputs["emotion_logits"]  # [B, S', C]
    labels = jax.nn.one_hot(batch["label"], self.num_classes, dtype=logits.dtype)
    ce = -(labels[:, None] * jax.nn.log_softmax(logits)).sum(-1)  # [B, S']
    loss_e = _weighted_mean(ce, weight).mean()
    correct = (logits.mean(1).argmax(-1) == batch["label"]).astype(jnp.float32)
    aux = {"accuracy": _weighted_mean(correct, weight), "loss_emotion": loss_e}
    if not self.valence:
      return loss_e, aux
    loss_v = _weighted_mean(jnp.square(outputs["valence"] - batch["valence"][:, None]),
                            weight).mean()
    aux["loss_valence"] = loss_v
    if self.weighting == "awl":
      raw = outputs["awl_raw_sigmas"]
      aux.update({"awl_delta_emotion": jax.nn.softplus(raw[0]),
                  "awl_delta_valence": jax.nn.softplus(raw[1])})
      return losses.uncertainty_weighted_loss([loss_e, loss_v], raw, scales=(1.0, 0.5)), aux
    return loss_e + float(self.config.loss.valence_weight) * loss_v, aux

  def predictions(self, outputs):
    probs = jax.nn.softmax(outputs["emotion_logits"], axis=-1)  # [B, S', C]
    weights = fusion.entropy_weights_in_graph(jnp.swapaxes(probs, 0, 1)).T  # [B, S']
    out = {"emotion": jnp.einsum("bs,bsc->bc", weights, probs), "structure_emotion": probs}
    if self.valence:
      out["valence"] = (weights * outputs["valence"]).sum(1)
      out["structure_valence"] = outputs["valence"]
    return out

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return EmotionEvaluator(self.num_classes)
