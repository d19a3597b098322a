"""A plain PyTorch reference of the late-fusion YouTube-8M models, for speed comparisons
(`launch/benchmark.py`'s comparison mode), and the machine's measured float32 matmul peak.

torch (eager, float32, CPU) is imported inside the functions that need it, never at import time:
it is a test/bench extra (`pip install mmjax[test]`), not a dependency of mmjax. `jax_matmul_tflops`
needs no torch.

The torch models (`torch_modules`, built from a config by `build_torch_model`) are written the way
a PyTorch user would write them: nn.Linear, nn.LayerNorm, nn.BatchNorm1d, nn.GELU,
F.scaled_dot_product_attention, einsum for the NetVLAD aggregation. They compute what
`mmjax.projects.youtube8m.model.VideoClassifier` (fusion 'late') computes, with the same
parameters under the same names (`load_flax_variables` copies a Flax model's variables in;
tests/test_torch_reference.py checks every shape and the logits, loss and gradients):

  Flax (params / batch_stats)                 torch (state_dict)
  '<a>/<b>/kernel' [in, out] (nn.Dense)       '<a>.<b>.weight' [out, in] (nn.Linear, transposed)
  '<a>/<b>/bias' (nn.Dense, LayerNorm, BN)    '<a>.<b>.bias'
  '<a>/<b>/scale' (LayerNorm, BatchNorm)      '<a>.<b>.weight'
  batch_stats '<a>/<b>/mean', '.../var'       '<a>.<b>.running_mean', '.../running_var'
  '<tower>/position_embedding' [T, d_model]   '<tower>.position_embedding' (nn.Parameter)
  '<tower>/netvlad/centers' [K, D]            '<tower>.netvlad.centers' (nn.Parameter)

with the module paths of the Flax model, e.g. (tower = 'rgb_tower', 'audio_tower'):
  Transformer tower: input_projection, position_embedding, block_<i>/{layer_norm1,
    self_attn/{q_proj,k_proj,v_proj,out_proj}, layer_norm2, mlp/{fc1,fc2}}, final_ln;
  NetVLAD tower: netvlad/{assignment (no bias), assignment_bn, centers}, netvlad_hidden (no bias),
    hidden_bn, context_gating/{gate (no bias), gate_bn};
  head: fusion, classifier.
torch's BatchNorm1d also keeps a `num_batches_tracked` buffer (no Flax counterpart).

Differences that do not change the computation's cost: torch's default initialisation (except the
position table N(0, 0.02^2), the centers N(0, 1/D) and the classifier bias -log(C - 1), as in
Flax); BatchNorm's running variance uses the unbiased batch variance (torch) instead of the biased
one (Flax); dropout draws different masks. Padded frames: the assignment batch norm takes its
statistics over the real frames only (boolean indexing), attention masks padded keys, pooling is
the masked mean, as in Flax (padded query rows attend differently, but never reach the output).
"""

from __future__ import annotations

import functools
import math
import os
import time
import types
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import benchmarking
from mmjax.data import youtube8m
from mmjax.projects.youtube8m.benchmark import parse_model, random_batch

# Units of the keys of this module's results (None: a setting), to merge into a suite's UNITS.
UNITS: dict[str, str | None] = {
    "torch_num_threads": None, "matmul_n": None, "torch_flops_per_step": "FLOP",
    "jax_matmul_tflops_per_s": "TFLOP/s", "torch_matmul_tflops_per_s": "TFLOP/s",
    "jax_examples_per_s": "examples/s", "torch_examples_per_s": "examples/s",
    "jax_over_torch": "1", "jax_tflops_per_s": "TFLOP/s", "torch_tflops_per_s": "TFLOP/s",
    "jax_peak_fraction": "1", "torch_peak_fraction": "1", "twice_torch_peak_fraction": "1",
}
FAMILIES = ("transformer", "netvlad")


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# -------------------------------------------------------------------------------------------
# The models.


