"""MER fusion train steps (`launch/benchmark.py --suite=mer`): the MER2023 system (seed 004,
configs/mer2023.py: three attention-fusion structures, each one acoustic and two visual feature
sets, joint decoders, AWL loss) and the MER2024 fusion network (seed 003, configs/mer2024.py:
mdrop, one attention fusion over audio, image, text and video with modality dropout 0.3), at
the papers' utterance-level feature sizes, against a stock PyTorch MER2023 model.

Random features and labels: no feature file is read (the task's `example_batch`, which the
train state's initialisation calls, reads the field sizes from a one-row split file written to
a temporary folder). Feature sizes, D of each field (`SYSTEMS`' dims; frame-level features pooled
to concat(mean, variance), MERTools' 'meanvar'):
  MER2023  hubert18, hubert19, hubert20 (HuBERT-large layers 18-20, 2 x 1024), manet (1024:
           our assumption for MANet's utterance-level feature, which the papers do not state),
           resnet (ResNet-50, 2 x 2048)
  MER2024  audio (HuBERT-large, 2 x 1024), image (CLIP ViT-L/14, 768, utterance-level), text
           (Baichuan-13B, 5120, utterance-level; added to configs/mer2024.py's three
           modalities, the paper's fourth), video (EmoVCLIP, ViT-B/32's 512, 2 x 512)
or every field `feature_dim` wide (a quick check). Hidden and embedding widths: the configs' (128,
64) unless given.

What is timed:
* per system, the real train step of its task (`mmjax.benchmarking.task_train_step_benchmark`:
  Adam, dropout, the config's loss) -> examples/s, XLA's FLOPs and memory, peak RSS;
* `torch_reference.torch_train_step_benchmark`: the same MER2023 model in eager PyTorch (zero_grad,
  forward, loss, backward, Adam step) on the same random batches, on as many threads as there
  are cores unless `torch_threads` says otherwise -> examples/s and mmjax / torch, of the mean
  and of the fastest steps (on a CPU shared with other processes, torch's OpenMP threads wait
  for each other at every op, so its mean moves more than its fastest step).
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from typing import Any, Mapping

import numpy as np

from mmjax import benchmarking
from mmjax.benchmarking import fmt
from mmjax.config_files import load_checkout_config
from mmjax.data import modality_arrays
from mmjax.projects.mer2023 import torch_reference
from mmjax.projects.youtube8m.torch_reference import UNITS as COMPARISON_UNITS
from mmjax.projects.youtube8m.torch_reference import comparison
from mmjax.tasks.mer_fusion import EXTRA_FIELDS
from mmjax.train import multirun

UNITS: dict[str, str | None] = {**COMPARISON_UNITS, "hidden": None, "embed": None,
                                "modality_dropout": None, "num_threads": None,
                                "jax_over_torch_fastest": "1"}


@dataclasses.dataclass(frozen=True)
class System:
  """A benchmarked MER system: configs/<config>.py:<variants>, `extra_features` ({field:
  MERTools directory}) added to every structure, and the papers' feature sizes {field: D}."""
  title: str
  config: str
  variants: str
  dims: Mapping[str, int]
  extra_features: Mapping[str, str] = dataclasses.field(default_factory=dict)


SYSTEMS = {
    "mer2023": System("MER2023", "mer2023", "", {"hubert18": 2048, "hubert19": 2048,
                                                 "hubert20": 2048, "manet": 1024,
                                                 "resnet": 4096}),
    "mer2024": System("MER2024", "mer2024", "mdrop",
                      {"audio": 2048, "image": 768, "text": 5120, "video": 1024},
                      {"text": "baichuan-13b-UTT"}),
}


