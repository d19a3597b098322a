"""PNAO structured node pruning (MER2023 paper, seed 004: Algorithm 1, eq. 8, 10 and 11).

Algorithm 1, step by step:
  1. sparse training, loss + alpha * ||Theta||_1 (eq. 8): `l1_penalty` in the gradient position of
     the optimizer chain (config.optimizer.gradient_transforms);
  3. node importance (eq. 10, `node_importance`) and one global mask (eq. 11, `node_masks`):

       gamma(l, j) = 1/N_l sum_n |Theta_l(j, n)|,
       m(l, j) = 1[gamma(l, j) >= k * max_{l', j'} gamma(l', j')],   0 < k < 1 (the NAOR);

     a torch Linear row Theta_l(j, :) is the Flax Dense kernel column kernel[:, j] (kernel is
     [in, out]), so gamma(l, j) = mean_i |kernel[i, j]|;
  4. prune: zero the nodes (`apply_masks`, or `node_pruning` in the weight position of the chain,
     config.optimizer.weight_transforms, which prunes at chosen steps and keeps the pruned nodes at
     exactly 0.0 while training goes on), then really remove them (`compact`);
  5. fine-tune the smaller model (learning-rate rewinding: a new run restarts the schedule);
  6. repeat.

Prunable layers. A parameter leaf named 'kernel' with ndim >= 2 whose '/'-joined path
(mmjax.parallel.path_to_str, e.g. 'fusion/dense_0/kernel') fully matches the regex `prunable` and
does not fully match the regex `keep` (empty `keep`: nothing is kept). A Dense kernel [in, out]
has `out` nodes; a Conv kernel [*spatial, in, out] has `out` output channels, whose importance is
the mean of |kernel[..., j]| over all axes but the last. The sibling 'bias' [out] of the same
module is zeroed and removed with its node. Kernels with several output axes (DenseGeneral,
attention projections) would be read as Conv kernels: leave them out of `prunable`. Layers that
match `keep` (e.g. the output head, keep=r'head/kernel') never lose nodes and take no part in the
global max; so do biases, norms, embeddings and kernels that `prunable` does not match.

Masks. `node_masks` returns a pytree shaped like the parameters with an [out] bool vector (True =
node kept) at every prunable kernel and None at every other leaf. Inside `NodePruningState` each
mask is stored with its kernel's rank, shape [1, ..., 1, out], under the kernel's path: the trainer
shards optimizer-state leaves by the parameter path they end with
(mmjax.train.steps.state_shardings), so a mask gets its kernel's PartitionSpec; at full rank the
last axis takes the kernel's output-axis spec and the size-1 axes stay whole
(mmjax.parallel.spec_for drops a mesh axis that does not divide a dimension), so the mask is laid
out like the kernel's columns. A 1-D [out] mask would be given the spec of the kernel's first
(input) axis instead. `masks_from_state` returns the [out] vectors again.

Empty layers (safe behaviour). With k < 1 the globally most important node always survives, but
every node of some other layer can fall below the threshold. Such a layer keeps its single most
important node (argmax of gamma, the first on ties) and a RuntimeWarning naming the layer is
issued through `warnings.warn`: by `node_masks` when called on concrete arrays (not under jit)
and by `node_pruning` at its pruning steps, also under jit (via jax.debug.callback). No layer ever
ends up with zero nodes.

Zeroing a node equals removing it only when its activation f has f(0) = 0 (relu, gelu, silu,
tanh; not sigmoid) and no normalisation layer or other bias-like parameter acts on it before the
next kernel; `compact` handles such kernel/bias-only MLPs.
"""

import functools
import math
import operator
import re
import warnings
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.parallel import path_to_str


def _flatten(tree) -> Tuple[List[str], List[Any], Any]:
  """('/'-joined paths, leaves, treedef) of `tree` (None and optax.MaskedNode hold no leaves)."""
  pairs, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [path_to_str(path) for path, _ in pairs], [leaf for _, leaf in pairs], treedef


