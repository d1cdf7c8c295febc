"""Users' own layers: register_layer(cls, ...) tells nasprune which dims of which tensors are the layer's channels
and which attributes hold its sizes; the layer's own forward then runs on the sliced tensors (dynamic/swap.py).

Layers of other libraries (HF transformers' Conv1D, timm's LayerScale and GRN) are registered by name in known.py.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from nasprune_cli.dynamic.base import (
    DYNAMIC_REGISTRY,
    FALLBACK_LOOKUPS,
    DynamicModule,
    take,
    type_label,
)
from nasprune_cli.dynamic.known import KNOWN_LAYERS
from nasprune_cli.dynamic.spec import SIDES, LayerKind, LayerSpec
from nasprune_cli.dynamic.swap import SlicedState, SwapForward
from nasprune_cli.errors import NasPruneError
from nasprune_cli.graph.layers import SPEC_LOOKUPS

CUSTOM_LAYERS: dict[type[nn.Module], LayerSpec] = {}
_CREATED: dict[type[nn.Module], type[DynamicModule]] = {}


def register_layer(
    cls: type[nn.Module],
    *,
    kind: LayerKind,
    tensors: Mapping[str, Mapping[str, int]],
    sizes: Mapping[str, Sequence[str]] | None = None,
    channel_dim: int | str = 1,
) -> LayerSpec:
    """Make a layer class of your own prunable: which dims of which tensors are its channels (see LayerSpec)."""
    where = f"register_layer({getattr(cls, '__qualname__', cls)!r})"
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise NasPruneError(f"{where}: expected an nn.Module subclass (got {type(cls).__name__})")
    if cls in DYNAMIC_REGISTRY or cls in CUSTOM_LAYERS:
        raise NasPruneError(f"{where}: {type_label(cls)} is already registered; register a class once")
    if kind not in SIDES:
        raise NasPruneError(f"{where}: kind must be 'linear' or 'channelwise' (got {kind!r})")
    sides = SIDES[kind]
    spec = LayerSpec(
        kind,
        {n: dict(d) for n, d in tensors.items()},
        {s: tuple(a) for s, a in (sizes or {}).items()},
        channel_dim,
    )
    for name, dims in spec.tensors.items():
        for side, dim in dims.items():
            if side not in sides or type(dim) is not int:
                raise NasPruneError(
                    f"{where}: tensors[{name!r}] maps sides of a {kind} layer ({', '.join(sides)}) to dims "
                    f"(got {side!r}: {dim!r})"
                )
    missing = [s for s in sides if not any(s in d for d in spec.tensors.values())]
    if missing or any(s not in sides for s in spec.sizes):
        raise NasPruneError(
            f"{where}: every side of a {kind} layer ({', '.join(sides)}) needs a tensor that holds it "
            f"(missing: {', '.join(missing) or 'none'}); sizes takes the same sides"
        )
    if type(channel_dim) is not int and not isinstance(channel_dim, str):
        raise NasPruneError(f"{where}: channel_dim must be an int or an attribute name (got {channel_dim!r})")
    CUSTOM_LAYERS[cls] = spec
    _CREATED.pop(cls, None)
    return spec


def layer_spec(module_type: type[nn.Module]) -> LayerSpec | None:
    """The registered spec of a layer type (None: not registered with register_layer)."""
    spec = CUSTOM_LAYERS.get(module_type)
    if spec is None:
        spec = KNOWN_LAYERS.get(f"{module_type.__module__}.{module_type.__qualname__}")
    return spec


class DynamicCustom(SwapForward, DynamicModule):
    """Base of the dynamic classes of registered layers: slices the tensors its LayerSpec names."""

    spec: ClassVar[LayerSpec]

    def sides(self) -> tuple[str, ...]:
        """("in", "out") for a linear layer, ("features",) for a channelwise one."""
        return SIDES[self.spec.kind]

    def side_size(self, side: str) -> int:
        """The size of the side in the first tensor that holds it (or in its size attribute)."""
        self._check_side(side)
        assert isinstance(self, nn.Module)
        size = self.spec.side_sizes(self).get(side)
        if size is None:
            raise self._nasprune_error(f"no tensor or size attribute holds side {side!r}")
        return size

    def sliced_state(self) -> SlicedState:
        """Every named tensor sliced on its sides, every size attribute at the kept count."""
        device = self._nasprune_device()
        tensors: dict[str, torch.Tensor | None] = {}
        for name, dims in self.spec.tensors.items():
            tensor = getattr(self, name)
            for side, dim in dims.items():
                if isinstance(tensor, torch.Tensor):
                    tensor = take(tensor, dim, self.slice_index(side, device))
            tensors[name] = tensor
        assert isinstance(self, nn.Module)
        return tensors, self.spec.size_attributes(self, {side: self.active_size(side) for side in self.sides()})

    def _after_forward(self, tensors: dict[str, torch.Tensor | None]) -> None:
        """Buffers of one side updated by a training forward go back to their kept positions."""
        if not self.training:
            return
        device = self._nasprune_device()
        with torch.no_grad():
            for name, dims in self.spec.tensors.items():
                full, part = self._buffers.get(name), tensors.get(name)
                if full is None or part is None or part is full or len(dims) != 1:
                    continue
                side, dim = next(iter(dims.items()))
                index = self.slice_index(side, device)
                if index is not None:
                    full.index_copy_(dim, index, part)


def custom_dynamic(module_type: type[nn.Module]) -> type[DynamicModule] | None:
    """The dynamic class of a registered layer type (None: not registered)."""
    if module_type in _CREATED:
        return _CREATED[module_type]
    spec = layer_spec(module_type)
    if spec is None:
        return None
    name = "Dynamic_" + re.sub(r"\W", "_", f"{module_type.__module__}.{module_type.__qualname__}")
    cls = type(
        name,
        (DynamicCustom, module_type),
        {"spec": spec, "original_cls": module_type, "__module__": __name__, "__qualname__": name},
    )
    setattr(sys.modules[__name__], name, cls)  # picklable by name
    _CREATED[module_type] = cls
    return cls


FALLBACK_LOOKUPS.insert(0, custom_dynamic)
SPEC_LOOKUPS.append(layer_spec)  # the tracer runs registered layers as one op
