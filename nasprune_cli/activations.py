"""Activations that the layers reading a group take in: the data of the ``activation`` importance (Minitron-style).

For every layer side that reads a group's channels (a linear, convolution or transformers ``Conv1D`` layer's "in"
side, a transformers attention's "heads" through its output projection), a forward hook records the mean absolute
value of each input position over the batch and every token / spatial position, averaged over the batches. For an
MLP's output layer that is the mean |activation| of each intermediate neuron; for an attention's output projection,
the mean |output| of each feature of each head (a head's importance is their sum, `space._unit_order`). The model
runs in eval mode on its largest subnet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.errors import NasPruneError
from nasprune_cli.importance import CONV_TYPES
from nasprune_cli.inputs import call_model, eval_mode

Side = tuple[str, str]


def activation_scores(
    model: nn.Module, modules: Mapping[str, nn.Module], sides: Iterable[Side], inputs: Sequence[Any]
) -> dict[Side, torch.Tensor]:
    """Mean |input activation| per position of every reading side, over the inputs (float64, on the CPU)."""
    if not inputs:
        raise NasPruneError("importance 'activation': no input batches to measure activations on (pass --data)")
    readers = {side: reader for side in sides if (reader := _reader(modules.get(side[0]), side[1])) is not None}
    sums: dict[Side, torch.Tensor] = {}
    handles = [module.register_forward_hook(_hook(side, dim, sums)) for side, (module, dim) in readers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            for batch in inputs:
                call_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return {side: total / len(inputs) for side, total in sums.items()}


def _hook(side: Side, dim: int, sums: dict[Side, torch.Tensor]) -> Callable[..., None]:
    """A forward hook adding the mean |input| of every position along `dim` into sums[side]."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return
        x = args[0].detach()
        dims = [d for d in range(x.dim()) if d != dim % x.dim()]
        mean = x.abs().double().mean(dims).cpu() if dims else x.abs().double().cpu()
        sums[side] = mean if side not in sums else sums[side] + mean

    return hook


def _reader(module: nn.Module | None, side: str) -> tuple[nn.Module, int] | None:
    """The module whose input holds a side's positions, and the input's position dim (None: not a reading side)."""
    if not is_dynamic(module):
        return None
    if side == "heads":  # a transformers attention: the output projection inside reads the heads
        layout = getattr(module, "layout", None)
        proj = getattr(layout(), "o", None) if callable(layout) else None
        return (getattr(module, proj), -1) if proj is not None else None
    if side != "in":
        return None
    if isinstance(module, CONV_TYPES):
        return module, 1
    if isinstance(module, nn.Linear):
        return module, -1
    spec = getattr(module, "spec", None)  # a registered layer (transformers' Conv1D): its own channel dim
    if getattr(spec, "kind", None) == "linear":
        return module, spec.channel_dim_of(module)
    return None
