"""Trainer: jit-compiled sharded steps, Orbax checkpoints, logging, evaluation."""

from mmjax.train.trainer import NonFiniteLossError, evaluate_checkpoint, train_and_evaluate

__all__ = ["NonFiniteLossError", "evaluate_checkpoint", "train_and_evaluate"]
