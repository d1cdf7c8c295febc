"""Sliceable ("dynamic") modules: a converted layer keeps its parameters and slices them in forward."""

from nasprune_cli.dynamic.attention import DynamicRelativePositionalMultiHeadAttention, DynamicShiftedWindowAttention
from nasprune_cli.dynamic.base import DYNAMIC_REGISTRY, DynamicModule, is_dynamic, make_dynamic, register
from nasprune_cli.dynamic.conv import (
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
)
from nasprune_cli.dynamic.convnext import DynamicCNBlock, DynamicLayerNorm2d
from nasprune_cli.dynamic.custom import CUSTOM_LAYERS, LayerSpec, register_layer
from nasprune_cli.dynamic.linear import DynamicLinear
from nasprune_cli.dynamic.norm import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicGroupNorm,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
    DynamicLayerNorm,
    DynamicSyncBatchNorm,
)
from nasprune_cli.dynamic.sequential import DynamicSequential
from nasprune_cli.dynamic.subclass import registered_parent

__all__ = [
    "CUSTOM_LAYERS",
    "LayerSpec",
    "register_layer",
    "registered_parent",
    "DYNAMIC_REGISTRY",
    "DynamicBatchNorm1d",
    "DynamicCNBlock",
    "DynamicBatchNorm2d",
    "DynamicBatchNorm3d",
    "DynamicConv1d",
    "DynamicConv2d",
    "DynamicConv3d",
    "DynamicConvTranspose1d",
    "DynamicConvTranspose2d",
    "DynamicConvTranspose3d",
    "DynamicGroupNorm",
    "DynamicInstanceNorm1d",
    "DynamicInstanceNorm2d",
    "DynamicInstanceNorm3d",
    "DynamicLayerNorm",
    "DynamicLayerNorm2d",
    "DynamicLinear",
    "DynamicModule",
    "DynamicRelativePositionalMultiHeadAttention",
    "DynamicSequential",
    "DynamicShiftedWindowAttention",
    "DynamicSyncBatchNorm",
    "is_dynamic",
    "make_dynamic",
    "register",
]
