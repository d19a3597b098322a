"""Seed 003 (EmoVCLIP, MER2024): see README.md in this folder."""

from mmjax.projects.emovclip import task  # noqa: F401  (registers 'emovclip')
