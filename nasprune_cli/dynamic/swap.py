"""Run a layer's own forward on sliced tensors: the parameters, buffers and size attributes are swapped for the
active subnet's during the call, and export() copies the layer with the sliced tensors and sizes.

This is how nasprune converts subclasses of the layers it knows (timm's BatchNormAct2d, Conv2dSame, ...) and the
layers users register (register_layer): their own forward keeps whatever else it does (an activation, padding,
weight standardization) and only sees the kept channels.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# what a dynamic layer swaps in for one call: tensors by parameter / buffer name, and size attributes by name
SlicedState = tuple[dict[str, torch.Tensor | None], dict[str, Any]]


@contextmanager
def swapped(module: nn.Module, tensors: dict[str, torch.Tensor | None], sizes: dict[str, Any]) -> Iterator[None]:
    """Within the block the module's parameters / buffers / attributes named in `tensors` and `sizes` are replaced."""
    saved_params = {k: module._parameters[k] for k in tensors if k in module._parameters}
    saved_buffers = {k: module._buffers[k] for k in tensors if k in module._buffers}
    saved_attrs = {k: module.__dict__[k] for k in sizes if k in module.__dict__}
    try:
        for name, tensor in tensors.items():
            if name in saved_params:
                module._parameters[name] = tensor  # a sliced view: gradients reach the original parameter
            elif name in saved_buffers:
                module._buffers[name] = tensor
        module.__dict__.update(sizes)
        yield
    finally:
        module._parameters.update(saved_params)
        module._buffers.update(saved_buffers)
        for key in sizes:
            if key in saved_attrs:
                module.__dict__[key] = saved_attrs[key]
            else:
                module.__dict__.pop(key, None)


def copy_with(
    module: nn.Module, cls: type[nn.Module], tensors: dict[str, torch.Tensor | None], sizes: dict[str, Any]
) -> nn.Module:
    """A copy of `module` of class `cls` whose named tensors are detached copies of `tensors` and sizes `sizes`."""
    plain = cls.__new__(cls)
    for key, value in module.__dict__.items():
        if key.startswith("_nasprune"):
            continue
        plain.__dict__[key] = copy.copy(value) if isinstance(value, dict) else value
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if name in plain._parameters:
            source = plain._parameters[name]
            grad = source.requires_grad if source is not None else True
            plain._parameters[name] = nn.Parameter(tensor.detach().clone(), requires_grad=grad)
        elif name in plain._buffers:
            plain._buffers[name] = tensor.detach().clone()
    plain.__dict__.update(sizes)
    plain._modules = {k: copy.deepcopy(v) for k, v in module._modules.items()}
    return plain


class SwapForward:
    """Mixin placed before a dynamic class: forward runs the original class's own forward on the sliced state."""

    # the dynamic class after it in the MRO supplies sliced_state() -> SlicedState and _after_forward(tensors)
    original_cls: type[nn.Module]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The original class's forward with the sliced parameters, buffers and sizes."""
        tensors, sizes = self.sliced_state()  # type: ignore[attr-defined]
        assert isinstance(self, nn.Module)
        with swapped(self, tensors, sizes):
            out = self.original_cls.forward(self, *args, **kwargs)
        self._after_forward(tensors)  # type: ignore[attr-defined]
        return out

    def export(self) -> nn.Module:
        """A copy of the layer of its original class with the sliced tensors and the active sizes."""
        with torch.no_grad():
            tensors, sizes = self.sliced_state()  # type: ignore[attr-defined]
        assert isinstance(self, nn.Module)
        plain = copy_with(self, self.original_cls, tensors, sizes)
        assert not any(isinstance(m, SwapForward) for m in plain.modules()), "export left a dynamic module"
        return plain
