"""Modality dropout (seed 003, EmoVCLIP section 3.3): before fusion, each modality's embedding is
replaced by zeros, independently per example, with probability p during training; identity at
evaluation. As in the paper there is no 1 / (1 - p) rescaling: a kept embedding is unchanged, so
a model trained this way sees at test time exactly what it saw for a missing modality in
training (zeros).
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["keep_mask", "modality_dropout"]


def keep_mask(rng: jax.Array, batch_size: int, num_modalities: int, p: float,
              keep_one: bool = False) -> jnp.ndarray:
  """float32 [B, M]: 1 keeps modality m of example b, 0 drops it; each entry is 0 with
  probability p. With keep_one, an example that would lose every modality keeps one, chosen
  uniformly (so the effective drop rate is a little below p: p - p^M / M per modality)."""
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"modality dropout: p must be in [0, 1], got {p}")
  drop_key, pick_key = jax.random.split(rng)
  keep = jax.random.bernoulli(drop_key, 1.0 - p, (batch_size, num_modalities))
  if keep_one:
    rescue = jax.nn.one_hot(jax.random.randint(pick_key, (batch_size,), 0, num_modalities),
                            num_modalities, dtype=bool)
    keep = jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, rescue)
  return keep.astype(jnp.float32)


def modality_dropout(embeddings: Mapping[str, jnp.ndarray], rng: Optional[jax.Array], *,
                     p: float, train: bool, keep_one: bool = False,
                     present: Optional[jnp.ndarray] = None
                     ) -> Tuple[dict, jnp.ndarray]:
  """Zeroes modalities per example (module docstring).

  Args:
    embeddings: {modality: [B, ...]} (all with the same B), in a fixed order (sorted names).
    rng: the step's dropout key (required when train and p > 0); the same key drops the same
      modalities.
    p: drop probability in [0, 1].
    train: False is the identity (except `present`).
    keep_one: never drop every modality of an example (see `keep_mask`).
    present: optional [B, M] float mask of modalities that exist (0 = missing at test time);
      multiplied in as well, train or not.

  Returns:
    ({modality: embedding * mask[:, m]}, mask float32 [B, M]) with modalities in sorted order.
  """
  names = sorted(embeddings)
  if not names:
    raise ValueError("modality dropout: no embeddings")
  batch = {name: embeddings[name].shape[0] for name in names}
  if len(set(batch.values())) != 1:
    raise ValueError(f"modality dropout: embeddings disagree on the batch size: {batch}")
  b = batch[names[0]]
  mask = jnp.ones((b, len(names)), jnp.float32)
  if train and p > 0:
    if rng is None:
      raise ValueError("modality dropout: training with p > 0 needs an rng")
    mask = keep_mask(rng, b, len(names), p, keep_one)
  if present is not None:
    if present.shape != (b, len(names)):
      raise ValueError(f"modality dropout: present has shape {present.shape}, expected "
                       f"{(b, len(names))} for modalities {names}")
    mask = mask * present.astype(jnp.float32)
  dropped = {}
  for m, name in enumerate(names):
    x = embeddings[name]
    dropped[name] = x * mask[:, m].reshape((b,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return dropped, mask
