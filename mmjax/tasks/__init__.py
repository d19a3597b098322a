"""Task registry: `config.task` names the Task that binds a dataset, a model, a loss and an
evaluator. The trainer (mmjax.train) only talks to this interface, so new systems (memes,
emotion) plug in by registering a Task; the trainer itself does not change.

A Task provides:
  prepare(log)                     make sure the data exists (e.g. write a synthetic default)
  model                            a flax.linen Module; model.apply(variables, batch, train=...)
  example_batch(batch_size)        numpy batch of the right shapes/dtypes (for init and eval_shape)
  loss(outputs, batch) -> (loss, aux dict)
  predictions(outputs) -> array    what the evaluator consumes (e.g. sigmoid probabilities)
  train_dataset(batch_size, seed, process_index, process_count) -> checkpointable grain dataset
  eval_dataset(batch_size, process_index, process_count) -> one-pass grain dataset, same number
                                   of batches on every process, padding rows with batch['weight']=0
  new_evaluator() -> object with update(predictions, batch) and compute() -> dict
  evaluator_keys                   the batch keys the evaluator reads (only these are gathered
                                   to every process after an eval step)
and optionally
  pretrained_params(params) -> params or None   initial weights (e.g. a CLIP checkpoint) for a
                                   fresh run: a full params tree of host arrays, or None
"""

from typing import Callable, Dict

_REGISTRY: Dict[str, Callable] = {}


def register(name: str):
  """Class decorator adding a Task constructor (called with the config) to the registry."""
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def get_task(config):
  """Instantiates the task named by config.task (ValueError naming the key when unknown)."""
  # pylint: disable-next=import-outside-toplevel,unused-import
  from mmjax.tasks import clip_pretrain, emovclip, youtube8m  # noqa: F401
  if config.task not in _REGISTRY:
    raise ValueError(f"config.task={config.task!r}; registered tasks: {sorted(_REGISTRY)}")
  return _REGISTRY[config.task](config)
