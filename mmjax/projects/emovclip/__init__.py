"""Seed 003 (EmoVCLIP, MER2024): see README.md in this folder."""

from mmjax.projects.emovclip import fusion_task, task  # noqa: F401  (register the tasks)