@functools.lru_cache(maxsize=None)
def torch_modules() -> types.SimpleNamespace:
  """The torch nn.Module classes of the reference (torch is imported here, once).

  Returns a namespace with dequantize_frames, masked_mean, ContextGating, NetVLAD,
  NetVLADTower, SelfAttention, Mlp, EncoderBlock, TransformerTower and LateFusionClassifier
  (docstrings below).
  """
  # pylint: disable=import-outside-toplevel
  import torch
  import torch.nn.functional as F
  from torch import nn

  def dequantize_frames(frames, mask):
    """uint8 [B, T, D] -> float32 q * 4/255 + 4/512 - 2 at real frames, 0 at padding (the
    starter code's dequantization, inside the step as in mmjax's models); float frames pass
    through."""
    if frames.dtype != torch.uint8:
      return frames
    return (frames.float() * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)) * mask.unsqueeze(-1)

  def masked_mean(x, mask):
    """sum_t m_t x_t / max(sum_t m_t, 1): x [B, T, D], mask [B, T] -> [B, D]."""
    mask = mask.unsqueeze(-1)
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)

  class ContextGating(nn.Module):
    """y = h * sigmoid(BN(h W)): [B, dim] -> [B, dim]."""

    def __init__(self, dim: int):
      super().__init__()
      self.gate = nn.Linear(dim, dim, bias=False)
      self.gate_bn = nn.BatchNorm1d(dim, momentum=0.01)

    def forward(self, h):
      return h * torch.sigmoid(self.gate_bn(self.gate(h)))

  class NetVLAD(nn.Module):
    """a = softmax(BN(x W)) (BN statistics over real frames), zero at padding;
    vlad_k = sum_t a_tk x_t - (sum_t a_tk) c_k, L2-normalised per cluster, flattened,
    L2-normalised: x [B, T, D], mask [B, T] -> [B, K * D]."""

    def __init__(self, dim: int, num_clusters: int):
      super().__init__()
      self.assignment = nn.Linear(dim, num_clusters, bias=False)
      self.assignment_bn = nn.BatchNorm1d(num_clusters, momentum=0.01)
      self.centers = nn.Parameter(torch.randn(num_clusters, dim) * dim ** -0.5)

    def forward(self, x, mask):
      logits = self.assignment(x)  # [B, T, K]
      real = mask > 0
      normed = logits.new_zeros(logits.shape)
      normed[real] = self.assignment_bn(logits[real])  # [frames in the batch, K]
      assign = torch.softmax(normed, dim=-1) * mask.unsqueeze(-1)
      vlad = torch.einsum("btk,btd->bkd", assign, x) - assign.sum(1).unsqueeze(-1) * self.centers
      vlad = F.normalize(vlad, dim=-1, eps=1e-6)
      return F.normalize(vlad.flatten(1), dim=-1, eps=1e-6)

  class NetVLADTower(nn.Module):
    """NetVLAD -> Linear (no bias) -> BN -> ReLU -> context gating (WILLOW):
    [B, T, D], [B, T] -> [B, hidden_size]."""

    def __init__(self, dim: int, num_clusters: int, hidden_size: int, context_gating: bool):
      super().__init__()
      self.netvlad = NetVLAD(dim, num_clusters)
      self.netvlad_hidden = nn.Linear(num_clusters * dim, hidden_size, bias=False)
      self.hidden_bn = nn.BatchNorm1d(hidden_size, momentum=0.01)
      self.context_gating = ContextGating(hidden_size) if context_gating else nn.Identity()

    def forward(self, x, mask):
      h = torch.relu(self.hidden_bn(self.netvlad_hidden(self.netvlad(x, mask))))
      return self.context_gating(h)

  class SelfAttention(nn.Module):
    """Multi-head self-attention, q/k/v/out projections with bias: x [B, T, width], keep
    [B, 1, 1, T] bool (True = attend to that key) -> [B, T, width]."""

    def __init__(self, width: int, num_heads: int):
      super().__init__()
      self.num_heads = num_heads
      self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
          nn.Linear(width, width) for _ in range(4))

    def forward(self, x, keep):
      batch, frames, width = x.shape

      def heads(y):  # [B, T, width] -> [B, H, T, width / H]
        return y.view(batch, frames, self.num_heads, -1).transpose(1, 2)

      out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)),
                                           heads(self.v_proj(x)), attn_mask=keep)
      return self.out_proj(out.transpose(1, 2).reshape(batch, frames, width))

  class Mlp(nn.Module):
    """fc2(GELU_tanh(fc1(x))): [..., width] -> [..., mlp_dim] -> [..., width]."""

    def __init__(self, width: int, mlp_dim: int):
      super().__init__()
      self.fc1 = nn.Linear(width, mlp_dim)
      self.act = nn.GELU(approximate="tanh")
      self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x):
      return self.fc2(self.act(self.fc1(x)))

  class EncoderBlock(nn.Module):
    """Pre-LN block: x + Dropout(attn(LN(x))), then x + Dropout(mlp(LN(x))) (LayerNorm eps
    1e-6): x [B, T, width], keep [B, 1, 1, T] -> [B, T, width]."""

    def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout_rate: float):
      super().__init__()
      self.layer_norm1 = nn.LayerNorm(width, eps=1e-6)
      self.self_attn = SelfAttention(width, num_heads)
      self.layer_norm2 = nn.LayerNorm(width, eps=1e-6)
      self.mlp = Mlp(width, mlp_dim)
      self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x, keep):
      x = x + self.dropout(self.self_attn(self.layer_norm1(x), keep))
      return x + self.dropout(self.mlp(self.layer_norm2(x)))

  class TransformerTower(nn.Module):
    """Linear(d_model) + learned positions -> Dropout -> blocks 'block_<i>' -> LayerNorm ->
    masked mean: x [B, T, dim], mask [B, T] -> [B, d_model] (T <= max_frames)."""

    def __init__(self, dim: int, d_model: int, num_heads: int, num_layers: int, mlp_dim: int,
                 max_frames: int, dropout_rate: float):
      super().__init__()
      self.input_projection = nn.Linear(dim, d_model)
      self.position_embedding = nn.Parameter(torch.randn(max_frames, d_model) * 0.02)
      self.dropout = nn.Dropout(dropout_rate)
      self.num_layers = num_layers
      for i in range(num_layers):
        self.add_module(f"block_{i}", EncoderBlock(d_model, num_heads, mlp_dim, dropout_rate))
      self.final_ln = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x, mask):
      x = self.dropout(self.input_projection(x) + self.position_embedding[:x.shape[1]])
      keep = (mask > 0)[:, None, None, :]
      for i in range(self.num_layers):
        x = getattr(self, f"block_{i}")(x, keep)
      return masked_mean(self.final_ln(x), mask)

  class LateFusionClassifier(nn.Module):
    """One tower per stream ('<name>_tower', reading `dequantize_frames` of it), embeddings
    concatenated -> Linear 'fusion' ->
    ReLU -> Dropout -> Linear 'classifier' (bias -log(C - 1)): batch dict with the streams
    [B, T, D_m] (uint8 or float) and 'mask' [B, T] -> logits [B, C]."""

    def __init__(self, towers: Mapping[str, Any], embedding_dim: int, fusion_hidden: int,
                 num_classes: int, dropout_rate: float):
      super().__init__()
      self.feature_names = tuple(towers)
      for name, tower in towers.items():
        self.add_module(f"{name}_tower", tower)
      self.fusion = nn.Linear(embedding_dim, fusion_hidden)
      self.dropout = nn.Dropout(dropout_rate)
      self.classifier = nn.Linear(fusion_hidden, num_classes)
      nn.init.constant_(self.classifier.bias, -math.log(max(num_classes - 1, 1)))

    def forward(self, batch):
      mask = batch["mask"]
      h = torch.cat([getattr(self, f"{name}_tower")(dequantize_frames(batch[name], mask), mask)
                     for name in self.feature_names], dim=-1)
      return self.classifier(self.dropout(torch.relu(self.fusion(h))))

  return types.SimpleNamespace(
      dequantize_frames=dequantize_frames, masked_mean=masked_mean, ContextGating=ContextGating,
      NetVLAD=NetVLAD, NetVLADTower=NetVLADTower, SelfAttention=SelfAttention, Mlp=Mlp,
      EncoderBlock=EncoderBlock, TransformerTower=TransformerTower,
      LateFusionClassifier=LateFusionClassifier)


