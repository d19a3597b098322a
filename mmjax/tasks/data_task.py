"""The Task side of the data modules: a `Task` (mmjax.tasks) whose datasets are the builders of
one mmjax.data module (image_text, labelled_video, pipeline):

  make_train_dataset(data_config, *args, batch_size=, seed=, process_index=, process_count=)
  make_eval_dataset(data_config, *args, batch_size=, process_index=, process_count=)

and whose `prepare` is the module's `resolve_files(data_config, log)`, which returns the files
of its config.data keys `FILE_KEYS` (the configured ones, or the synthetic default).
"""

from typing import Any

from mmjax.data import cache
from mmjax.tasks import DEFAULT_SPLIT, EvalSplit, Task


class DataModuleTask(Task):
  """A Task reading the data module `data_module` (module docstring).

  Subclasses set the class attribute `data_module`; `dataset_args` holds the builders' extra
  positional arguments (e.g. a tokenizer). The datasets read `data_config`: config.data,
  resolved by `prepare`, with an eval split's overrides applied.
  """

  data_module: Any = None
  dataset_args: tuple = ()

  def __init__(self, config):
    self.config = config
    self.data_config = config.data

  def prepare(self, log=print) -> None:
    """Resolves the data files (module docstring; the synthetic default is written once)."""
    self.data_config = cache.resolved_data_config(self.config.data, self.data_module.resolve_files,
                                                  self.data_module.FILE_KEYS, log)

  def train_dataset(self, batch_size, seed, process_index, process_count):
    return self.data_module.make_train_dataset(
        self.data_config, *self.dataset_args, batch_size=batch_size, seed=seed,
        process_index=process_index, process_count=process_count)

  def eval_dataset(self, batch_size, process_index, process_count,
                   split: EvalSplit = DEFAULT_SPLIT):
    return self.data_module.make_eval_dataset(
        split.data_config(self.data_config), *self.dataset_args, batch_size=batch_size,
        process_index=process_index, process_count=process_count)
