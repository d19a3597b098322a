"""The Task protocol: everything the trainer knows about a system (dataset, model, loss,
evaluator, and the optional hooks through which a paper's training tricks reach the loop).

A task class subclasses `Task` explicitly (it then inherits the optional hooks' defaults below)
and registers itself with `@mmjax.tasks.register(name)`; `config.task` names it. The trainer
(`mmjax.train`) calls nothing else on it, so a new system never changes the trainer.

Shapes: B is the per-call batch (the global batch inside the jitted steps, the process-local
one in the datasets); every batch carries 'weight' [B] float32, 0 on padding rows of the eval
split, which losses and evaluators must ignore.

Order of the optimizer chain built from `config.optimizer` and `optimizer_transforms()`
(mmjax.train.optimizer.build_optimizer):

  config.optimizer.gradient_transforms -> task gradient transforms -> clip_by_global_norm
  -> adam/adamw/sgd(learning_rate) -> scale_by_plateau -> config.optimizer.weight_transforms
  -> task weight transforms

Gradient-side transforms see raw gradients (e.g. gradient noise, per-group scaling);
weight-side ones see the final updates and the parameters (e.g. pruning masks that keep
removed weights at zero). The whole chain is wrapped by the freeze transform when
`config.optimizer.trainable` or a frozen `config.init_from` entry is set.
"""

import dataclasses
from typing import (
  Any,
  Callable,
  Dict,
  Iterable,
  Mapping,
  Optional,
  Protocol,
  Sequence,
  Tuple,
  runtime_checkable,
)

import optax

PyTree = Any
Batch = Dict[str, Any]  # name -> numpy array (datasets) or jax.Array (inside the steps)


@dataclasses.dataclass(frozen=True)
class OptimizerTransforms:
  """optax transforms a task contributes, placed around the base optimizer (module docstring).

  gradient: applied to the gradients before clipping and the optimizer.
  weight: applied to the optimizer's updates, after the plateau scale; they receive `params`.
  """
  gradient: Sequence[optax.GradientTransformation] = ()
  weight: Sequence[optax.GradientTransformation] = ()


@dataclasses.dataclass(frozen=True)
class AfterEvaluation:
  """What `Task.after_evaluation` returns.

  task_state: the new task state (same tree structure, shapes and dtypes as the old one; host
    or device arrays), or None to keep it.
  stop: True ends training after this step (a checkpoint of the step is saved first).
  reason: logged when stopping.
  """
  task_state: Optional[PyTree] = None
  stop: bool = False
  reason: str = ""


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """One named evaluation split (`config.evals.<name>`).

  name: the split's name; its metrics are logged as '<name>/<metric>' (TensorBoard) and as
    {"split": name, ...} records in metrics.jsonl; the headline metric is named the same way.
  data_overrides: `config.data` keys replaced for this split (e.g. {'eval_pattern': ...}).
  """
  name: str
  data_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def data_config(self, data_config):
    """A copy of `data_config` (a ConfigDict) with this split's overrides applied; a key that
    `config.data` does not have raises KeyError naming `config.evals.<name>.data.<key>`."""
    data_config = data_config.copy_and_resolve_references()
    with data_config.unlocked():
      for key, value in self.data_overrides.items():
        if key not in data_config:
          raise KeyError(f"config.evals.{self.name}.data.{key}: config.data has no key {key!r}")
        data_config[key] = value
    return data_config


DEFAULT_SPLIT = EvalSplit("eval")


class Model(Protocol):
  """A flax.linen Module (or an adapter with the same two methods)."""

  def init(self, rngs: Dict[str, Any], batch: Batch, train: bool = False) -> PyTree:
    """Returns the variables {'params': ..., other collections such as 'batch_stats'}."""

  def apply(self, variables: PyTree, batch: Batch, train: bool = False, **kwargs) -> Any:
    """Returns the outputs the task's loss and predictions read (kwargs: rngs, mutable)."""


class Evaluator(Protocol):
  """Host-side metric accumulator for one pass over an eval split."""

  def update(self, predictions: PyTree, batch: Batch) -> None:
    """predictions: `Task.predictions` of the global batch (numpy); batch: the
    `evaluator_keys` entries of the global batch (numpy), including 'weight' [B]."""

  def compute(self) -> Dict[str, float]:
    """The split's metrics, e.g. {'gap': 0.8, 'map': 0.7}."""


