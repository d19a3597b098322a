"""Optax transforms and pytree tools for the optimizer chain's extension points
(`config.optimizer.gradient_transforms` / `weight_transforms`, see mmjax.train.optimizer).

  pruning: PNAO structured node pruning (MER2023, seed 004): L1 sparse training, node importance,
  global node masks, masked training and compaction of the pruned network.
"""