def build_torch_model(config, model_name: str):
  """The torch LateFusionClassifier of `model_name` ('transformer' or 'netvlad', optionally
  '_late') with config.model's sizes and config.data's feature names and sizes, num_classes and
  max_frames (the position table's rows), on torch's current default device.

  Raises ValueError for another family or fusion.
  """
  family, fusion = parse_model(model_name)
  if family not in FAMILIES or fusion != "late":
    raise ValueError(f"torch reference: model {model_name!r}; expected one of {FAMILIES} "
                     "(late fusion)")
  m, data = config.model, config.data
  ns = torch_modules()
  names, sizes = tuple(data.feature_names), tuple(int(s) for s in data.feature_sizes)
  if family == "transformer":
    t = m.transformer
    towers = {name: ns.TransformerTower(dim, t.d_model, t.num_heads, t.num_layers, t.mlp_dim,
                                        int(data.max_frames), m.dropout_rate)
              for name, dim in zip(names, sizes)}
    embedding_dim = t.d_model * len(names)
  else:
    v = m.netvlad
    if len(v.clusters) < len(names):
      raise ValueError(f"config.model.netvlad.clusters={v.clusters} has fewer entries than the "
                       f"{len(names)} towers of late fusion")
    towers = {name: ns.NetVLADTower(dim, k, v.hidden_size, v.context_gating)
              for name, dim, k in zip(names, sizes, v.clusters)}
    embedding_dim = v.hidden_size * len(names)
  return ns.LateFusionClassifier(towers, embedding_dim, m.fusion_hidden, int(data.num_classes),
                                 m.dropout_rate)


