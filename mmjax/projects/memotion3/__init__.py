"""Seed 000 (Memotion 3: CLIP models, attention fusion, ensembles): see README.md in this folder.

Importing the package registers the tasks 'clip_pretrain' (pretrain_task) and 'memotion3' (task).
"""

from mmjax.projects.memotion3 import pretrain_task, task

__all__ = ["pretrain_task", "task"]
