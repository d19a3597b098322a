"""Video classifiers: every model/fusion combination builds, and padding never changes a logit."""

import jax
import numpy as np
import pytest
from conftest import load_config

from mmjax.projects.youtube8m.model import build_crossmodal_classifier, build_video_classifier


def _batch(rng, frames, lengths, num_classes=16):
  mask = (np.arange(frames)[None] < np.array(lengths)[:, None]).astype(np.float32)
  return {"rgb": rng.normal(size=(len(lengths), frames, 1024)).astype(np.float32),
          "audio": rng.normal(size=(len(lengths), frames, 128)).astype(np.float32),
          "mask": mask}


@pytest.mark.parametrize("name,fusion", [
    (name, fusion) for name in ("transformer", "netvlad", "attention_rnn")
    for fusion in ("early", "late")] + [("transformer", "cmc"), ("netvlad", "cmg")])
def test_padding_is_invisible(name, fusion):
  config = load_config("ytb8m", "tiny")
  config.model.name, config.model.fusion, config.model.dropout_rate = name, fusion, 0.0
  model = build_video_classifier(config.model, feature_names=("rgb", "audio"), num_classes=16,
                                 max_frames=12)
  rng = np.random.default_rng(0)
  batch = _batch(rng, 8, [8, 5, 2])
  variables = model.init(jax.random.PRNGKey(0), batch, train=False)
  padded = {k: np.concatenate([v, 9.0 * np.ones((3, 4) + v.shape[2:], np.float32)], axis=1)
            for k, v in batch.items() if k != "mask"}
  padded["mask"] = np.concatenate([batch["mask"], np.zeros((3, 4), np.float32)], axis=1)
  for train in (False, True):
    run = lambda b, train=train: model.apply(variables, b, train=train,
                                              mutable=["batch_stats"])[0]
    np.testing.assert_allclose(run(padded), run(batch), atol=1e-4)
  names = set(variables["params"])
  if fusion in ("early", "late"):
    expected_towers = {"joint_tower"} if fusion == "early" else {"rgb_tower", "audio_tower"}
    assert names == expected_towers | {"fusion", "classifier"}
  else:
    assert {"correlation", "crossmodal", "fusion", "classifier"} <= names


@pytest.mark.parametrize("name", ["transformer", "netvlad", "attention_rnn"])
def test_cmg_with_the_gate_forced_to_zero_is_the_model_without_the_cross_term(name):
  config = load_config("ytb8m", f"tiny,{name}_cmg")
  config.model.dropout_rate = 0.0
  build = lambda cross: build_crossmodal_classifier(config.model, num_classes=16, max_frames=8,
                                                    cross=cross)
  batch = _batch(np.random.default_rng(1), 8, [8, 5, 2])
  variables = build(True).init(jax.random.PRNGKey(0), batch, train=False)
  run = lambda model, v: model.apply(v, batch, train=False)
  # The tower says "uncorrelated" (p = sigmoid(-1e4) = 0): the gate removes the cross term.
  closed = jax.tree.map(lambda x: x, variables)
  closed["params"]["correlation"]["output"]["bias"] = np.full((1,), -1e4, np.float32)
  np.testing.assert_array_equal(run(build(True), closed), run(build(False), closed))
  assert np.abs(np.asarray(run(build(True), variables) - run(build(False), variables))).max() > 0


def test_netvlad_cluster_counts_and_classifier_prior():
  config = load_config("ytb8m")
  config.model.name, config.model.fusion = "netvlad", "late"
  config.model.netvlad.hidden_size = 8
  model = build_video_classifier(config.model, feature_names=("rgb", "audio"), num_classes=3862,
                                 max_frames=4)
  batch = _batch(np.random.default_rng(0), 4, [4])
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
  params = shapes["params"]
  assert params["rgb_tower"]["netvlad"]["centers"].shape == (128, 1024)  # seed 001: 128 video
  assert params["audio_tower"]["netvlad"]["centers"].shape == (64, 128)  # and 64 audio clusters
  assert params["rgb_tower"]["netvlad_hidden"]["kernel"].shape == (128 * 1024, 8)
  variables = model.init(jax.random.PRNGKey(0), batch, train=False)
  np.testing.assert_allclose(variables["params"]["classifier"]["bias"], -np.log(3861), rtol=1e-6)


@pytest.mark.parametrize("key,value,match", [("name", "gru", "config.model.name"),
                                             ("fusion", "middle", "config.model.fusion")])
def test_bad_model_config_names_the_key(key, value, match):
  config = load_config("ytb8m", "tiny")
  config.model[key] = value
  with pytest.raises(ValueError, match=match):
    build_video_classifier(config.model, feature_names=("rgb", "audio"), num_classes=4,
                           max_frames=4)