def _compile(regex: str, name: str) -> re.Pattern:
  if not isinstance(regex, str):
    raise ValueError(f"{name} must be a regex string, got {regex!r}")
  try:
    return re.compile(regex)
  except re.error as e:
    raise ValueError(f"{name}={regex!r} is not a valid regex: {e}") from e


def _check_k(k) -> float:
  if isinstance(k, bool) or not isinstance(k, (int, float, np.floating)) or not 0 < k < 1:
    raise ValueError(f"k (the network architecture optimization rate, NAOR) must satisfy "
                     f"0 < k < 1, got k={k!r}")
  return float(k)


def _shape(x) -> Tuple[int, ...]:
  return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _module(kernel_path: str) -> str:
  """'enc/dense_0/kernel' -> 'enc/dense_0'."""
  return kernel_path.rpartition("/")[0]


def _join(module: str, name: str) -> str:
  return f"{module}/{name}" if module else name


def _sibling(kernel_path: str, name: str) -> str:
  """'enc/dense_0/kernel', 'bias' -> 'enc/dense_0/bias'."""
  return _join(_module(kernel_path), name)


def _is_kernel(path: str, leaf) -> bool:
  return path.rpartition("/")[2] == "kernel" and len(_shape(leaf)) >= 2


def _shown(names: Sequence[str]) -> str:
  return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


class _Selector(NamedTuple):
  """The compiled `prunable` / `keep` regexes (keep None: nothing is kept)."""
  prunable: re.Pattern
  keep: Optional[re.Pattern]
  prunable_regex: str
  keep_regex: str

  @classmethod
  def make(cls, prunable: str, keep: str) -> "_Selector":
    return cls(_compile(prunable, "prunable"), _compile(keep, "keep") if keep else None,
               prunable, keep)

  def indices(self, names: Sequence[str], leaves: Sequence[Any], who: str) -> List[int]:
    """Positions of the prunable kernels; ValueError naming the regexes when there is none."""
    found = [i for i, (name, leaf) in enumerate(zip(names, leaves))
             if _is_kernel(name, leaf) and self.prunable.fullmatch(name)
             and not (self.keep is not None and self.keep.fullmatch(name))]
    if not found:
      kernels = [n for n, x in zip(names, leaves) if _is_kernel(n, x)]
      raise ValueError(f"{who}: prunable={self.prunable_regex!r} (keep={self.keep_regex!r}) "
                       f"matches no kernel (a leaf named 'kernel' with ndim >= 2) to prune; "
                       f"kernel paths: {_shown(kernels) or 'none'}")
    return found


@jax.jit
def _importance(kernel: jnp.ndarray) -> jnp.ndarray:
  """gamma_j = mean over all axes but the last of |kernel[..., j]|.  [..., out] -> [out] (at
  least float32)."""
  dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  return jnp.mean(jnp.abs(kernel.astype(dtype)), axis=tuple(range(kernel.ndim - 1)))


@jax.jit
def _global_masks(kernels: Sequence[jnp.ndarray], k: float,
                  previous: Optional[Sequence[jnp.ndarray]] = None
                  ) -> Tuple[List[jnp.ndarray], List[jnp.ndarray]]:
  """Eq. 11 over the given kernels, restricted to the nodes that `previous` keeps ([out] bool per
  kernel). Returns ([out] bool masks, [] bool per kernel: every node fell below the threshold and
  the most important one was kept instead). Jitted (one compilation per set of kernel shapes when
  called eagerly), inlined when traced."""
  gammas = [_importance(w) for w in kernels]
  if previous is None:
    previous = [jnp.ones(g.shape, bool) for g in gammas]
  alive = [jnp.where(p, g, -jnp.inf) for p, g in zip(previous, gammas)]
  threshold = k * jnp.max(jnp.stack([jnp.max(a) for a in alive]))
  raw = [p & (g >= threshold) for p, g in zip(previous, gammas)]
  emptied = [jnp.any(p) & ~jnp.any(r) for p, r in zip(previous, raw)]
  best = [(jnp.arange(a.shape[0]) == jnp.argmax(a)) & p for a, p in zip(alive, previous)]
  return [r | b for r, b in zip(raw, best)], emptied


