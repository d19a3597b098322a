"""Evaluation metrics: YouTube-8M GAP / MAP / PERR / Hit@1, classification accuracy and
weighted F1, image-text retrieval recall; `LabelsEvaluator` adapts the label metrics
to a task's evaluator."""

from mmjax.metrics.classification import ClassificationMetrics
from mmjax.metrics.evaluator import HeadsEvaluator, LabelsEvaluator
from mmjax.metrics.retrieval import RetrievalMetrics
from mmjax.metrics.taxonomy import Taxonomy, load_taxonomy, read_taxonomy
from mmjax.metrics.youtube8m import Youtube8mMetrics, error_rates, gap, hit_at_1, mean_ap, perr

__all__ = [
    'ClassificationMetrics',
    'HeadsEvaluator',
    'LabelsEvaluator',
    'RetrievalMetrics',
    'Taxonomy',
    'Youtube8mMetrics',
    'error_rates',
    'gap',
    'hit_at_1',
    'load_taxonomy',
    'mean_ap',
    'perr',
    'read_taxonomy',
]
