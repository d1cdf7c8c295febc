"""LayerSpec: how a registered layer's tensors hold its channels (the protocol of register_layer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

LayerKind = Literal["linear", "channelwise"]
SIDES: dict[str, tuple[str, ...]] = {"linear": ("in", "out"), "channelwise": ("features",)}


@dataclass(frozen=True)
class LayerSpec:
    """How nasprune slices a registered layer.

    kind: "linear" (an input side "in" and an output side "out", like nn.Linear / nn.Conv2d with groups=1) or
    "channelwise" (one side "features": output channel i comes from input channel i, like a norm or a scale).
    tensors: parameter / buffer name -> {side: dim of that tensor}, e.g. {"weight": {"in": 0, "out": 1}}.
    sizes: side -> the attributes holding its size, set to the kept count on the exported layer (an attribute holding
    a one-item tuple, like a norm's normalized_shape, gets a one-item tuple).
    channel_dim: the dim of the layer's input and output holding the channels (-1: the last), or the name of an
    attribute holding it.
    """

    kind: LayerKind
    tensors: Mapping[str, Mapping[str, int]]
    sizes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    channel_dim: int | str = 1

    def channel_dim_of(self, module: nn.Module) -> int:
        """The dim of the layer's input / output holding its channels."""
        dim = self.channel_dim
        return int(getattr(module, dim)) if isinstance(dim, str) else dim

    def side_sizes(self, module: nn.Module) -> dict[str, int]:
        """The size of every side: from the first tensor that holds it, else from its size attribute."""
        sizes: dict[str, int] = {}
        for name, dims in self.tensors.items():
            tensor = getattr(module, name, None)
            for side, dim in dims.items():
                if isinstance(tensor, torch.Tensor) and side not in sizes:
                    sizes[side] = int(tensor.shape[dim])
        for side, attrs in self.sizes.items():
            value = getattr(module, attrs[0], None) if attrs and side not in sizes else None
            value = value[-1] if isinstance(value, (tuple, list)) and len(value) == 1 else value
            if type(value) is int:
                sizes[side] = value
        return sizes

    def size_attributes(self, module: nn.Module, kept: Mapping[str, int]) -> dict[str, Any]:
        """The size attributes for these kept counts (a one-item tuple stays a one-item tuple)."""
        result: dict[str, Any] = {}
        for side, attrs in self.sizes.items():
            for attr in attrs:
                current = getattr(module, attr, None)
                result[attr] = (kept[side],) if isinstance(current, (tuple, list)) else kept[side]
        return result
