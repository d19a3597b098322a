"""Seed 001 (cross-modal video categorization on YouTube-8M): see README.md in this folder."""

from mmjax.projects.youtube8m import task  # noqa: F401  (registers 'youtube8m')
