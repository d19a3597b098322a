"""The Task protocol and the registry: projects are found without a hand-kept list, a class
that does not implement the protocol is refused by name, and the core never imports a project
(a walk over every import statement under mmjax/)."""

import ast
import pathlib

import pytest
from conftest import ROOT, load_config

from mmjax.tasks import Task, check_task, get_task, register, registered_tasks

CORE = pathlib.Path(ROOT) / "mmjax"
PROJECTS = CORE / "projects"


def _package_of(path: pathlib.Path) -> str:
  return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def _imported_modules(source: str, package: str):
  """Every module an import statement in `source` (a module of `package`) names, relative
  imports resolved, e.g. 'from ..projects import x' in mmjax.train -> 'mmjax.projects'."""
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module or ""
      yield module
      yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_core_never_imports_a_project():
  offenders = []
  for path in sorted(CORE.rglob("*.py")):
    if PROJECTS in path.parents:
      continue
    for module in _imported_modules(path.read_text(), _package_of(path)):
      if module == "mmjax.projects" or module.startswith("mmjax.projects."):
        offenders.append(f"{path.relative_to(ROOT)} imports {module}")
  assert not offenders, offenders
  assert (PROJECTS / "youtube8m" / "task.py").is_file()


def test_the_import_walk_would_catch_a_project_import():
  source = "import mmjax.projects.emovclip\nfrom ..projects import youtube8m\n"
  found = list(_imported_modules(source, "mmjax.train"))
  assert found == ["mmjax.projects.emovclip", "mmjax.projects", "mmjax.projects.youtube8m"]


def test_tasks_are_discovered_from_the_project_folders():
  names = registered_tasks()
  assert {"youtube8m", "clip_pretrain", "emovclip"} <= set(names)
  with pytest.raises(ValueError, match=r"config.task='nope'; registered tasks: \[.*'youtube8m'"):
    config = load_config("ytb8m", "tiny")
    config.task = "nope"
    get_task(config)


def test_every_project_has_a_readme_that_maps_the_paper():
  for folder in sorted(p for p in PROJECTS.iterdir() if (p / "__init__.py").is_file()):
    readme = (folder / "README.md").read_text()
    assert "Paper" in readme and "Deviations" in readme, folder.name


def test_registered_tasks_implement_the_protocol():
  for name in ("youtube8m", "clip_pretrain", "emovclip"):
    config = load_config({"youtube8m": "ytb8m"}.get(name, name), "tiny")
    task = get_task(config)
    assert isinstance(task, Task)


class _Incomplete(Task):
  """Has a model but no loss, datasets or evaluator."""
  model = None
  evaluator_keys = ("weight",)

  def __init__(self, config):
    self.config = config


class _Structural:
  """Does not subclass Task: must define every member, optional hooks included."""
  model = None
  evaluator_keys = ("weight",)

  def __init__(self, config):
    del config


@pytest.mark.parametrize("cls,missing", [
    (_Incomplete, "['prepare', 'example_batch', 'loss', 'predictions', 'train_dataset', "
                  "'eval_dataset', 'new_evaluator']"),
    (_Structural, "'optimizer_transforms', 'init_task_state'"),
])
def test_a_class_that_misses_members_is_refused_by_name(cls, missing):
  with pytest.raises(TypeError, match=rf"task 'probe' \({cls.__name__}\) does not implement"):
    check_task(cls(None), "probe")
  try:
    check_task(cls(None), "probe")
  except TypeError as e:
    assert missing in str(e)


def test_two_classes_under_one_name_are_refused():
  register("probe_twice")(_Incomplete)
  with pytest.raises(ValueError, match="task name 'probe_twice' is registered twice"):
    register("probe_twice")(_Structural)


def test_the_default_hooks_change_nothing():
  task = _Incomplete(None)
  assert task.init_task_state({"w": 1}) == {}
  assert task.update_task_state({"a": 1}, {"w": 1}) == {"a": 1}
  decision = task.after_evaluation(1, {"eval": {"loss": 1.0}}, {})
  assert decision.task_state is None and not decision.stop
  transforms = task.optimizer_transforms()
  assert not transforms.gradient and not transforms.weight
  assert task.pretrained_params({"w": 1}) is None
  assert task.pretrained_model_state({"batch_stats": {}}) is None
  assert task.compiler_options("cpu") == {}


def test_the_architecture_map_and_the_readme_layout_match_the_tree():
  architecture = (pathlib.Path(ROOT) / "docs" / "architecture.md").read_text()
  readme = (pathlib.Path(ROOT) / "README.md").read_text()
  for folder in sorted(p.name for p in PROJECTS.iterdir() if (p / "__init__.py").is_file()):
    assert f"{folder}/" in architecture and f"{folder}/" in readme, folder
  for hook in ("optimizer_transforms", "init_task_state", "update_task_state",
               "after_evaluation", "pretrained_params", "pretrained_model_state",
               "compiler_options", "init_from",
               "best_metric", "evals"):
    assert hook in architecture, hook
  for core in ("tasks/", "train/", "data/", "models/clip/", "nn/", "metrics/"):
    assert core in readme, core
