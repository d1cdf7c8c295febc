"""Subclasses of the registered layer types (timm's BatchNormAct2d, Conv2dSame, LayerNorm2d, ...): sliced like
their parent, their own forward run on the sliced tensors (dynamic/swap.py), exported as their own class."""

from __future__ import annotations

import re
import sys

from torch import nn

from nasprune_cli.dynamic.base import DYNAMIC_REGISTRY, FALLBACK_LOOKUPS, DynamicModule
from nasprune_cli.dynamic.swap import SwapForward
from nasprune_cli.graph.layers import PARENT_LOOKUPS

_CREATED: dict[type[nn.Module], type[DynamicModule]] = {}


def registered_parent(module_type: type[nn.Module]) -> type[nn.Module] | None:
    """The registered type a layer type subclasses and is sliced like (None: not a subclass nasprune converts).

    torch's own subclasses (quantized / QAT layers, MultiheadAttention's out_proj) are left alone, and so are
    subclasses of the types sliced by a hand-written forward only (Sequential, attention blocks, CNBlock)."""
    if module_type in DYNAMIC_REGISTRY or module_type.__module__.split(".")[0] == "torch":
        return None
    for base in module_type.__mro__[1:]:
        parent = DYNAMIC_REGISTRY.get(base)
        if parent is not None:
            return base if hasattr(parent, "sliced_state") else None
    return None


def subclass_dynamic(module_type: type[nn.Module]) -> type[DynamicModule] | None:
    """The dynamic class of a subclass of a registered type: the parent's slicing, the subclass's own forward."""
    if module_type in _CREATED:
        return _CREATED[module_type]
    parent = registered_parent(module_type)
    if parent is None:
        return None
    name = "Dynamic_" + re.sub(r"\W", "_", f"{module_type.__module__}.{module_type.__qualname__}")
    cls = type(
        name,
        (SwapForward, DYNAMIC_REGISTRY[parent], module_type),
        {
            "original_cls": module_type,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"Sliceable {module_type.__qualname__}: sliced like {parent.__qualname__}, its own forward.",
        },
    )
    setattr(sys.modules[__name__], name, cls)  # picklable by name
    _CREATED[module_type] = cls
    return cls


FALLBACK_LOOKUPS.append(subclass_dynamic)
PARENT_LOOKUPS.append(registered_parent)  # the tracer runs these subclasses as one op, with the parent's rule
