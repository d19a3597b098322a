"""One pass over the eval split with progress output; returns the evaluator's metrics."""

import logging
import time

import jax
import numpy as np

from mmjax import parallel

log = logging.getLogger("mmjax")


def evaluate(task, eval_step, state, mesh, *, batch_size: int, log_every_batches: int = 20):
  """Runs `eval_step` over task.eval_dataset; returns evaluator.compute() plus 'loss', the
  task loss averaged over all real (weight 1) eval examples.

  `batch_size` is global; each process reads batch_size / process_count examples per step.
  """
  local_batch = batch_size // jax.process_count()
  dataset = task.eval_dataset(local_batch, jax.process_index(), jax.process_count())
  evaluator = task.new_evaluator()
  start = time.time()
  num_batches, loss_sum, weight_sum = 0, 0.0, 0.0
  for num_batches, local in enumerate(dataset, start=1):
    predictions, batch, batch_loss, batch_weight = eval_step(state,
                                                             parallel.global_batch(local, mesh))
    evaluator.update(jax.tree.map(np.asarray, predictions), jax.tree.map(np.asarray, batch))
    loss_sum, weight_sum = loss_sum + float(batch_loss), weight_sum + float(batch_weight)
    if num_batches % log_every_batches == 0:
      log.info("eval: %d batches (%.1f examples/s)", num_batches,
               num_batches * batch_size / (time.time() - start))
  metrics = {"loss": loss_sum / max(weight_sum, 1.0), **evaluator.compute()}
  log.info("eval: done, %d batches in %.1fs", num_batches, time.time() - start)
  return metrics
