"""Tasks: the `Task` protocol (mmjax.tasks.protocol) and the registry that `config.task` names.

Tasks live in the projects (`mmjax/projects/<system>/`), which register them with
`@register(name)` when imported. The registry finds them without a hand-kept list: the first
lookup of an unregistered name imports every package under `mmjax.projects` (by walking its
directory, not by naming them here), so the core never imports a project by name. A task
registered by user code before the lookup (any module that ran `@register`) is found as well.
"""

import importlib
import pkgutil
from typing import Callable, Dict

from mmjax.tasks.protocol import (
  DEFAULT_SPLIT,
  AfterEvaluation,
  Batch,
  EvalSplit,
  Evaluator,
  Model,
  OptimizerTransforms,
  Task,
  check_task,
)

__all__ = ["AfterEvaluation", "Batch", "DEFAULT_SPLIT", "EvalSplit", "Evaluator", "Model",
           "OptimizerTransforms", "Task", "check_task", "get_task", "register",
           "registered_tasks"]

PROJECTS_PACKAGE = "mmjax.projects"
_REGISTRY: Dict[str, Callable] = {}


def register(name: str):
  """Class decorator adding a Task constructor (called with the config) under `name`; a second
  class under the same name raises ValueError naming both."""
  def wrap(cls):
    previous = _REGISTRY.get(name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
      raise ValueError(f"task name {name!r} is registered twice: {previous.__module__}."
                       f"{previous.__qualname__} and {cls.__module__}.{cls.__qualname__}")
    _REGISTRY[name] = cls
    return cls
  return wrap


def discover_projects() -> None:
  """Imports every package under mmjax.projects (each registers its tasks on import)."""
  projects = importlib.import_module(PROJECTS_PACKAGE)
  for info in pkgutil.iter_modules(projects.__path__, PROJECTS_PACKAGE + "."):
    if info.ispkg:
      importlib.import_module(info.name)


def registered_tasks():
  """Sorted names of every task the projects (and user code) register."""
  discover_projects()
  return sorted(_REGISTRY)


def get_task(config) -> Task:
  """Instantiates the task named by config.task (ValueError listing the registered names when
  unknown; TypeError when the class does not implement the Task protocol)."""
  if config.task not in _REGISTRY:
    discover_projects()
  if config.task not in _REGISTRY:
    raise ValueError(f"config.task={config.task!r}; registered tasks: {sorted(_REGISTRY)}")
  task = _REGISTRY[config.task](config)
  check_task(task, config.task)
  return task
