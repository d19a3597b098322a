"""The MER2024 system's fusion task (seed 003, eq. 1-2): mmjax.tasks.mer_fusion.MerFusionTask
with one attention fusion structure over the audio, image and video (EmoVCLIP) features and
modality dropout before the fusion (configs/mer2024.py), registered as 'mer2024_fusion'."""

from mmjax.tasks import register
from mmjax.tasks.mer_fusion import MerFusionTask

register("mer2024_fusion")(MerFusionTask)
