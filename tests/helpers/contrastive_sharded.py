"""CLIP contrastive loss and its gradients with the batch sharded over 8 (fake CPU) devices vs
one device; prints a JSON summary. Invoked by tests/test_contrastive_sharding.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (must be set before jax starts)."""

import json
import re

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.losses import clip_contrastive_loss
from mmjax.tasks import Task
from mmjax.train.steps import create_train_state, make_eval_step, make_train_step

BATCH, FEATURES, EMBED = 16, 6, 4


def loss_fn(params, image_features, text_features, weight):
  """Projections as in CLIP (W_i f_i, W_t f_t), then the loss; params are replicated."""
  return clip_contrastive_loss(image_features @ params["image_projection"],
                               text_features @ params["text_projection"],
                               params["logit_scale"], weight)


def inputs():
  rng = np.random.default_rng(0)
  params = {"image_projection": rng.normal(size=(FEATURES, EMBED)).astype(np.float32),
            "text_projection": rng.normal(size=(FEATURES, EMBED)).astype(np.float32),
            "logit_scale": np.float32(np.log(1 / 0.07))}
  image = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
  text = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
  weight = np.ones(BATCH, np.float32)
  weight[[3, 9, 15]] = 0  # padding rows on different shards
  return params, image, text, weight


def max_rel_diff(a, b) -> float:
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))) /
                                          max(1.0, float(np.max(np.abs(np.asarray(y)))))), a, b)
  return max(jax.tree.leaves(diffs))


class _TwoTowers(nn.Module):
  """Linear image / text projections and CLIP's logit scale."""

  @nn.compact
  def __call__(self, batch, train: bool = False):
    del train
    return {"image_embeds": nn.Dense(EMBED, use_bias=False, name="visual_projection")(
                batch["image"]),
            "text_embeds": nn.Dense(EMBED, use_bias=False, name="text_projection")(
                batch["text"]),
            "logit_scale": self.param("logit_scale", nn.initializers.constant(2.6592), ())}


class _Task(Task):
  """The parts of the task interface that mmjax.train.steps uses (the rest: Task's defaults)."""
  model = _TwoTowers()
  evaluator_keys = ("weight",)

  def example_batch(self, batch_size):
    return {"image": np.zeros((batch_size, FEATURES), np.float32),
            "text": np.zeros((batch_size, FEATURES), np.float32),
            "weight": np.ones((batch_size,), np.float32)}

  def loss(self, outputs, batch, task_state=None):
    return clip_contrastive_loss(outputs["image_embeds"], outputs["text_embeds"],
                                 outputs["logit_scale"], batch["weight"]), {}

  def predictions(self, outputs):
    return outputs["image_embeds"]


def train_steps(mesh_axes, devices):
  """Two train steps and one eval step of _Task through mmjax.train.steps (MeshJit)."""
  _, image, text, weight = inputs()
  batch = {"image": image, "text": text, "weight": weight}
  mesh = parallel.make_mesh(mesh_axes, devices=devices)
  task, tx = _Task(), optax.sgd(0.5)
  state, shardings = create_train_state(task, tx, mesh, (), seed=0)
  train_step, eval_step = make_train_step(task, tx, mesh, shardings), make_eval_step(
      task, mesh, shardings)
  global_batch = parallel.global_batch(batch, mesh)
  jaxpr = str(train_step.trace(state, global_batch).jaxpr)
  losses = []
  for _ in range(2):
    state, metrics = train_step(state, global_batch)
    losses.append(float(metrics["loss"]))
  _, _, eval_loss_sum, _ = eval_step(state, global_batch)
  return {"losses": losses, "eval_loss_sum": float(eval_loss_sum),
          "params": {parallel.path_to_str(path): np.asarray(x).tolist()
                     for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]},
          "jaxpr_shard_map": "shard_map" in jaxpr}


def main():
  params, image, text, weight = inputs()
  value_and_grad = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))
  single_device = jax.devices()[0]
  single = jax.jit(value_and_grad)(*jax.device_put((params, image, text, weight), single_device))
  summary = {"devices": jax.device_count(), "single_loss": float(single[0])}
  for axes in ([("data", 8)], [("data", 4), ("model", 2)]):
    mesh = parallel.make_mesh(axes)
    batch = NamedSharding(mesh, P("data"))
    args = (jax.device_put(params, parallel.replicated(mesh)), jax.device_put(image, batch),
            jax.device_put(text, batch), jax.device_put(weight, batch))
    step = jax.jit(value_and_grad)
    with jax.set_mesh(mesh):
      jaxpr = str(jax.make_jaxpr(value_and_grad)(*args))
      hlo = step.lower(*args).compile().as_text()
      value, grads = step(*args)
      # Called by hand inside a shard_map over 'data' (local shards in, global loss out).
      manual = jax.jit(jax.shard_map(
          lambda p, i, t, w: loss_fn(p, i, t, w), in_specs=(P(), P("data"), P("data"),
                                                            P("data")),
          out_specs=P(), axis_names={"data"}))(*args)
    name = "x".join(f"{n}{s}" for n, s in axes)
    summary[name] = {
        "loss": float(value), "max_grad_rel_diff": max_rel_diff(grads, single[1]),
        "manual_loss": float(manual),
        # The auto-partitioner inserts all-gathers for the direct path too, so the shard_map
        # path is identified by its primitives in the jaxpr; the HLO must gather as well.
        "jaxpr_shard_map": "shard_map" in jaxpr, "jaxpr_all_gather": "all_gather" in jaxpr,
        "hlo_collectives": sorted(set(re.findall(r"\b(all-gather|all-reduce|reduce-scatter)\b",
                                                 hlo)))}
  summary["steps_sharded"] = train_steps([("data", 4), ("model", 2)], jax.devices())
  summary["steps_single"] = train_steps([("data", 1), ("model", 1)], jax.devices()[:1])
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