def _warn_emptied(kernel_paths: Sequence[str], emptied, where: str = "") -> None:
  for path, flag in zip(kernel_paths, np.asarray(emptied).reshape(-1)):
    if flag:
      warnings.warn(f"node pruning{where}: every node of layer {_module(path)!r} fell below the "
                    f"global threshold k * max(gamma); keeping its most important node",
                    RuntimeWarning, stacklevel=3)


def _warn_emptied_callback(kernel_paths: Sequence[str], count, emptied) -> None:
  _warn_emptied(kernel_paths, emptied, f" (update {int(count)})")


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def l1_penalty(alpha: float, include: str = r".*kernel") -> optax.GradientTransformation:
  """Sparse training (eq. 8): the subgradient of alpha * ||Theta||_1 added to the gradients,

    g <- g + alpha * sign(theta)   for every parameter whose path fully matches `include`,

  (sign(0) = 0), other gradients unchanged. Place it in the gradient position of the chain
  (config.optimizer.gradient_transforms, before Adam), where it acts like the loss term. Shapes:
  every update keeps its parameter's shape and dtype. Stateless.

  Raises:
    ValueError: alpha < 0 (or not finite); `include` not a regex; at init, `include` matching no
    parameter; at update, params=None (the penalty needs the parameters).
  """
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
      or not math.isfinite(alpha) or alpha < 0:
    raise ValueError(f"l1_penalty: alpha must be a finite number >= 0, got alpha={alpha!r}")
  pattern = _compile(include, "l1_penalty include")
  alpha = float(alpha)

  def init(params):
    names, _, _ = _flatten(params)
    if not any(pattern.fullmatch(name) for name in names):
      raise ValueError(f"l1_penalty: include={include!r} matches no parameter (paths look like: "
                       f"{_shown(names)})")
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("l1_penalty needs the parameters: call tx.update(grads, state, params)")

    def penalise(path, g, p):
      if not pattern.fullmatch(path_to_str(path)):
        return g
      return (g + alpha * jnp.sign(p)).astype(g.dtype)

    return jax.tree_util.tree_map_with_path(penalise, updates, params), state

  return optax.GradientTransformation(init, update)


def node_importance(params, prunable: str = r".*", keep: str = r""):
  """Node importance, eq. 10: gamma(l, j) = 1/N_l sum_n |Theta_l(j, n)|.

  Args:
    params: parameter pytree (nested dicts).
    prunable, keep: regexes on kernel paths (module docstring).

  Returns:
    A pytree shaped like `params`: at every prunable kernel an [out] float vector, gamma_j =
    mean_i |kernel[i, j]| for a Dense kernel [in, out] and the mean of |kernel[..., j]| over all
    axes but the last for a Conv kernel [*spatial, in, out]; None at every other leaf.
    Jit-compatible.

  Raises:
    ValueError naming the regexes when no kernel is prunable.
  """
  names, leaves, treedef = _flatten(params)
  selected = _Selector.make(prunable, keep).indices(names, leaves, "node_importance")
  out: List[Any] = [None] * len(leaves)
  for i in selected:
    out[i] = _importance(jnp.asarray(leaves[i]))
  return jax.tree_util.tree_unflatten(treedef, out)