def system_config(name: str, *, batch_size: int, hidden: int = 0, embed: int = 0):
  """The config of SYSTEMS[name] with its extra features, config.batch_size = `batch_size`
  and model.hidden / model.embed where given (0: the config's)."""
  system = SYSTEMS[name]
  config = load_checkout_config(system.config, system.variants)
  features = {**config.data.mertools.features, **system.extra_features}
  fields = tuple(sorted(features))
  values = {"batch_size": int(batch_size), "data.mertools.features": features,
            "data.modalities": fields, "data.fields": fields + EXTRA_FIELDS,
            "model.structures": tuple(tuple(sorted({*s, *system.extra_features}))
                                      for s in config.model.structures)}
  values.update({f"model.{key}": int(width) for key, width in (("hidden", hidden),
                                                                ("embed", embed)) if width})
  return multirun.with_values(config, **values)


def random_batch(dims: Mapping[str, int], num_classes: int, batch_size: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A MER fusion batch: {field: [B, D] standard normal} for `dims` {field: D}, 'valence' [B]
  uniform in [-1, 1), 'label' [B] int32 uniform over the classes, 'labelled' and 'weight' [B]
  ones, 'modality_mask' [B, F] ones (every modality present)."""
  batch = {f: rng.normal(size=(batch_size, d)).astype(np.float32) for f, d in dims.items()}
  return {**batch, "valence": rng.uniform(-1, 1, batch_size).astype(np.float32),
          "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
          "labelled": np.ones(batch_size, np.float32), "weight": np.ones(batch_size, np.float32),
          "modality_mask": np.ones((batch_size, len(dims)), np.float32)}


def step_benchmark(config, dims: Mapping[str, int], *, steps: int,
                   warmup: int = 1) -> dict[str, Any]:
  """Examples/s of the train step of the MER fusion task `config` names, on `random_batch`es
  of the feature sizes `dims` (module docstring).

  Returns:
    `task_train_step_benchmark`'s result with 'task', 'structures' (text), 'features' (text:
    'field D, ...'), 'hidden', 'embed', 'modality_dropout'.
  """
  with tempfile.TemporaryDirectory(prefix="mmjax_mer_bench_") as directory:
    config = multirun.with_values(config, **{"data.directory": directory})
    modality_arrays.write_split(
        modality_arrays.split_path(config.data, "train_split"), labels=np.zeros(1), ids=["0"],
        fields={f: np.zeros((1, d), np.float32) for f, d in dims.items()})
    result, _ = benchmarking.task_train_step_benchmark(
        config, lambda task, n, rng: random_batch(dims, task.num_classes, n, rng),
        batch_size=config.batch_size, steps=steps, warmup=warmup)
  m = config.model
  return {"task": config.task, "structures": " | ".join("+".join(s) for s in m.structures),
          "features": ", ".join(f"{f} {d}" for f, d in sorted(dims.items())),
          "hidden": int(m.hidden), "embed": int(m.embed),
          "modality_dropout": float(m.modality_dropout), **result}


# -------------------------------------------------------------------------------------------
# The suite, its table and its records.


def run_suite(*, batch_size: int = 32, steps: int = 50, warmup: int = 5, feature_dim: int = 0,
              hidden: int = 0, embed: int = 0, torch_threads: int = 0) -> dict[str, Any]:
  """Both systems' train steps, then the torch MER2023 step; progress goes to stderr.

  Args:
    batch_size: examples per train step (JAX and torch).
    steps: timed steps of each.
    warmup: untimed steps after the first.
    feature_dim: 0: the papers' feature sizes (`SYSTEMS`); N: every feature N wide.
    hidden, embed: model.hidden / model.embed (0: the configs', 128 and 64).
    torch_threads: torch's intra-op threads (0: the cores available, as XLA's CPU client).

  Returns:
    The results dict that `report` formats: 'hardware', 'load_average_start', 'settings',
    'steps' ({system: `step_benchmark` and 'peak_rss_mb'}), 'torch' ({'mer2023': the torch
    result, 'peak_rss_mb' and `comparison`'s 'jax_examples_per_s', 'torch_examples_per_s',
    'jax_over_torch', XLA's 'flops_per_step' and both TFLOP/s, and 'jax_over_torch_fastest':
    the ratio of the fastest steps, less moved by other processes}), 'memory',
    'load_average_end'.
  """
  results = benchmarking.start_suite({"batch_size": batch_size, "steps": steps,
                                      "warmup": warmup, "feature_dim": feature_dim,
                                      "hidden": hidden, "embed": embed,
                                      "torch_threads": torch_threads})
  results["steps"], configs, dims = {}, {}, {}
  for name, system in SYSTEMS.items():
    configs[name] = system_config(name, batch_size=batch_size, hidden=hidden, embed=embed)
    dims[name] = {f: feature_dim or d for f, d in system.dims.items()}
    benchmarking.log(f"MER train step: {system.title}, batch {batch_size}")
    results["steps"][name] = benchmarking.run_phase(step_benchmark, configs[name], dims[name],
                                                    steps=steps, warmup=warmup)
  benchmarking.log(f"torch train step: MER2023, batch {batch_size}")
  config = configs["mer2023"]
  torch_result = benchmarking.run_phase(
      torch_reference.torch_train_step_benchmark, config, dims["mer2023"],
      functools.partial(random_batch, dims["mer2023"], int(config.data.num_classes)),
      batch_size=batch_size, steps=steps, warmup=warmup, num_threads=torch_threads or None)
  jax_result = results["steps"]["mer2023"]
  results["torch"] = {"mer2023": {
      **torch_result, **comparison(jax_result, torch_result, {}),
      "jax_over_torch_fastest": torch_result["step_min_s"] / jax_result["step_min_s"]}}
  return benchmarking.finish_suite(results)


def _title(name: str, r: Mapping[str, Any]) -> str:
  structures = r["structures"].split(" | ")
  what = (f"{len(structures)} attention fusions, joint decoders, AWL" if len(structures) > 1
          else f"attention fusion, modality dropout {r['modality_dropout']:g}")
  return (f"train step: {SYSTEMS[name].title} ({what}; H={r['hidden']}, E={r['embed']}, "
          f"B={r['batch_size']})")


def report(results: dict) -> str:
  """A header line and the table of `run_suite`'s results."""
  rows = []
  for name, r in results["steps"].items():
    rows += [(_title(name, r), "parameters", fmt(r["params"])),
             ("", "structures", r["structures"]), ("", "features (D)", r["features"]),
             *benchmarking.timing_rows(r["compile_s"], r["first_step_s"], r["step_s"],
                                       r["step_min_s"]),
             ("", "throughput", fmt(r["examples_per_s"], " examples/s")),
             *benchmarking.flops_rows(r), *benchmarking.compiled_memory_rows(r),
             ("", "process peak RSS in phase", fmt(r["peak_rss_mb"], " MB"))]
  for name, t in results["torch"].items():
    rows += [(f"torch {t['torch_version']} eager: {SYSTEMS[name].title} (same shape, Adam, "
              f"{t['num_threads']} thread{'s' * (t['num_threads'] != 1)})", "parameters",
              fmt(t["params"])),
             ("", "first step", fmt(t["first_step_s"], " s")),
             ("", "step (mean / min)", f"{fmt(t['step_s'], ' s')} / "
              f"{fmt(t['step_min_s'], ' s')}"),
             ("", "throughput", fmt(t["examples_per_s"], " examples/s")),
             ("", "mmjax / torch (mean / fastest steps)",
              f"{t['jax_over_torch']:.2f}x / {t['jax_over_torch_fastest']:.2f}x"),
             ("", "process peak RSS in phase", fmt(t["peak_rss_mb"], " MB"))]
  return benchmarking.report("mmjax MER fusion benchmark", results, rows)


def records(results: dict, suite: str, **kwargs) -> list[dict[str, Any]]:
  """One JSON record per measurement, named '<suite>/steps/<system>/...' and
  '<suite>/torch/mer2023/...' (`mmjax.benchmarking.to_records`; kwargs: its `timestamp`)."""
  return benchmarking.to_records(suite, results, UNITS, **kwargs)