_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def torch_name(collection: str, path: tuple[str, ...]) -> tuple[str, bool]:
  """The torch state_dict name of the Flax leaf `path` of `collection` ('params' or
  'batch_stats') and whether its array is transposed there (Dense kernels); see the module
  docstring's table. E.g. ('params', ('rgb_tower', 'fusion', 'kernel')) ->
  ('rgb_tower.fusion.weight', True)."""
  leaf = _LEAF_NAMES.get((collection, path[-1]), path[-1])
  return ".".join(path[:-1] + (leaf,)), path[-1] == "kernel"


def flax_leaves(variables: Mapping[str, Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
  """{(collection, path): leaf} over the 'params' and 'batch_stats' of Flax `variables` (the
  leaves may be arrays or jax.ShapeDtypeStruct)."""
  out = {}
  for collection in ("params", "batch_stats"):
    flat = jax.tree_util.tree_flatten_with_path(dict(variables.get(collection, {})))[0]
    for key_path, leaf in flat:
      out[(collection, tuple(str(k.key) for k in key_path))] = leaf
  return out


def load_flax_variables(model, variables: Mapping[str, Any]) -> None:
  """Copies the Flax model's `variables` ('params', 'batch_stats') into the torch `model` in
  place (names and transposes: `torch_name`).

  Raises ValueError when a Flax leaf has no torch counterpart of the same (transposed) shape, or
  a torch parameter or running statistic is left without a Flax value.
  """
  import torch  # pylint: disable=import-outside-toplevel
  state = model.state_dict()
  loaded = set()
  for (collection, path), value in flax_leaves(variables).items():
    name, transpose = torch_name(collection, path)
    array = np.asarray(value)
    array = np.array(array.T if transpose else array)  # a writable copy
    if name not in state or tuple(state[name].shape) != array.shape:
      shape = tuple(state[name].shape) if name in state else None
      raise ValueError(f"flax {collection} {'/'.join(path)} {array.shape}: torch {name} {shape}")
    with torch.no_grad():
      state[name].copy_(torch.from_numpy(array))
    loaded.add(name)
  missing = [n for n in state if n not in loaded and not n.endswith("num_batches_tracked")]
  if missing:
    raise ValueError(f"torch entries without a flax value: {missing}")


def multilabel_bce(logits, labels, weight):
  """torch form of `mmjax.losses.multilabel_sigmoid_cross_entropy`: per example the sum over
  classes of BCE-with-logits, then the weighted mean, sum_n w_n l_n / max(sum_n w_n, 1e-8).
  logits, labels [B, C], weight [B] -> []."""
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  per_example = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)
  return (per_example * weight).sum() / weight.sum().clamp(min=1e-8)


# -------------------------------------------------------------------------------------------
# Timing.


def torch_train_step_benchmark(config, model_name: str, *, batch_size: int, frames: int,
                               steps: int, warmup: int = 1, num_threads: int | None = None,
                               num_batches: int = 2, count_flops: bool = True) -> dict[str, Any]:
  """Times the eager float32 torch train step of `model_name` on random batches on the CPU.

  The model is `build_torch_model(config, model_name)` with data.max_frames=`frames`; the
  optimizer torch.optim.Adam with config.optimizer's learning_rate and optax.adam's defaults
  (betas (0.9, 0.999), eps 1e-8), after clip_grad_norm_ when config.optimizer.grad_clip_norm > 0
  (as `mmjax.train.optimizer`; the plateau rule never fires here). `num_batches` random batches in
  the real format (`random_batch`: lengths uniform in [frames/10, frames], 3 labels per video,
  the JAX benchmark's generator seed config.seed) are cycled.
  One step: zero_grad, forward (train mode: dropout, batch statistics), `multilabel_bce`,
  backward, Adam step.

  Timed: with `count_flops`, one untimed step under torch.utils.flop_counter.FlopCounterMode
  (torch's FLOP count of the matmuls and attention, forward + backward); `warmup` untimed steps;
  then `steps` steps, each timed on its own (torch CPU ops are synchronous). torch runs on
  `num_threads` intra-op threads (default: the cores available); the previous count is restored.

  Returns:
    {'model', 'fusion', 'frames', 'batch_size', 'params', 'step_s' (mean), 'step_min_s',
    'examples_per_s' (batch_size / step_s), 'final_loss' (the last timed step's loss, before its
    update), 'torch_version', 'num_threads', 'torch_flops_per_step' (with count_flops), and the
    process's resource use per timed step (getrusage: all threads): 'user_cpu_s', 'sys_cpu_s',
    'minor_page_faults', 'major_page_faults', 'voluntary_context_switches',
    'involuntary_context_switches'}.
  """
  # pylint: disable=import-outside-toplevel
  import torch
  from torch.utils.flop_counter import FlopCounterMode
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  family, fusion = parse_model(model_name)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.max_frames = int(frames)
  opt = config.optimizer
  if opt.name != "adam":
    raise ValueError(f"torch reference: config.optimizer.name={opt.name!r}; only 'adam'")
  threads = int(num_threads or available_cores())
  previous_threads = torch.get_num_threads()
  torch.set_num_threads(threads)
  try:
    torch.manual_seed(int(config.seed))
    model = build_torch_model(config, model_name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(opt.learning_rate),
                                 betas=(0.9, 0.999), eps=1e-8)
    spec = youtube8m.RecordSpec.from_config(config.data)
    rng = np.random.default_rng(config.seed)
    batches = [{k: torch.from_numpy(v) for k, v in
                random_batch(spec, batch_size, rng, min_frames=max(1, frames // 10)).items()}
               for _ in range(max(1, num_batches))]

    def step(batch):
      optimizer.zero_grad(set_to_none=True)
      loss = multilabel_bce(model(batch), batch["labels"], batch["weight"])
      loss.backward()
      if opt.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(opt.grad_clip_norm))
      optimizer.step()
      return loss

    result = {}
    k = 0
    if count_flops:
      with FlopCounterMode(display=False) as counter:
        step(batches[0])
      result["torch_flops_per_step"] = float(counter.get_total_flops())
      k += 1
    for _ in range(warmup):
      step(batches[k % len(batches)])
      k += 1
    times = []
    usage = benchmarking.resource_usage()
    for _ in range(steps):
      start = time.perf_counter()
      loss = step(batches[k % len(batches)])
      times.append(time.perf_counter() - start)
      k += 1
    usage = benchmarking.usage_since(usage, per=steps)
    final_loss = float(loss.detach())
  finally:
    torch.set_num_threads(previous_threads)
  step_s = float(np.mean(times))
  result.update({
      "model": family, "fusion": fusion, "frames": int(frames), "batch_size": int(batch_size),
      "params": int(sum(p.numel() for p in model.parameters())), "step_s": step_s,
      "step_min_s": float(np.min(times)), "examples_per_s": batch_size / step_s,
      "final_loss": final_loss, "torch_version": torch.__version__, "num_threads": threads,
      **usage})
  return result


def _best_seconds(call, repeats: int) -> float:
  """The fastest of `repeats` timed calls of `call` (after one untimed call)."""
  call()
  best = math.inf
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - start)
  return best


def jax_matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
  """The float32 matmul rate of JAX's default device, TFLOP/s: 2 n^3 / the fastest of `repeats`
  calls of a compiled a @ b ([n, n] x [n, n], random normal, each call ended by
  block_until_ready)."""
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  seconds = _best_seconds(lambda: matmul(a, b).block_until_ready(), repeats)
  return 2.0 * n ** 3 / seconds / 1e12


def torch_matmul_tflops(n: int = 2048, repeats: int = 5, num_threads: int | None = None
                        ) -> float:
  """The float32 torch.mm rate on the CPU, TFLOP/s: 2 n^3 / the fastest of `repeats` calls of
  torch.mm(a, b, out=c) ([n, n] random normal) on `num_threads` intra-op threads (default: the
  cores available; the previous count is restored)."""
  import torch  # pylint: disable=import-outside-toplevel
  previous_threads = torch.get_num_threads()
  torch.set_num_threads(int(num_threads or available_cores()))
  try:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, n, n, generator=generator)
    c = torch.empty(n, n)
    seconds = _best_seconds(lambda: torch.mm(a, b, out=c), repeats)
  finally:
    torch.set_num_threads(previous_threads)
  return 2.0 * n ** 3 / seconds / 1e12


def matmul_peak_benchmark(n: int = 2048, repeats: int = 5, *, num_threads: int | None = None,
                          include_torch: bool = True) -> dict[str, Any]:
  """The measured float32 matmul peaks of this run: {'matmul_n': n, 'jax_matmul_tflops_per_s'
  (`jax_matmul_tflops`)} and, with `include_torch`, 'torch_matmul_tflops_per_s'
  (`torch_matmul_tflops` on `num_threads`) and 'torch_num_threads'."""
  result = {"matmul_n": int(n), "jax_matmul_tflops_per_s": jax_matmul_tflops(n, repeats)}
  if include_torch:
    threads = int(num_threads or available_cores())
    result["torch_matmul_tflops_per_s"] = torch_matmul_tflops(n, repeats, threads)
    result["torch_num_threads"] = threads
  return result


def comparison(jax_result: Mapping[str, Any], torch_result: Mapping[str, Any],
               peaks: Mapping[str, Any]) -> dict[str, float]:
  """One model's JAX-vs-torch figures from `train_step_benchmark`'s (JAX),
  `torch_train_step_benchmark`'s and `matmul_peak_benchmark`'s results.

  Returns:
    {'jax_examples_per_s', 'torch_examples_per_s', 'jax_over_torch' (their ratio)} and, when
    the JAX result has XLA's 'flops_per_step' (the same model's FLOPs, also used for torch):
    'flops_per_step', 'jax_tflops_per_s' and 'torch_tflops_per_s' (flops_per_step / step_s /
    1e12), and 'jax_peak_fraction' / 'torch_peak_fraction': each over its own framework's
    measured matmul peak (where `peaks` has it), and 'twice_torch_peak_fraction': the fraction
    of JAX's matmul peak that a step at twice torch's throughput would have to sustain (the
    roofline of the 2x goal: above 1, no step of these FLOPs can reach it on this machine).
  """
  out = {"jax_examples_per_s": float(jax_result["examples_per_s"]),
         "torch_examples_per_s": float(torch_result["examples_per_s"])}
  out["jax_over_torch"] = out["jax_examples_per_s"] / out["torch_examples_per_s"]
  if "flops_per_step" in jax_result:
    flops = float(jax_result["flops_per_step"])
    out["flops_per_step"] = flops
    for name, result in (("jax", jax_result), ("torch", torch_result)):
      out[f"{name}_tflops_per_s"] = flops / float(result["step_s"]) / 1e12
      peak = peaks.get(f"{name}_matmul_tflops_per_s")
      if peak:
        out[f"{name}_peak_fraction"] = out[f"{name}_tflops_per_s"] / peak
    if peaks.get("jax_matmul_tflops_per_s"):
      out["twice_torch_peak_fraction"] = (2 * out["torch_tflops_per_s"]
                                          / peaks["jax_matmul_tflops_per_s"])
  return out