def node_masks(params, k: float, prunable: str = r".*", keep: str = r"", previous=None):
  """One global node mask, eq. 11: m(l, j) = 1[gamma(l, j) >= k * max_{l', j'} gamma(l', j')],
  the max over all nodes of all prunable layers (gamma: `node_importance`).

  A layer whose every node falls below the threshold keeps its most important node and a
  RuntimeWarning names it (issued only when the arrays are concrete, i.e. not under jit); no layer
  is ever left empty. With `previous` (masks from an earlier round, e.g. `masks_from_state`) the
  result is monotone: m = previous & eq. 11, the max taken over the nodes `previous` keeps.

  Args:
    params: parameter pytree (nested dicts).
    k: the NAOR, 0 < k < 1.
    prunable, keep: regexes on kernel paths (module docstring); kept layers get None.
    previous: optional masks pytree ([out] or [1, ..., 1, out] bool leaves at the same paths).

  Returns:
    A pytree shaped like `params`: an [out] bool vector (True = keep) at every prunable kernel,
    None elsewhere. Jit-compatible.

  Raises:
    ValueError: k outside (0, 1); no kernel prunable (naming the regexes); `previous` missing a
    prunable kernel or of the wrong size.
  """
  k = _check_k(k)
  names, leaves, treedef = _flatten(params)
  selected = _Selector.make(prunable, keep).indices(names, leaves, "node_masks")
  kernels = [jnp.asarray(leaves[i]) for i in selected]
  prev = [np.ones(kernel.shape[-1:], bool) for kernel in kernels]  # one jit signature for both
  if previous is not None:
    prev_names, prev_leaves, _ = _flatten(previous)
    by_name = dict(zip(prev_names, prev_leaves))
    prev = []
    for i, kernel in zip(selected, kernels):
      if names[i] not in by_name:
        raise ValueError(f"node_masks: previous has no mask for {names[i]!r}")
      mask = jnp.reshape(by_name[names[i]], (-1,)).astype(bool)
      if mask.shape[0] != kernel.shape[-1]:
        raise ValueError(f"node_masks: previous mask for {names[i]!r} has {mask.shape[0]} "
                         f"entries, the kernel {kernel.shape[-1]} nodes")
      prev.append(mask)
  masks, emptied = _global_masks(kernels, k, prev)
  if all(_is_concrete(e) for e in emptied):
    _warn_emptied([names[i] for i in selected], [bool(e) for e in emptied])
  out: List[Any] = [None] * len(leaves)
  for i, mask in zip(selected, masks):
    out[i] = mask
  return jax.tree_util.tree_unflatten(treedef, out)


def _mask_leaves(params, masks, who: str):
  """[(kernel index, bias index or None, [out] mask)] for every mask leaf, checked."""
  names, leaves, _ = _flatten(params)
  position = {name: i for i, name in enumerate(names)}
  found = []
  for name, mask in zip(*_flatten(masks)[:2]):
    i = position.get(name)
    if i is None or not _is_kernel(name, leaves[i]):
      raise ValueError(f"{who}: the mask at {name!r} has no kernel (ndim >= 2) at that path of "
                       f"the parameters (kernel paths: "
                       f"{_shown([n for n, x in zip(names, leaves) if _is_kernel(n, x)])})")
    out = _shape(leaves[i])[-1]
    if math.prod(_shape(mask)) != out:
      raise ValueError(f"{who}: the mask at {name!r} has shape {_shape(mask)}, the kernel "
                       f"{_shape(leaves[i])} ({out} nodes)")
    bias = position.get(_sibling(name, "bias"))
    if bias is not None and _shape(leaves[bias]) != (out,):
      raise ValueError(f"{who}: the bias of {_module(name)!r} has shape {_shape(leaves[bias])}, "
                       f"not [{out}] like the kernel's nodes; leave this layer out of `prunable`")
    found.append((i, bias, mask))
  return names, leaves, found


def apply_masks(params, masks):
  """Zeroes the pruned nodes (Algorithm 1 step 4, Theta ⊙ m): for every mask leaf m ([out], or
  [1, ..., 1, out]) at a kernel path, kernel[..., j] = 0 and bias[j] = 0 (the sibling 'bias' of
  the same module, when present) wherever m[j] is False. Other leaves unchanged; None mask leaves
  are ignored. Shapes and dtypes unchanged. Pure, jit-compatible.

  Raises:
    ValueError when a mask has no kernel at its path or does not match its kernel's nodes.
  """
  _, leaves, found = _mask_leaves(params, masks, "apply_masks")
  _, _, treedef = _flatten(params)
  targets = [(i, bias) for i, bias, _ in found]
  zeroed = _zero_nodes([leaves[i] for i, _ in targets],
                       [None if bias is None else leaves[bias] for _, bias in targets],
                       [mask for _, _, mask in found])
  out = list(leaves)
  for (i, bias), (kernel, new_bias) in zip(targets, zeroed):
    out[i] = kernel
    if bias is not None:
      out[bias] = new_bias
  return jax.tree_util.tree_unflatten(treedef, out)


