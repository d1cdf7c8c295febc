"""Check, on random inputs, that a subclass or a registered layer converts faithfully: every tensor that holds its
channels is one nasprune slices, its own forward runs on a random subnet, and the export gives the same values."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, make_dynamic


def probe_problem(module: nn.Module, name: str, input_shape: tuple[int, ...], channel_dim: int) -> str | None:
    """Why this layer cannot be converted (a frozen-layer reason naming its class), or None when it can."""
    label = f"{type(module).__name__} '{name}'"
    plain = copy.deepcopy(module).eval()
    dyn = make_dynamic(copy.deepcopy(module).eval(), name=name)
    unsliced = _unsliced_tensors(plain, set(dyn.sliced_state()[0]))  # type: ignore[attr-defined]
    if unsliced:
        return (
            f"{label} holds {', '.join(unsliced)}, which nasprune does not slice (kept whole; to prune it, register "
            "the class with nasprune_cli.register_layer naming the channel dims of its tensors)"
        )
    tensor = next((t for t in [*plain.parameters(), *plain.buffers()] if t.is_floating_point()), None)
    dtype = tensor.dtype if tensor is not None else torch.float32
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    try:
        with torch.no_grad():
            if not _close(dyn(x), plain(x)):
                return f"{label}: its forward gives other values once converted (kept whole)"
            indices = _probe_indices(dyn)
            for side, index in indices.items():
                dyn.set_index(side, index)
            sides = dyn.sides()
            xs = x.index_select(channel_dim, indices["in" if "in" in sides else sides[0]])
            out = dyn(xs)
            exported = dyn.export().eval()
            kept_out = indices["out" if "out" in sides else sides[0]].numel()
            if not isinstance(out, torch.Tensor) or out.dim() <= channel_dim % xs.dim():
                return f"{label}: its forward does not return its channels on dim {channel_dim} (kept whole)"
            if out.shape[channel_dim] != kept_out or not _close(exported(xs), out):
                return f"{label}: its forward on the kept channels does not match its export (kept whole)"
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward on the kept channels freezes it
        return f"{label}: its forward fails on a subset of its channels ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _close(a: object, b: object) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    )


def _unsliced_tensors(module: nn.Module, sliced: set[str]) -> list[str]:
    """The parameters, buffers and tensor attributes (children's too) with more than one value that are not sliced."""
    found = [
        f"{kind} '{n}' {tuple(t.shape)}"
        for kind, items in (("parameter", module.named_parameters()), ("buffer", module.named_buffers()))
        for n, t in items
        if n not in sliced and t.numel() > 1
    ]
    for prefix, sub in module.named_modules():
        for key, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                found.append(f"tensor attribute '{f'{prefix}.' if prefix else ''}{key}' {tuple(value.shape)}")
    return found


def _probe_indices(dyn: DynamicModule) -> dict[str, torch.Tensor]:
    """A random valid subnet: about half of every side (whole groups of a depthwise conv, multiples of GroupNorm's
    groups, the same count in every group of a grouped conv)."""
    gen = torch.Generator().manual_seed(1)

    def pick(size: int, keep: int) -> torch.Tensor:
        return torch.sort(torch.randperm(size, generator=gen)[:keep]).values

    groups = int(getattr(dyn, "groups", 1)) if isinstance(dyn, nn.modules.conv._ConvNd) else 1
    sizes = {side: dyn.side_size(side) for side in dyn.sides()}
    if groups > 1 and all(size == groups for size in sizes.values()):  # depthwise
        index = pick(groups, max(1, groups // 2))
        return {side: index for side in sizes}
    if groups > 1:
        result = {}
        for side, size in sizes.items():
            per = size // groups
            keep = max(1, per // 2)
            result[side] = torch.cat([g * per + pick(per, keep) for g in range(groups)])
        return result
    num_groups = int(getattr(dyn, "num_groups", 1)) if isinstance(dyn, nn.GroupNorm) else 1
    return {side: pick(size, num_groups * max(1, size // num_groups // 2)) for side, size in sizes.items()}
