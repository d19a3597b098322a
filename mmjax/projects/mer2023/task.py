"""The MER2023 system's task (seed 004): mmjax.tasks.mer_fusion.MerFusionTask (three
acoustic-visual structures, joint decoders, entropy fusion, uncertainty weighting;
configs/mer2023.py) registered as 'mer2023'."""

from mmjax.tasks import register
from mmjax.tasks.mer_fusion import MerFusionTask

register("mer2023")(MerFusionTask)
