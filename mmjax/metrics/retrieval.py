"""Image-text retrieval recall over a whole evaluation set.

Image i ranks all texts by cosine similarity; recall@k (image->text) is the fraction of images
with a correct text among the top k. A text is correct for an image when its token ids equal
the image's own caption's (so duplicate captions, common in practice, all count); text->image
likewise. Rows with weight 0 (evaluation padding) are ignored.
"""

from typing import Dict, Sequence

import numpy as np


def recall_at_k(image_embeds: np.ndarray, text_embeds: np.ndarray, caption_ids: np.ndarray,
                ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
  """image_embeds, text_embeds: [N, E] (pair i = image i, text i); caption_ids: int [N], equal
  for identical captions. Returns {'i2t_r@k', 't2i_r@k'} for every k."""
  def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  similarity = unit(np.asarray(image_embeds, np.float64)) @ unit(
      np.asarray(text_embeds, np.float64)).T
  same = caption_ids[:, None] == caption_ids[None, :]
  out = {}
  for name, scores in (("i2t", similarity), ("t2i", similarity.T)):
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(same, order, axis=1)
    for k in ks:
      out[f"{name}_r@{k}"] = float(hits[:, :k].any(axis=1).mean())
  return out


class RetrievalMetrics:
  """Accumulates batches of (image_embeds, text_embeds, input_ids, weight)."""

  def __init__(self, ks: Sequence[int] = (1, 5)):
    self.ks = tuple(ks)
    self._images, self._texts, self._ids = [], [], []

  def update(self, image_embeds, text_embeds, input_ids, weight) -> None:
    keep = np.asarray(weight) > 0
    self._images.append(np.asarray(image_embeds)[keep])
    self._texts.append(np.asarray(text_embeds)[keep])
    self._ids.append(np.asarray(input_ids)[keep])

  def compute(self) -> Dict[str, float]:
    if not self._images or not sum(len(x) for x in self._images):
      return {"num_examples": 0}
    ids = np.concatenate(self._ids)
    _, caption_ids = np.unique(ids, axis=0, return_inverse=True)
    out = recall_at_k(np.concatenate(self._images), np.concatenate(self._texts),
                      caption_ids.reshape(-1), self.ks)
    out["num_examples"] = len(ids)
    return out
