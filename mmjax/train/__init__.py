"""Trainer: jit-compiled sharded steps, Orbax checkpoints, logging, evaluation."""

from mmjax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
from mmjax.train.trainer import NonFiniteLossError, evaluate_checkpoint, train_and_evaluate

__all__ = ["PREEMPTED_EXIT_CODE", "NonFiniteLossError", "Preempted", "evaluate_checkpoint",
           "train_and_evaluate"]
