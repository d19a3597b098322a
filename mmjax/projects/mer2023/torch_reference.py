"""A plain PyTorch reference of the MER2023 fusion model's train step, for the speed comparison
of `launch/benchmark.py --suite=mer` (a benchmark reference, not library code).

torch (eager, float32, CPU) is imported inside the functions, never at import time: it is a
test/bench extra (`pip install mmjax[test]`), not a dependency of mmjax.

The model is written the way a PyTorch user would write seed 004's system with the layer sizes
of `mmjax.models.mer_fusion.MerFusion` (decision 'entropy', valence, AWL), nn.Linear and
nn.Sequential throughout:

  per structure s, per input f of s (encoders are not shared between structures):
    h_f = ReLU(Linear(H_e)(Dropout(ReLU(Linear(H)(x_f)))))           [B, H_e]
    a   = softmax(Linear(M)(ReLU(Linear(H)([h_1; ...; h_M]))))          [B, M]
    h^  = sum_m a_m h_m                                                 [B, H_e]
    joint decoder (eq. 1-4): e~ = Linear(C)(h^), v^ = Linear(1)([Linear(1)(h^);
      tanh(Linear(1)(softmax(e~)))])
  loss (eq. 9): L_e / d1^2 + L_v / (2 d2^2) + log(1 + d1) + log(1 + d2), d = softplus(raw) +
    1e-6, with L_e the cross-entropy and L_v the MSE, each averaged over examples and
    structures (every example labelled, weight 1: the benchmark's batches)

with H = config.model.hidden, H_e = config.model.embed. Same parameter count as the Flax model;
torch's default initialisation. The entropy fusion (eq. 5-7) is only in the predictions, so not
in the train step. The optimizer: torch.optim.Adam with config.optimizer's learning rate and
optax.adam's defaults (betas (0.9, 0.999), eps 1e-8).
"""

from __future__ import annotations

import functools
import types
from typing import Any, Mapping, Sequence

import numpy as np

from mmjax import benchmarking
from mmjax.projects.youtube8m.torch_reference import available_cores


@functools.lru_cache(maxsize=None)
def torch_modules() -> types.SimpleNamespace:
  """The torch pieces of the reference (torch is imported here, once): AttentionFusion,
  JointDecoder, MerFusionNet and awl_loss (docstrings below)."""
  # pylint: disable=import-outside-toplevel
  import torch
  import torch.nn.functional as F
  from torch import nn

  class AttentionFusion(nn.Module):
    """AFG over the inputs `dims` {name: D}: batch {name: [B, D], ...} -> [B, embed]."""

    def __init__(self, dims: Mapping[str, int], hidden: int, embed: int, dropout: float):
      super().__init__()
      self.names = sorted(dims)
      self.encoders = nn.ModuleDict({name: nn.Sequential(
          nn.Linear(dims[name], hidden), nn.ReLU(), nn.Dropout(dropout),
          nn.Linear(hidden, embed), nn.ReLU()) for name in self.names})
      self.attention = nn.Sequential(nn.Linear(len(self.names) * embed, hidden), nn.ReLU(),
                                     nn.Linear(hidden, len(self.names)))

    def forward(self, batch):
      stacked = torch.stack([self.encoders[n](batch[n]) for n in self.names], dim=1)  # [B, M, H]
      scores = torch.softmax(self.attention(stacked.flatten(1)), dim=-1)
      return torch.einsum("bm,bmh->bh", scores, stacked)

  class JointDecoder(nn.Module):
    """Eq. 1-4: h^ [B, embed] -> (emotion logits [B, C], valence [B])."""

    def __init__(self, embed: int, num_classes: int):
      super().__init__()
      self.emotion = nn.Linear(embed, num_classes)
      self.valence_h = nn.Linear(embed, 1)
      self.valence_e = nn.Linear(num_classes, 1)
      self.valence = nn.Linear(2, 1)

    def forward(self, fused):
      logits = self.emotion(fused)
      from_emotion = torch.tanh(self.valence_e(torch.softmax(logits, dim=-1)))
      return logits, self.valence(torch.cat([self.valence_h(fused), from_emotion], -1))[:, 0]

  class MerFusionNet(nn.Module):
    """One AttentionFusion + JointDecoder per structure, and AWL's two raw sigmas: batch ->
    (emotion logits [B, S, C], valence [B, S])."""

    def __init__(self, structures: Sequence[Sequence[str]], dims: Mapping[str, int], *,
                 hidden: int, embed: int, num_classes: int, dropout: float):
      super().__init__()
      self.fusions = nn.ModuleList(
          AttentionFusion({f: dims[f] for f in s}, hidden, embed, dropout) for s in structures)
      self.decoders = nn.ModuleList(JointDecoder(embed, num_classes) for _ in structures)
      self.awl_raw_sigmas = nn.Parameter(torch.zeros(2))

    def forward(self, batch):
      outputs = [decode(fuse(batch)) for fuse, decode in zip(self.fusions, self.decoders)]
      return (torch.stack([o[0] for o in outputs], 1), torch.stack([o[1] for o in outputs], 1))

  def awl_loss(logits, valence, label, target, raw_sigmas):
    """Eq. 9 over the mean CE of logits [B, S, C] against label [B] and the mean squared error
    of valence [B, S] against target [B]."""
    loss_e = F.cross_entropy(logits.flatten(0, 1), label.repeat_interleave(logits.shape[1]))
    loss_v = F.mse_loss(valence, target[:, None].expand_as(valence))
    sigmas = F.softplus(raw_sigmas) + 1e-6
    return (loss_e / sigmas[0] ** 2 + 0.5 * loss_v / sigmas[1] ** 2
            + torch.log1p(sigmas).sum())

  return types.SimpleNamespace(AttentionFusion=AttentionFusion, JointDecoder=JointDecoder,
                               MerFusionNet=MerFusionNet, awl_loss=awl_loss)


