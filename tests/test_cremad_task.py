"""The CREMA-D task (mmjax/projects/cremad): batches of each input layout, modality ablation,
split files, pretrained weights through the task, Table 4's settings and the tables launcher."""

import json
import os

import jax
import numpy as np
import pytest
import torch
import torchvision

from mmjax import cli
from mmjax.projects.cremad import cells, clips, data, preprocess, tables
from mmjax.tasks import get_task
from tests.conftest import load_config


def _prepared(variants: str):
  """(config, task) of configs/cremad.py:<variants>,tiny with its data prepared."""
  config = load_config("cremad", f"{variants},tiny")
  task = get_task(config)
  task.prepare(lambda message: None)
  return config, task


def _batch(task, **overrides):
  data_config = task.data_config.copy_and_resolve_references()
  data_config.update(overrides)
  return next(iter(data.make_eval_dataset(data_config, batch_size=32, process_index=0,
                                          process_count=1)))


def _split_names(task, split="test"):
  return clips.read_split_file(task.data_config.split_file).splits[split]


@pytest.mark.parametrize("family", ["resnet18", "simple3d", "videomae"])
def test_multimodal_input_is_the_two_halves_side_by_side(family, cache_dir):
  del cache_dir
  config, task = _prepared(f"{family}_multimodal")
  both = _batch(task)
  vision, audio = _batch(task, modality="vision"), _batch(task, modality="audio")
  names = _split_names(task)
  n = len(names)
  assert both["inputs"].shape == (32,) + data.input_shape(config.data)
  np.testing.assert_array_equal(both["label"][:n], [clips.parse_clip_name(m).label for m in names])
  np.testing.assert_array_equal(both["weight"], np.arange(32) < n)
  assert both["inputs"].min() >= 0.0 and both["inputs"].max() <= 1.0
  columns = data.ablation_columns(config.data)
  if family == "videomae":  # frames and chunks squeezed to 208/224 and 16/224 of the width
    size = config.data.image_size
    assert vision["inputs"].shape[-3:-1] == audio["inputs"].shape[-3:-1] == (size, size)
    assert columns["vision"].stop == preprocess.videomae_widths(size)[0]
  else:
    np.testing.assert_array_equal(both["inputs"][..., columns["vision"], :], vision["inputs"])
    np.testing.assert_array_equal(both["inputs"][..., columns["audio"], :], audio["inputs"])
  ablated = _batch(task, ablate="vision")
  assert not ablated["inputs"][..., columns["vision"], :].any()
  np.testing.assert_array_equal(ablated["inputs"][..., columns["audio"], :],
                                both["inputs"][..., columns["audio"], :])
  if family == "simple3d":  # 3D CNNs: blank frames after each clip's end
    frames = both["frames"][:n]
    assert (frames <= config.data.max_frames).all()
    for i, count in enumerate(frames):
      assert not both["inputs"][i, count:].any()


def test_grayscale_inputs_and_bad_ablations(cache_dir):
  del cache_dir
  config, task = _prepared("vit_vision")
  assert config.data.grayscale and task.input_shape[-1] == 1
  gray = _batch(task)["inputs"]
  rgb = _batch(task, grayscale=False)["inputs"]
  np.testing.assert_allclose(gray[..., 0], rgb.mean(axis=-1), rtol=1e-6)
  with pytest.raises(ValueError, match=r"ablate='vision' needs a multimodal input"):
    _batch(task, ablate="vision")
  with pytest.raises(ValueError, match=r"config.data.ablate='face'"):
    _batch(task, ablate="face", modality="multimodal")


def test_split_files_are_written_reused_and_checked(cache_dir, tmp_path):
  del cache_dir
  config = load_config("cremad", "tiny")
  config.data.split_file = str(tmp_path / "split.json")
  config.data.split = "actor"
  task = get_task(config)
  task.prepare(lambda message: None)
  written = json.loads((tmp_path / "split.json").read_text())
  actors = {split: {clips.parse_clip_name(n).actor for n in names}
            for split, names in written["splits"].items()}
  assert actors["train"] and actors["test"] and not actors["train"] & actors["test"]
  assert written["meta"]["method"] == "actor"
  get_task(config).prepare(lambda message: None)  # reads the file, writes nothing
  assert json.loads((tmp_path / "split.json").read_text()) == written
  written["splits"]["test"].append("1090_IEO_HAP_HI")  # a clip the cache does not have
  (tmp_path / "split.json").write_text(json.dumps(written))
  with pytest.raises(ValueError, match=r"split.json.*1090_IEO_HAP_HI"):
    get_task(config).prepare(lambda message: None)


