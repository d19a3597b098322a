"""A test task exercising every optional hook of mmjax.tasks.Task on top of the tiny YouTube-8M
task: a gradient-side optimizer transform (zero gradients for 'fusion/bias', so Adam never moves
it), a weight-side one (a fixed pruning mask on 'fusion/kernel'), task state
(an EMA of the parameters, a loss scale and an evaluation counter), an after-evaluation hook
(halves the loss scale, counts evaluations, optionally stops), all through the Task protocol.

Registered as 'hooked_youtube8m' on import; `hooked_config()` returns the tiny config for it.
`config.stop_after_evals` (default 0: never) makes after_evaluation request a stop.
"""

import jax
import jax.numpy as jnp
import optax

from mmjax.projects.youtube8m.task import Youtube8mTask
from mmjax.tasks import AfterEvaluation, OptimizerTransforms, register

EMA_DECAY = 0.9


def fusion_mask(params):
  """1 except in the first row of fusion/kernel (those weights are 'pruned')."""
  mask = jax.tree.map(jnp.ones_like, params)
  kernel = mask["fusion"]["kernel"]
  mask["fusion"]["kernel"] = kernel.at[0].set(0.0)
  return mask


def keep_masked_at_zero() -> optax.GradientTransformation:
  """Weight side: update u -> m * u - (1 - m) * p, so masked weights become exactly 0."""
  def update(updates, state, params=None):
    mask = fusion_mask(params)
    return jax.tree.map(lambda u, m, p: m * u - (1 - m) * p, updates, mask, params), state
  return optax.GradientTransformation(optax.init_empty_state, update)


def zero_fusion_bias_gradients() -> optax.GradientTransformation:
  """Gradient side: the gradient of fusion/bias becomes 0 (Adam's update is then exactly 0)."""
  def update(updates, state, params=None):
    del params
    updates = dict(updates, fusion=dict(updates["fusion"],
                                        bias=jnp.zeros_like(updates["fusion"]["bias"])))
    return updates, state
  return optax.GradientTransformation(optax.init_empty_state, update)


@register("hooked_youtube8m")
class HookedTask(Youtube8mTask):
  """Youtube8mTask plus every optional hook (module docstring)."""

  def optimizer_transforms(self):
    return OptimizerTransforms(gradient=(zero_fusion_bias_gradients(),),
                               weight=(keep_masked_at_zero(),))

  def init_task_state(self, params):
    return {"ema": jax.tree.map(jnp.asarray, params), "loss_scale": jnp.ones((), jnp.float32),
            "evaluations": jnp.zeros((), jnp.int32)}

  def update_task_state(self, task_state, params):
    ema = jax.tree.map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, task_state["ema"], params)
    return {**task_state, "ema": ema}

  def loss(self, logits, batch, task_state=None):
    loss, aux = super().loss(logits, batch)
    return task_state["loss_scale"] * loss, aux

  def after_evaluation(self, step, metrics, task_state):
    assert set(metrics) and all("gap" in m for m in metrics.values()), metrics
    new = dict(task_state, loss_scale=task_state["loss_scale"] * 0.5,
               evaluations=task_state["evaluations"] + 1)
    limit = self.config.get("stop_after_evals", 0)
    stop = bool(limit) and int(new["evaluations"]) >= limit
    return AfterEvaluation(task_state=new, stop=stop, reason="enough evaluations" if stop else "")


def hooked_config(load_config, stop_after_evals: int = 0):
  """ytb8m:tiny with task 'hooked_youtube8m' and the key stop_after_evals."""
  config = load_config("ytb8m", "tiny")
  with config.unlocked():
    config.task = "hooked_youtube8m"
    config.stop_after_evals = stop_after_evals
  return config
