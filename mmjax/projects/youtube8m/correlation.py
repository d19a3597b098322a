"""The audio-visual correlation tower of seed 001 (sections 3, 4.1, 5.1): a binary classifier of
(rgb, audio) pairs, trained on its own before the cross-modal models use it, frozen.

Pairs (section 4.1) are made inside each batch of videos, on the host (`pair_batch`): half of the
videos (a random half) keep their own audio (positive, y = 1); each other video's rgb is paired
with the audio of a video of the batch whose level-0 categories (taxonomy: its labels' level-0
ancestors) share none with its own (negative, y = 0). The choice is drawn from a generator
seeded by `config.seed` and the batch's contents, so a resumed run sees the same pairs.

Loss (eq. 1, with the negative class weighted as in Fig. 8 / 9):
  L = - sum_i w_i [y_i log p_i + lambda (1 - y_i) log(1 - p_i)] / sum_i w_i,
p_i = sigmoid(tower logit), lambda = config.correlation.negative_weight (the paper: 2),
w_i the example weight (0 for padding). Metrics: accuracy, FPR = FP / (FP + TN) (negatives judged
correlated) and FNR = FN / (FN + TP), at p >= 0.5.
"""

import hashlib
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import losses, metrics
from mmjax.projects.youtube8m.model import dequantize_frames
from mmjax.projects.youtube8m.task import Youtube8mTask
from mmjax.projects.youtube8m.tower import CorrelationTower
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit, register

PAIR_KEYS = ("rgb", "audio", "rgb_mask", "audio_mask", "correlated", "weight")


class _PairModel(nn.Module):
  """The tower applied to a pair batch (PAIR_KEYS)."""
  tower: CorrelationTower

  def __call__(self, batch, *, train: bool = False):
    rgb = dequantize_frames(batch["rgb"], batch["rgb_mask"])
    audio = dequantize_frames(batch["audio"], batch["audio_mask"])
    return self.tower(rgb, audio, batch["rgb_mask"], batch["audio_mask"], train=train)


class NoNegativeError(ValueError):
  """A batch in which no two videos have disjoint level-0 categories."""


def level0_categories(labels: np.ndarray, top: np.ndarray, num_categories: int) -> np.ndarray:
  """bool [B, K]: the level-0 categories of each video's labels (labels [B, C] multi-hot, top
  [C] the category of each class, -1 for none)."""
  known = top >= 0
  onehot = np.zeros((len(top), num_categories), np.float32)
  onehot[np.flatnonzero(known), top[known]] = 1.0
  return (labels @ onehot) > 0


