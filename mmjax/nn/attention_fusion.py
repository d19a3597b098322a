"""Attention fusion of utterance-level features and MER2023's joint emotion/valence decoder.

Attention-guided feature gathering (AFG; MERTools' attention fusion baseline, used by seed 003's
fusion network and, per structure, by seed 004's hierarchical system), for inputs x_m [B, D_m]:

  h_m  = relu(W_m1 dropout(relu(W_m0 x_m)))              [B, H]   per-input MLP encoder
  h_m <- modality dropout (seed 003 eq. 2; identity at evaluation), x modality_mask
  a    = W_a1 relu(W_a0 [h_1; ...; h_M])                  [B, M]   attention scores
  a   <- softmax_m(a)  (normalize='softmax'; 'none' keeps the raw scores, as MERTools does)
  h^   = sum_m a_m h_m                                    [B, H]

The paper that defines AFG for seed 004 (arXiv 2309.07925) is not available to us; this is
MERTools' attention fusion, which seed 004 cites through [22] and compares against. Every
encoder ends at the same H (the sum needs aligned nodes), so structured pruning
(mmjax.transforms.pruning) may remove nodes of the hidden layers '<...>_0' only: see
`attention_consumers`.

Joint decoder (seed 004 eq. 1-4), on a fused representation h^ [B, H]:

  e~  = W_e h^ + b_e,  e^ = softmax(e~)                   (1)   [B, C]
  v~h = W_hv h^ + b_hv                                    (3)   [B, 1]
  v~e = tanh(W_ev e^ + b_ev)                              (4)   [B, 1]   from the posterior
  v^  = W_vv [v~h; v~e] + b_vv                            (2)   [B]

Layers are Dense modules named '<prefix><name>' inside the calling module, so a pruned model is
the same module with smaller widths.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.transforms.modality_dropout import modality_dropout

__all__ = ["NORMALIZATIONS", "attention_consumers", "attention_gather", "joint_decoder"]

NORMALIZATIONS = ("softmax", "none")


def _dense(name: str, width: int, x: jnp.ndarray) -> jnp.ndarray:
  return nn.Dense(int(width), name=name)(x)


def attention_gather(inputs: Mapping[str, jnp.ndarray], *, prefix: str, embed: int,
                     widths: Mapping[str, int], default_width: int, train: bool,
                     dropout_rate: float = 0.0, normalize: str = "softmax",
                     encode: bool = True, modality_dropout_p: float = 0.0, keep_one: bool = True,
                     present: Optional[jnp.ndarray] = None,
                     dropout_rng: Optional[jax.Array] = None
                     ) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """AFG over `inputs` {name: [B, D]} (module docstring), called inside a compact module.

  Layer names: '<prefix><name>_0' (width widths.get(name, default_width)), '<prefix><name>_1'
  (width `embed`), '<prefix>att_0', '<prefix>att_1' (M). With encode=False the inputs are
  already [B, embed] (no encoders). `present` [B, M] marks missing inputs (0 = zeroed), in the
  sorted order of the names.

  Returns:
    (fused [B, embed], attention weights [B, M]).
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"config.model.attention={normalize!r}: expected one of {NORMALIZATIONS}")
  names = sorted(inputs)
  width = lambda name: widths.get(f"{prefix}{name}", default_width)  # noqa: E731
  embeddings: Dict[str, jnp.ndarray] = {}
  for name in names:
    x = inputs[name]
    if x.ndim != 2:
      raise ValueError(f"attention fusion input {name!r} has shape {x.shape}; expected [B, D] "
                       "(pool frame-level features: data.mertools.pooling 'meanvar' or 'mean')")
    if encode:
      x = nn.relu(_dense(f"{prefix}{name}_0", width(f"{name}_0"), x))
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
      x = nn.relu(_dense(f"{prefix}{name}_1", embed, x))
    embeddings[name] = x
  embeddings, _ = modality_dropout(embeddings, dropout_rng if train and modality_dropout_p > 0
                                   else None, p=modality_dropout_p, train=train,
                                   keep_one=keep_one, present=present)
  stacked = jnp.stack([embeddings[n] for n in names], axis=1)  # [B, M, H]
  scores = nn.relu(_dense(f"{prefix}att_0", width("att_0"), stacked.reshape(len(stacked), -1)))
  scores = _dense(f"{prefix}att_1", len(names), scores)
  if normalize == "softmax":
    scores = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bm,bmh->bh", scores, stacked), scores


def joint_decoder(fused: jnp.ndarray, *, prefix: str, num_classes: int,
                  valence: bool = True) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
  """Seed 004 eq. 1-4 (module docstring): (emotion logits e~ [B, C], valence v^ [B] or None
  when valence=False, i.e. the emotion head alone)."""
  logits = _dense(f"{prefix}emotion", num_classes, fused)
  if not valence:
    return logits, None
  from_state = _dense(f"{prefix}valence_h", 1, fused)
  from_emotion = jnp.tanh(_dense(f"{prefix}valence_e", 1, jax.nn.softmax(logits, axis=-1)))
  value = _dense(f"{prefix}valence", 1, jnp.concatenate([from_state, from_emotion], axis=-1))
  return logits, value[:, 0]


def attention_consumers(prefix: str, names: Sequence[str], encode: bool = True) -> dict:
  """{prunable layer: [(consumer, row offset)]} of one `attention_gather` for
  mmjax.transforms.pruning.compact: each encoder's hidden layer '<name>_0' feeds '<name>_1', the
  attention hidden layer 'att_0' feeds 'att_1'. The '_1' layers (summed over inputs) are not
  prunable: give pruning prunable=r'.*_0/kernel'."""
  out = {f"{prefix}att_0": [(f"{prefix}att_1", 0)]}
  if encode:
    out.update({f"{prefix}{n}_0": [(f"{prefix}{n}_1", 0)] for n in names})
  return out