@jax.jit
def _zero_nodes(kernels, biases, masks):
  """[(kernel with kernel[..., j] = 0, bias with bias[j] = 0 (or None)) where masks[j] is False]."""
  out = []
  for kernel, bias, mask in zip(kernels, biases, masks):
    mask = jnp.reshape(mask, (-1,)).astype(bool)
    kernel = jnp.where(mask, kernel, jnp.zeros((), jnp.result_type(kernel)))
    if bias is not None:
      bias = jnp.where(mask, bias, jnp.zeros((), jnp.result_type(bias)))
    out.append((kernel, bias))
  return out


class NodePruningState(NamedTuple):
  """count: [] int32 updates seen so far; masks: pytree shaped like the parameters with a
  [1, ..., 1, out] bool mask (kernel rank, True = node kept) at every prunable kernel and None
  at every other leaf (module docstring: why kernel rank)."""
  count: jnp.ndarray
  masks: Any


def node_pruning(k: float, at_steps: Sequence[int], prunable: str = r".*",
                 keep: str = r"") -> optax.GradientTransformation:
  """PNAO pruning inside the optimizer chain; place it in the weight position
  (config.optimizer.weight_transforms, after Adam): it sees the final updates u and the params.

  At update number c (0-based, NodePruningState.count; updates skipped by the trainer's non-finite
  guard do not count): if c is in `at_steps`,

    masks <- masks & node_masks(params + u, k, prunable, keep)    (monotone: pruned stays pruned)

  then, at every pruned node j, u[..., j] = -kernel[..., j] and u_bias[j] = -bias[j], so that
  params + u is exactly 0.0 there after optax.apply_updates; all other updates pass unchanged.
  Before the first pruning step every mask is True and the transform is the identity. A layer that
  would lose every node keeps its most important one, with a RuntimeWarning (module docstring).

  Args:
    k: the NAOR, 0 < k < 1.
    at_steps: update counts (ints >= 0) at which to prune; empty: never.
    prunable, keep: regexes on kernel paths (module docstring).

  Returns:
    optax.GradientTransformation with state NodePruningState; jit-compatible.

  Raises:
    ValueError: k outside (0, 1); a negative or non-integer step; a bad regex; at init, no
    prunable kernel (naming the regexes) or a bias that is not [out]; at update, params=None.
  """
  k = _check_k(k)
  if isinstance(at_steps, (str, bytes)) or not isinstance(at_steps, Sequence):
    raise ValueError(f"node_pruning: at_steps must be a list of update counts, got {at_steps!r}")
  steps = []
  for step in at_steps:
    try:
      if isinstance(step, bool):
        raise TypeError
      step = operator.index(step)
    except TypeError as e:
      raise ValueError(f"node_pruning: at_steps must hold integers, got {at_steps!r}") from e
    if step < 0:
      raise ValueError(f"node_pruning: at_steps must be >= 0, got {step} in {list(at_steps)}")
    steps.append(step)
  steps = sorted(set(steps))
  selector = _Selector.make(prunable, keep)

  def init(params):
    names, leaves, treedef = _flatten(params)
    selected = selector.indices(names, leaves, "node_pruning")
    masks: List[Any] = [None] * len(leaves)
    for i in selected:
      shape = _shape(leaves[i])
      masks[i] = jnp.ones((1,) * (len(shape) - 1) + shape[-1:], bool)
    masks = jax.tree_util.tree_unflatten(treedef, masks)
    _mask_leaves(params, masks, "node_pruning")  # checks the biases
    return NodePruningState(jnp.zeros([], jnp.int32), masks)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("node_pruning needs the parameters: call tx.update(updates, state, params)")
    names, u_leaves, treedef = _flatten(updates)
    p_names, p_leaves, _ = _flatten(params)
    if names != p_names:
      raise ValueError("node_pruning: updates and params have different trees")
    mask_names, mask_leaves, mask_treedef = _flatten(state.masks)
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in mask_names if name not in position]
    if missing:
      raise ValueError(f"node_pruning: no updates for the masked kernels {_shown(missing)}")
    kernels = [position[name] for name in mask_names]
    candidates = [(p_leaves[i] + u_leaves[i]).astype(p_leaves[i].dtype) for i in kernels]

    def prune(masks):
      new, emptied = _global_masks(candidates, k, [jnp.reshape(m, (-1,)) for m in masks])
      jax.debug.callback(functools.partial(_warn_emptied_callback, mask_names), state.count,
                         jnp.stack(emptied))
      return [jnp.reshape(n, m.shape) for n, m in zip(new, masks)]

    masks = list(mask_leaves)
    if steps:
      now = jnp.any(state.count == jnp.asarray(steps, jnp.int32))
      masks = jax.lax.cond(now, prune, list, masks)
    out = list(u_leaves)
    for name, i, mask in zip(mask_names, kernels, masks):
      out[i] = jnp.where(mask, u_leaves[i], -p_leaves[i]).astype(u_leaves[i].dtype)
      bias = position.get(_sibling(name, "bias"))
      if bias is not None:
        out[bias] = jnp.where(jnp.reshape(mask, (-1,)), u_leaves[bias],
                              -p_leaves[bias]).astype(u_leaves[bias].dtype)
    new_state = NodePruningState(optax.safe_int32_increment(state.count),
                                 jax.tree_util.tree_unflatten(mask_treedef, masks))
    return jax.tree_util.tree_unflatten(treedef, out), new_state

  return optax.GradientTransformation(init, update)


