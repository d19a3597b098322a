"""MER2023 (seed 004): entropy-based decision fusion and PNAO (README.md)."""

from mmjax.projects.mer2023 import task  # noqa: F401  (registers the task)
