"""Reusable Flax linen layers (no dataset or task knowledge here)."""

from mmjax.nn.dense import Dense
from mmjax.nn.netvlad import ContextGating, NetVLAD
from mmjax.nn.normalize import l2_normalize
from mmjax.nn.pooling import masked_mean
from mmjax.nn.transformer import EncoderBlock, Mlp, SelfAttention, TransformerEncoder, activation

__all__ = ["ContextGating", "Dense", "EncoderBlock", "Mlp", "NetVLAD", "SelfAttention",
           "TransformerEncoder", "activation", "l2_normalize", "masked_mean"]