def build_torch_model(config, dims: Mapping[str, int]):
  """The torch MerFusionNet of config.model's structures, hidden, embed and dropout and
  config.data's classes, with the feature sizes `dims` {field: D}.

  Raises ValueError for a config this reference does not implement (decision 'attention',
  valence off, loss weighting 'sum', modality dropout, pruned widths).
  """
  m = config.model
  unsupported = {"model.decision": m.decision != "entropy", "model.valence": not m.valence,
                 "loss.weighting": config.loss.weighting != "awl",
                 "model.modality_dropout": m.modality_dropout > 0, "model.widths": bool(m.widths),
                 "model.attention": m.attention != "softmax"}
  bad = [key for key, flag in unsupported.items() if flag]
  if bad:
    raise ValueError(f"torch reference: config keys {bad} differ from MER2023's default "
                     "(configs/mer2023.py)")
  return torch_modules().MerFusionNet(
      m.structures, dims, hidden=int(m.hidden), embed=int(m.embed),
      num_classes=int(config.data.num_classes), dropout=float(m.dropout))


def torch_train_step_benchmark(config, dims: Mapping[str, int], make_batch, *, batch_size: int,
                               steps: int, warmup: int = 1, num_threads: int | None = None,
                               num_batches: int = 2) -> dict[str, Any]:
  """Times the eager float32 torch train step of `build_torch_model(config, dims)` on the CPU.

  One step: zero_grad, forward (train mode: dropout), `awl_loss`, backward, Adam step (module
  docstring). `num_batches` batches from `make_batch(batch_size, rng)` (numpy, the JAX
  benchmark's format: {field: [B, D], 'label': [B], 'valence': [B], ...}; rng seeded by
  config.seed) are cycled. Timed as `mmjax.benchmarking.time_steps` (the first step, `warmup`
  untimed steps, then `steps` steps each timed on its own: torch CPU ops are synchronous) on
  `num_threads` intra-op threads (default: the cores available, as XLA's CPU client uses; the
  previous count is restored).

  Returns:
    {'batch_size', 'params', 'first_step_s', 'step_s' (mean), 'step_min_s', 'examples_per_s'
    (batch_size / step_s), 'final_loss' (of the last timed step, before its update),
    'torch_version', 'num_threads'}.
  """
  import torch  # pylint: disable=import-outside-toplevel
  threads = int(num_threads or available_cores())
  previous_threads = torch.get_num_threads()
  torch.set_num_threads(threads)
  try:
    torch.manual_seed(int(config.seed))
    model = build_torch_model(config, dims).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.optimizer.learning_rate),
                                 betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch_modules().awl_loss
    rng = np.random.default_rng(config.seed)
    batches = []
    for _ in range(max(1, num_batches)):
      batch = {k: torch.from_numpy(v) for k, v in make_batch(batch_size, rng).items()}
      batch["label"] = batch["label"].long()
      batches.append(batch)

    def step(carry, batch):
      optimizer.zero_grad(set_to_none=True)
      logits, valence = model(batch)
      loss = loss_fn(logits, valence, batch["label"], batch["valence"], model.awl_raw_sigmas)
      loss.backward()
      optimizer.step()
      return carry, loss.detach()

    _, loss, first_s, times = benchmarking.time_steps(step, None, batches, steps=steps,
                                                      warmup=warmup)
  finally:
    torch.set_num_threads(previous_threads)
  step_s = float(np.mean(times))
  return {"batch_size": int(batch_size),
          "params": int(sum(p.numel() for p in model.parameters())), "first_step_s": first_s,
          "step_s": step_s, "step_min_s": float(np.min(times)),
          "examples_per_s": batch_size / step_s, "final_loss": float(loss),
          "torch_version": torch.__version__, "num_threads": threads}