@runtime_checkable
class Task(Protocol):
  """Binds a dataset, a model, a loss and an evaluator (module docstring).

  Required members: `model`, `evaluator_keys`, `prepare`, `example_batch`, `loss`,
  `predictions`, `train_dataset`, `eval_dataset`, `new_evaluator`.
  Optional hooks (defaults here; override what the system needs): `optimizer_transforms`,
  `init_task_state`, `update_task_state`, `after_evaluation`, `pretrained_params`,
  `pretrained_model_state`.
  """

  model: Model
  evaluator_keys: Tuple[str, ...]  # batch keys the evaluator reads (gathered after eval steps)

  # Required.

  def prepare(self, log: Callable[[str], None]) -> None:
    """Makes sure the data exist (e.g. writes a synthetic default once); called before any
    dataset is built, on every process."""
    raise NotImplementedError

  def example_batch(self, batch_size: int) -> Batch:
    """A numpy batch of the right shapes and dtypes (zeros are fine), [batch_size, ...], used
    for `model.init` and shape inference; includes 'weight' [batch_size]."""
    raise NotImplementedError

  def loss(self, outputs: Any, batch: Batch, task_state: PyTree) -> Tuple[Any, Dict[str, Any]]:
    """(scalar loss, aux metrics dict of scalars) from the model outputs of the global batch.
    Runs inside jit; `task_state` is the train state's task state (e.g. blending weights)."""
    raise NotImplementedError

  def predictions(self, outputs: Any) -> PyTree:
    """What the evaluator consumes (e.g. sigmoid probabilities [B, C]); runs inside jit."""
    raise NotImplementedError

  def train_dataset(self, batch_size: int, seed: int, process_index: int,
                    process_count: int) -> Iterable[Batch]:
    """An endless, checkpointable grain dataset of process-local batches [batch_size, ...]
    (batch_size = global batch / process_count); deterministic given `seed`."""
    raise NotImplementedError

  def eval_dataset(self, batch_size: int, process_index: int, process_count: int,
                   split: EvalSplit = DEFAULT_SPLIT) -> Iterable[Batch]:
    """One pass over `split` in process-local batches, the same number of batches on every
    process (padding rows with batch['weight'] = 0)."""
    raise NotImplementedError

  def new_evaluator(self, split: EvalSplit = DEFAULT_SPLIT) -> Evaluator:
    """A fresh metric accumulator for one pass over `split`."""
    raise NotImplementedError

  # Optional hooks.

  def optimizer_transforms(self) -> OptimizerTransforms:
    """optax transforms this system adds to the chain (order: module docstring). Their state
    lives in the optimizer state, checkpointed and sharded with it."""
    return OptimizerTransforms()

  def init_task_state(self, params: PyTree) -> PyTree:
    """The initial task-owned state (gradient-blending weights, pruning masks, an EMA of the
    parameters, ...), from the initial params; traced inside jit. It lives in
    TrainState.task_state, is partitioned by `config.sharding_rules` like the parameters
    (a leaf whose path ends in a parameter's path gets that parameter's spec), and is saved
    and restored with every checkpoint. Default: {} (none)."""
    del params
    return {}

  def update_task_state(self, task_state: PyTree, params: PyTree) -> PyTree:
    """The task state after a train step, from the updated params (e.g. an EMA update);
    traced inside the jitted train step. Default: unchanged."""
    del params
    return task_state

  def after_evaluation(self, step: int, metrics: Mapping[str, Mapping[str, float]],
                       task_state: PyTree) -> AfterEvaluation:
    """Host-side, after every evaluation (all splits), before the step's checkpoint is saved.
    metrics: split name -> that split's metrics; task_state: host numpy copy. Returns a new
    task state (e.g. re-estimated blending weights) and/or a request to stop (early stopping).
    Must return the same on every process (metrics are global, so deciding from them is)."""
    del step, metrics, task_state
    return AfterEvaluation()

  def compiler_options(self, platform: str) -> Dict[str, Any]:
    """XLA compiler options for this task's jitted train and eval steps on `platform` (the
    mesh's devices: 'cpu', 'gpu', 'tpu'), passed to `jax.jit(compiler_options=...)`: a choice
    measured to make this system's steps faster (the task's README says what and by how much).
    Options the installed XLA does not know are dropped with a warning
    (`mmjax.train.steps.step_compiler_options`). Default: {} (XLA's defaults)."""
    del platform
    return {}

  def pretrained_params(self, params: PyTree) -> Optional[PyTree]:
    """Initial weights of a fresh run (e.g. a CLIP checkpoint named by the config): a full
    params tree of host arrays shaped like `params`, or None. Applied before
    `config.init_from`."""
    del params
    return None

  def pretrained_model_state(self, model_state: PyTree) -> Optional[PyTree]:
    """The other variable collections of the same pretrained weights (e.g. BatchNorm's
    'batch_stats' of a torchvision checkpoint): a tree of host arrays shaped like
    `model_state`, or None. Applied with `pretrained_params`."""
    del model_state
    return None


REQUIRED_MEMBERS = ("model", "evaluator_keys", "prepare", "example_batch", "loss",
                    "predictions", "train_dataset", "eval_dataset", "new_evaluator")


def check_task(task: Any, name: str) -> None:
  """Raises TypeError naming the task and its missing members unless it satisfies `Task`."""
  missing = [m for m in REQUIRED_MEMBERS
             if not hasattr(task, m) or getattr(type(task), m, None) is getattr(Task, m, 0)]
  if missing or not isinstance(task, Task):
    optional = [m for m in ("optimizer_transforms", "init_task_state", "update_task_state",
                            "after_evaluation", "compiler_options", "pretrained_params",
                            "pretrained_model_state")
                if not hasattr(task, m)]
    raise TypeError(f"task {name!r} ({type(task).__name__}) does not implement "
                    f"mmjax.tasks.Task: missing {missing + optional}; subclass Task to inherit "
                    "the optional hooks' defaults")
