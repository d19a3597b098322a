"""Seed 000 (Memotion 3: CLIP models, attention fusion, ensembles): see README.md in this folder."""

from mmjax.projects.memotion3 import pretrain_task  # noqa: F401  (registers 'clip_pretrain')
