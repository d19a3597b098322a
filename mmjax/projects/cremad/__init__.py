"""Seed 002 (CREMA-D: shared encoders over face frames and mel spectrograms joined into one
input): see README.md in this folder.

Importing the package registers the task 'cremad' (task).
"""

from mmjax.projects.cremad import task

__all__ = ["task"]