def masks_from_state(opt_state):
  """The masks of the one NodePruningState inside `opt_state` (any optax chain / multi_transform
  state, e.g. TrainState.opt_state), as a pytree shaped like the parameters with [out] bool
  vectors at the prunable kernels and None elsewhere (as `node_masks` returns them).

  Raises:
    ValueError when `opt_state` holds no NodePruningState, or more than one.
  """
  is_state = lambda x: isinstance(x, NodePruningState)
  found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_state) if is_state(x)]
  if len(found) != 1:
    raise ValueError(f"masks_from_state: expected one NodePruningState in the optimizer state "
                     f"(node_pruning in config.optimizer.weight_transforms), found {len(found)}")
  return jax.tree.map(lambda m: jnp.reshape(m, (-1,)), found[0].masks)


def compact(params, masks, consumers: Mapping[str, Sequence[Tuple[str, int]]]
            ) -> Tuple[Any, Dict[str, int]]:
  """Really removes the pruned nodes (Algorithm 1 step 4) from a kernel/bias-only network.

  For every mask leaf m ([out] bool at the kernel path of module L): the columns j with m[j]
  False of L's kernel [..., out] (axis -1) and the entries of its bias [out] are deleted, and so
  are the rows offset + j of every consumer's kernel [..., in, out'] (axis -2: Dense [in, out'],
  Conv [*spatial, in, out']) listed in `consumers[L]`. Concatenation fusion is described by the
  offsets: an image encoder whose 64 outputs occupy rows 0..63 of the fusion kernel and an audio
  encoder at rows 64..127 give {'image/dense': [('fusion', 0)], 'audio/dense': [('fusion', 64)]}.
  Offsets refer to the uncompacted network. Valid only when zeroing a node equals removing it
  (module docstring: f(0) = 0, no normalisation or reshape between producer and consumer); a
  kernel feeding a Flatten (Conv -> Dense) is not supported. Host-side (numpy), not jit-able.

  Args:
    params: parameter pytree (nested dicts).
    masks: pytree of [out] (or [1, ..., 1, out]) bool masks at kernel paths (`node_masks`,
      `masks_from_state`); None leaves ignored.
    consumers: {module path: [(consumer module path, row offset), ...]} for every module that
      loses nodes ([] when no kernel reads its output); JSON-like lists are fine.

  Returns:
    (new params with the same tree and smaller kernels/biases, {module path: new width} for every
    masked module).

  Raises:
    ValueError: a module loses nodes but has no `consumers` entry; an entry names a module without
    a mask; a consumer has no kernel; a row range does not fit the consumer's input or overlaps
    another; a compacted module has a parameter other than 'kernel' and 'bias'.
  """
  names, leaves, found = _mask_leaves(params, masks, "compact")
  _, _, treedef = _flatten(params)
  position = {name: i for i, name in enumerate(names)}
  keep_cols: Dict[str, np.ndarray] = {}
  widths: Dict[str, int] = {}
  for i, _, mask in found:
    mask = np.asarray(mask).reshape(-1).astype(bool)
    module = _module(names[i])
    if not mask.any():
      raise ValueError(f"compact: every node of {module!r} is masked; a layer keeps at least one")
    keep_cols[module] = mask
    widths[module] = int(mask.sum())

  consumers = dict(consumers or {})
  drop_rows: Dict[str, set] = {}
  taken: Dict[str, List[Tuple[int, int, str]]] = {}
  for producer, entries in consumers.items():
    if producer not in keep_cols:
      raise ValueError(f"compact: consumers names {producer!r}, which has no mask (masked modules: "
                       f"{_shown(sorted(keep_cols))})")
    mask = keep_cols[producer]
    for entry in entries:
      try:
        consumer, offset = entry
        offset = operator.index(offset)
      except (TypeError, ValueError) as e:
        raise ValueError(f"compact: consumers[{producer!r}] must hold (module path, row offset) "
                         f"pairs, got {entry!r}") from e
      c = position.get(_join(str(consumer), "kernel"))
      if c is None or not _is_kernel(names[c], leaves[c]):
        raise ValueError(f"compact: consumer {consumer!r} of {producer!r} has no kernel in the "
                         f"parameters (kernel paths: "
                         f"{_shown([n for n, x in zip(names, leaves) if _is_kernel(n, x)])})")
      rows = _shape(leaves[c])[-2]
      if offset < 0 or offset + mask.size > rows:
        raise ValueError(f"compact: {producer!r} ({mask.size} outputs) at row offset {offset} "
                         f"does not fit the {rows} input rows of {consumer!r}")
      for start, end, other in taken.setdefault(consumer, []):
        if offset < end and start < offset + mask.size:
          raise ValueError(f"compact: rows {offset}..{offset + mask.size - 1} of {consumer!r} "
                           f"({producer!r}) overlap rows {start}..{end - 1} ({other!r})")
      taken[consumer].append((offset, offset + mask.size, producer))
      drop_rows.setdefault(consumer, set()).update((offset + np.flatnonzero(~mask)).tolist())
  for module, mask in keep_cols.items():
    if not mask.all() and module not in consumers:
      raise ValueError(f"compact: {module!r} loses nodes but consumers has no entry saying which "
                       f"kernels read its output (give [] when none does)")

  out = list(leaves)
  for module in sorted(set(keep_cols) | set(drop_rows)):
    own = (_join(module, "kernel"), _join(module, "bias"))
    others = [n for n in names if n.startswith(_join(module, "")) and n not in own]
    if others:
      raise ValueError(f"compact: module {module!r} has parameters other than kernel and bias "
                       f"({_shown(others)}), which cannot be compacted")
    c = position[own[0]]
    kernel = np.asarray(leaves[c])
    if module in drop_rows:
      kernel = np.delete(kernel, sorted(drop_rows[module]), axis=-2)
    if module in keep_cols:
      kernel = kernel[..., keep_cols[module]]
      b = position.get(own[1])
      if b is not None:
        out[b] = jnp.asarray(np.asarray(leaves[b])[keep_cols[module]])
    out[c] = jnp.asarray(kernel)
  return jax.tree_util.tree_unflatten(treedef, out), widths


def parameter_count(params) -> int:
  """sum over leaves of prod(shape): the number of scalars in a pytree (None leaves count 0)."""
  return int(sum(math.prod(_shape(x)) for x in jax.tree_util.tree_leaves(params)))
