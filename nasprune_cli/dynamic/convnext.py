"""Dynamic torchvision ConvNeXt pieces: LayerNorm2d (a LayerNorm over dim 1 of NCHW) and CNBlock's layer_scale."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d

from nasprune_cli.dynamic.base import DynamicModule, register, take
from nasprune_cli.dynamic.norm import DynamicLayerNorm


@register(LayerNorm2d)
class DynamicLayerNorm2d(DynamicLayerNorm, LayerNorm2d):
    """Sliceable torchvision LayerNorm2d: its features are the channels (dim 1) of an NCHW input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """LayerNorm2d's forward over the kept channels."""
        shape, weight, bias = self._sliced()
        x = F.layer_norm(input.permute(0, 2, 3, 1), shape, weight, bias, self.eps)
        return x.permute(0, 3, 1, 2)


@register(CNBlock)
class DynamicCNBlock(DynamicModule, CNBlock):
    """A ConvNeXt block whose layer_scale keeps the channels the stream keeps; its layers are converted on their own."""

    def sides(self) -> tuple[str, ...]:
        """("layer_scale",): the per-channel scale of the block's output."""
        return ("layer_scale",)

    def side_size(self, side: str) -> int:
        """Number of channels of the stream."""
        self._check_side(side)
        return self.layer_scale.shape[0]

    def _scale(self) -> torch.Tensor:
        return take(self.layer_scale, 0, self.slice_index("layer_scale", self.layer_scale.device))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """CNBlock's forward with the kept channels of layer_scale."""
        result = self._scale() * self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return result

    def export(self) -> nn.Module:
        """A plain CNBlock with the same (already exported) children and the kept channels of layer_scale."""
        with torch.no_grad():
            scale = nn.Parameter(self._scale().detach().clone(), requires_grad=self.layer_scale.requires_grad)
        plain = CNBlock.__new__(CNBlock)
        for key, value in self.__dict__.items():
            if not key.startswith("_nasprune"):
                plain.__dict__[key] = copy.copy(value) if isinstance(value, dict) else value
        plain._parameters["layer_scale"] = scale
        return plain