def choose_partners(batch: Dict[str, np.ndarray], categories: np.ndarray, seed: int,
                    where: str = "") -> np.ndarray:
  """The audio partner of each video of a batch (module docstring): int64 [B], the video's own
  index for a positive pair, another video of disjoint level-0 categories for a negative.

  Args:
    batch: mask [B, T] and weight [B] (0: padding) of a batch of videos.
    categories: bool [B, K], `level0_categories` of the batch's labels.
    seed: the run's seed.
    where: what to name in errors (the taxonomy file and the batch size key).

  Raises:
    NoNegativeError: the batch has real videos but no two with disjoint level-0 categories.
  """
  real = (batch["weight"] > 0) & categories.any(axis=1)
  disjoint = ~(categories.astype(np.int32) @ categories.T.astype(np.int32)).astype(bool)
  candidates = disjoint & real[:, None] & real[None, :]
  if real.sum() > 1 and not candidates.any():
    raise NoNegativeError(f"no two videos of this batch ({int(real.sum())} with known categories)"
                          f" have different level-0 categories, so there is no negative pair; "
                          f"{where}")
  digest = hashlib.sha1(batch["mask"].tobytes() + categories.tobytes()
                        + batch["weight"].tobytes()).digest()
  rng = np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])
  size = len(real)
  order = rng.permutation(size)
  partner = np.arange(size)
  for i in np.sort(order[:size // 2]):
    options = np.flatnonzero(candidates[i])
    if len(options):
      partner[i] = rng.choice(options)
  return partner


def pair_batch(batch: Dict[str, np.ndarray], partner: np.ndarray) -> Dict[str, np.ndarray]:
  """The pair batch (PAIR_KEYS) of a batch of videos: rgb [B, T, D_v], audio [B, T, D_a],
  mask [B, T], weight [B], with the audio (and its mask) of `partner` [B] (`choose_partners`);
  correlated [B] is 1 where a video keeps its own audio."""
  return {"rgb": batch["rgb"], "audio": batch["audio"][partner], "rgb_mask": batch["mask"],
          "audio_mask": batch["mask"][partner],
          "correlated": (partner == np.arange(len(partner))).astype(np.float32),
          "weight": batch["weight"]}


class CorrelationMetrics:
  """Streaming accuracy, FPR and FNR of weighted binary predictions (threshold 0.5)."""

  def __init__(self):
    self._counts = np.zeros((2, 2))  # [true y, predicted y]

  def update(self, probabilities, labels, weight) -> None:
    predicted = (np.asarray(probabilities) >= 0.5).astype(np.int64)
    np.add.at(self._counts, (np.asarray(labels).astype(np.int64), predicted),
              np.asarray(weight, np.float64))

  def compute(self) -> Dict[str, float]:
    (tn, fp), (fn, tp) = self._counts
    total = self._counts.sum()
    ratio = lambda a, b: float(a / b) if b > 0 else 0.0
    return {"accuracy": ratio(tp + tn, total), "fpr": ratio(fp, fp + tn),
            "fnr": ratio(fn, fn + tp), "num_examples": int(round(total))}


class _Paired:
  """A dataset of video batches mapped to pair batches (grain map: the iterator's state is the
  video iterator's, so a restored iterator yields the same pairs)."""

  def __init__(self, dataset, pair):
    self._mapped = dataset.map(pair)
    self.skip_counter = getattr(dataset, "skip_counter", None)

  def __iter__(self):
    return iter(self._mapped)


@register("youtube8m_correlation")
class CorrelationTask(Youtube8mTask):
  """The correlation tower (module docstring) as a mmjax.tasks.Task.

  Batch: PAIR_KEYS (rgb [B, T, 1024], audio [B, T, 128], rgb_mask / audio_mask [B, T],
  correlated [B], weight [B]). Model output: logits [B]; predictions sigmoid [B].
  """

  evaluator_keys = ("correlated", "weight")

  def __init__(self, config):
    if config.data.level != "frame":
      raise ValueError(f"config.data.level={config.data.level!r}: the correlation tower pairs "
                       "frame sequences ('frame')")
    super().__init__(config)

  def build_model(self):
    return _PairModel(CorrelationTower(self.config.model.hidden, self.config.model.dropout_rate))

  def prepare(self, log=print) -> None:
    """Resolves the data (Youtube8mTask.prepare) and reads the taxonomy's level-0 categories
    (config.data.taxonomy_file, or the synthetic data's)."""
    super().prepare(log)
    if not self.taxonomy_file:
      raise ValueError("the correlation tower needs each class's level-0 category: set "
                       "config.data.taxonomy_file (a taxonomy CSV with a parent column, or the "
                       "YouTube-8M vocabulary.csv)")
    if not self.taxonomy.has_hierarchy:
      raise ValueError(f"{self.taxonomy_file}: the taxonomy has no parent column, so no level-0 "
                       "categories (config.data.taxonomy_file)")

  def partners(self, batch) -> np.ndarray:
    """`choose_partners` of a batch of videos (labels [B, C], mask, weight)."""
    categories = level0_categories(batch["labels"], self.taxonomy.top,
                                   len(self.taxonomy.categories))
    return choose_partners(batch, categories, self.config.seed,
                           where=f"taxonomy {self.taxonomy_file}; raise config.batch_size")

  def _pair(self, batch):
    return pair_batch(batch, self.partners(batch))

  def train_dataset(self, batch_size, seed, process_index, process_count):
    return _Paired(super().train_dataset(batch_size, seed, process_index, process_count),
                   self._pair)

  def eval_dataset(self, batch_size, process_index, process_count,
                   split: EvalSplit = DEFAULT_SPLIT):
    return _Paired(super().eval_dataset(batch_size, process_index, process_count, split=split),
                   self._pair)

  def example_batch(self, batch_size: int):
    video = super().example_batch(batch_size)
    return {"rgb": video["rgb"], "audio": video["audio"], "rgb_mask": video["mask"],
            "audio_mask": video["mask"], "correlated": np.ones((batch_size,), np.float32),
            "weight": video["weight"]}

  def loss(self, logits, batch, task_state=None):
    del task_state
    weight = batch["weight"]
    per_example = losses.weighted_binary_cross_entropy(
        logits, batch["correlated"], negative_weight=self.config.correlation.negative_weight)
    loss = jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(weight), 1.0)
    return loss, {}

  def predictions(self, logits):
    return jax.nn.sigmoid(logits)

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT):
    del split
    return metrics.LabelsEvaluator(CorrelationMetrics(), "correlated")