def test_torchvision_checkpoint_loads_into_the_encoder(tmp_path):
  config = load_config("cremad", "resnet18_audio,tiny")
  reference = torchvision.models.resnet18(weights=None)
  with torch.no_grad():
    reference.bn1.running_mean.normal_()
  torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
  config.model.checkpoint = str(tmp_path / "resnet18.pth")
  task = get_task(config)
  variables = jax.jit(task.model.init)(jax.random.key(0), task.example_batch(1))
  params = task.pretrained_params(variables["params"])
  np.testing.assert_array_equal(params["encoder"]["conv1"]["kernel"],
                                reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  head = params["encoder"]["fc"]["kernel"]  # 1000 -> 6 classes: a fresh head
  assert head.shape == (512, 6) and 0 < np.abs(head).max() < 1
  state = task.pretrained_model_state({"batch_stats": variables["batch_stats"]})
  np.testing.assert_array_equal(state["batch_stats"]["encoder"]["bn1"]["mean"],
                                reference.bn1.running_mean.numpy())
  config = load_config("cremad", "simple3d_audio,tiny")
  config.model.checkpoint = "weights.pth"
  with pytest.raises(ValueError, match="simple3d has no pretrained-weights format"):
    get_task(config).pretrained_params(variables["params"])


@pytest.mark.parametrize("cell", ["i3d_multimodal", "vit_vision", "vgg16_audio"])
def test_paper_variant_is_table4(cell):
  config = load_config("cremad", f"{cell},paper")
  setup = cells.PAPER_SETUP[cell]
  family = cells.ENCODERS[cells.split_cell(cell)[0]]
  per_epoch = -(-cells.PAPER_TRAIN_SIZE[family] // setup["batch_size"])
  assert (config.batch_size, config.optimizer.learning_rate, config.model.dropout_rate) == (
      setup["batch_size"], setup["learning_rate"], setup["dropout"])
  assert config.total_steps == setup["epochs"] * per_epoch
  assert config.data.image_size == 224 and config.data.max_frames == 135
  assert config.data.test_fraction == (0.3 if family == "2d" else 0.2)
  assert config.optimizer.name == "adam" and config.loss.name == "cross_entropy"


def test_tables_put_ours_next_to_the_paper_and_humans(tmp_path):
  results = {"i3d_multimodal": {"train": (0.5, 0.9), "test": (0.7, 0.8), "step": 4,
                                "ablated_vision": (2.5, 0.45), "ablated_audio": (1.9, 0.55),
                                "setup": "32 px, 8 frames"},
             "i3d_audio": {"train": (1.0, 0.6), "test": (1.1, 0.6), "step": 4, "setup": "a"}}
  text = tables.format_tables(results, "test machine")
  assert "Table 1: unimodal audio (human accuracy 0.409)" in text
  assert ("| i3d | 1.0000 | 0.6000 | 1.1000 | 0.6000 | 0.9910 / 0.6230 / 1.0220 / 0.6050 "
          "| a |") in text
  assert ("| ablated i3d | - | - | 2.5000 | 0.4500 | - / - / 2.7070 / 0.4480 "
          "| 32 px, 8 frames |") in text
  assert "| ablated i3d | - | - | 1.9000 | 0.5500 | - / - / 1.9280 / 0.5400 |" in text
  assert "Table 3: multimodal (human accuracy 0.636)" in text and "test machine" in text
  tables.plot_figure2(results, str(tmp_path / "figure2.png"))
  assert (tmp_path / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_cells_trains_and_collects_a_multimodal_cell(cache_dir, tmp_path):
  del cache_dir
  results = tables.run_cells(str(tmp_path), ["simple3d_multimodal"], variants=["tiny"],
                             log_fn=lambda message: None)
  row = results["simple3d_multimodal"]
  assert row["step"] == 4 and set(row) == {"train", "test", "step", "ablated_vision",
                                           "ablated_audio", "setup"}
  assert row["setup"] == "32 px, 8 frames, tiny model, batch 4, lr 0.001, 4 steps"
  for loss, accuracy in (row[k] for k in ("train", "test", "ablated_vision", "ablated_audio")):
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
  assert json.loads((tmp_path / "results.json").read_text())["simple3d_multimodal"]["step"] == 4
  mtime = os.path.getmtime(tmp_path / "simple3d_multimodal" / "metrics.jsonl")
  tables.run_cells(str(tmp_path), ["simple3d_multimodal"], variants=["tiny"],
                   log_fn=lambda message: None)  # finished: not trained again
  assert os.path.getmtime(tmp_path / "simple3d_multimodal" / "metrics.jsonl") == mtime
  text = tables.write_outputs(str(tmp_path), results)
  assert "| simple3d |" in text and (tmp_path / "figure2.png").is_file()


def test_tables_hold_every_finished_cell_under_the_root(tmp_path):
  """Cells trained by earlier invocations (other budgets) join the tables; a cell whose run
  stopped before its total_steps is left out, and said so."""
  def fake_cell(cell, total_steps, last_step, image_size):
    workdir = tmp_path / cell
    workdir.mkdir()
    config = {"data": {"image_size": image_size, "family": "2d", "layout": "cnn",
                       "max_frames": 135, "num_frames": 32},
              "model": {"size": "paper"}, "batch_size": 16,
              "optimizer": {"learning_rate": 1e-4}, "total_steps": total_steps}
    (workdir / "config.json").write_text(json.dumps(config))
    records = [{"split": split, "step": last_step, "loss_emotion": 1.5, "accuracy": 0.25}
               for split in ("eval", "train_split")]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  fake_cell("vgg16_audio", 100, 100, 32)
  fake_cell("vit_vision", 200, 66, 64)
  said = []
  results = tables.collect_finished(str(tmp_path), said.append)
  assert list(results) == ["vgg16_audio"]
  assert results["vgg16_audio"]["setup"] == "32 px, batch 16, lr 0.0001, 100 steps"
  assert results["vgg16_audio"]["test"] == (1.5, 0.25)
  assert len(said) == 1 and "vit_vision" in said[0] and "not finished" in said[0]


def test_unknown_cells_and_encoders_are_named():
  with pytest.raises(ValueError, match=r"unknown cell 'resnet50_audio'"):
    cells.split_cell("resnet50_audio")
  with pytest.raises(ValueError, match=r"unknown variant\(s\) \['i3d_smell'\]"):
    load_config("cremad", "i3d_smell")


def test_launcher_overrides_parse_literals_and_name_bad_pairs():
  assert cli.parse_overrides(["data.max_frames=60", "optimizer.learning_rate=1e-4",
                              "data.root=/data/CREMA-D"]) == {
      "data.max_frames": 60, "optimizer.learning_rate": 1e-4, "data.root": "/data/CREMA-D"}
  with pytest.raises(ValueError, match=r"--set 'data.max_frames': expected key=value"):
    cli.parse_overrides(["data.max_frames"])
