"""LayerSpec: how a registered layer's tensors hold its channels (the protocol of register_layer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

LayerKind = Literal["linear", "channelwise"]
SIDES: dict[str, tuple[str, ...]] = {"linear": ("in", "out"), "channelwise": ("features",)}


@dataclass(frozen=True)
class LayerSpec:
    """How nasprune slices a registered layer.

    kind: "linear" (an input side "in" and an output side "out", like nn.Linear / nn.Conv2d with groups=1) or
    "channelwise" (one side "features": output channel i comes from input channel i, like a norm or a scale).
    tensors: parameter / buffer name -> {side: dim of that tensor}, e.g. {"weight": {"in": 0, "out": 1}}.
    sizes: side -> the attributes holding its size, set to the kept count on the exported layer.
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
