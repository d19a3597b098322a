"""Reusable Flax linen layers (no dataset or task knowledge here)."""

from mmjax.nn.netvlad import ContextGating, NetVLAD, l2_normalize
from mmjax.nn.pooling import masked_mean
from mmjax.nn.transformer import EncoderBlock, TransformerEncoder

__all__ = ["ContextGating", "EncoderBlock", "NetVLAD", "TransformerEncoder", "l2_normalize",
           "masked_mean"]
