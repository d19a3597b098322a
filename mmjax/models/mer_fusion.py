"""The MER fusion model: S fusion structures over utterance-level features, each an attention
fusion (AFG, mmjax.nn.attention_fusion) of its inputs followed by a decoder, and a decision
over the structures.

  structure i (inputs F_i, e.g. {hubert-L18, manet, resnet}):
      h^_i = AFG_i({x_f : f in F_i})                                   [B, H]
  decision 'entropy' (seed 004, EnF): one joint decoder per structure (eq. 1-4),
      (e~_i, v^_i) = Dec_i(h^_i); the task fuses the posteriors softmax(e~_i) and v^_i with the
      per-example entropy weights of eq. 5-7 (mmjax.fusion.entropy_weights);
  decision 'attention' (seed 004's baseline, its authors' former system): a second attention
      over the structures' representations, h^ = sum_i a_i h^_i (a = softmax(W_1 relu(W_0
      [h^_1; ...; h^_S]))), then one joint decoder;
  one structure (seed 003's fusion network over audio, image, text and video features, with
      modality dropout before the attention) is the same with S = 1.

Outputs: {'emotion_logits': [B, S', C], 'valence': [B, S'] (with valence=True), 'attention':
{structure: [B, M_i]}, 'awl_raw_sigmas': [2] (the uncertainty weights of eq. 9, with awl=True)}
where S' = S for 'entropy' and 1 for 'attention'.

Layer names (config.model.widths keys, what pruning shrinks): with S > 1 structure i's layers
are prefixed 's<i>_' (e.g. 's0_hubert18_0'); the decision attention's are 'top_att_0/1';
decoders are '<prefix>emotion', '<prefix>valence_h', '<prefix>valence_e', '<prefix>valence'.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.attention_fusion import attention_consumers, attention_gather, joint_decoder

__all__ = ["DECISIONS", "MerFusion", "consumers", "structure_prefixes"]

DECISIONS = ("entropy", "attention")


def structure_prefixes(num_structures: int) -> list:
  """Layer-name prefix of every structure: '' for one structure, 's<i>_' for several."""
  return [""] if num_structures == 1 else [f"s{i}_" for i in range(num_structures)]


class MerFusion(nn.Module):
  """Module docstring.

  Attributes:
    structures: S tuples of input field names (batch keys, each [B, D_f]).
    fields: every field the batch carries, in the order of batch['modality_mask'] (sorted).
    num_classes: C.
    embed: H, the width every encoder ends at.
    hidden: default width of the prunable hidden layers (encoders' '_0', attentions' 'att_0').
    widths: {layer name: width} overriding `hidden` (a pruned model).
    decision: 'entropy' or 'attention' (ignored for S = 1).
    valence: predict valence with the joint decoder (eq. 2-4); False = emotion head only.
    awl: carry the two uncertainty weights of eq. 9 as parameters.
    dropout: dropout rate after the encoders' hidden layers.
    modality_dropout: p of seed 003 eq. 2 (each input embedding zeroed per example).
    keep_one: never drop every input of an example.
    attention: 'softmax' or 'none' (raw scores, as MERTools).
  """

  structures: Sequence[Sequence[str]]
  fields: Sequence[str]
  num_classes: int = 6
  embed: int = 64
  hidden: int = 128
  widths: Mapping[str, int] = None
  decision: str = "entropy"
  valence: bool = True
  awl: bool = False
  dropout: float = 0.0
  modality_dropout: float = 0.0
  keep_one: bool = True
  attention: str = "softmax"

  @nn.compact
  def __call__(self, batch, train: bool = False):
    if self.decision not in DECISIONS:
      raise ValueError(f"config.model.decision={self.decision!r}: expected one of {DECISIONS}")
    fields = list(self.fields)
    unknown = sorted({f for s in self.structures for f in s} - set(fields))
    if unknown or not self.structures:
      raise ValueError(f"config.model.structures name fields {unknown} that are not in "
                       f"config.data.fields {fields}")
    widths = dict(self.widths or {})
    mask = batch.get("modality_mask")
    rng = (self.make_rng("dropout") if train and self.modality_dropout > 0 else None)
    reps, attention = [], {}
    prefixes = structure_prefixes(len(self.structures))
    for prefix, inputs in zip(prefixes, self.structures):
      inputs = sorted(inputs)
      present = None if mask is None else mask[:, [fields.index(f) for f in inputs]]
      fused, scores = attention_gather(
          {f: batch[f] for f in inputs}, prefix=prefix, embed=self.embed, widths=widths,
          default_width=self.hidden, train=train, dropout_rate=self.dropout,
          normalize=self.attention, modality_dropout_p=self.modality_dropout,
          keep_one=self.keep_one, present=present, dropout_rng=rng)
      reps.append(fused)
      attention[prefix or "fusion"] = scores
    if len(reps) > 1 and self.decision == "attention":
      fused, scores = attention_gather({f"s{i}": r for i, r in enumerate(reps)}, prefix="top_",
                                       embed=self.embed, widths=widths,
                                       default_width=self.hidden, train=train, encode=False,
                                       normalize=self.attention)
      attention["top"] = scores
      reps, prefixes = [fused], [""]
    decoded = [joint_decoder(r, prefix=p, num_classes=self.num_classes, valence=self.valence)
               for p, r in zip(prefixes, reps)]
    out = {"emotion_logits": jnp.stack([d[0] for d in decoded], axis=1), "attention": attention}
    if self.valence:
      out["valence"] = jnp.stack([d[1] for d in decoded], axis=1)
    if self.awl:
      out["awl_raw_sigmas"] = self.param("awl_raw_sigmas", nn.initializers.zeros, (2,))
    return out


def consumers(structures: Sequence[Sequence[str]], decision: str = "entropy") -> dict:
  """{prunable layer: [(consumer, row offset)]} of the whole model (for PNAO's `compact`;
  mmjax.nn.attention_fusion.attention_consumers per attention)."""
  out = {}
  for prefix, inputs in zip(structure_prefixes(len(structures)), structures):
    out.update(attention_consumers(prefix, sorted(inputs)))
  if len(structures) > 1 and decision == "attention":
    out.update(attention_consumers("top_", [], encode=False))
  return out
