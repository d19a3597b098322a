"""Seed 001 (cross-modal video categorization on YouTube-8M): see README.md in this folder."""

# Registers the tasks 'youtube8m' and 'youtube8m_correlation'.
from mmjax.projects.youtube8m import correlation, task  # noqa: F401
