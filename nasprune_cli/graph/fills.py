"""Tensors the model makes with a channel count it read, and writes into (torchvision's MultiScaleRoIAlign):

    result = torch.zeros((rois, x.shape[1], 7, 7)); result[idx] = roi_align(x, boxes)

`torch.zeros` with the channel count read from `x` at one dim makes a tensor of `x`'s channels there: a pruned model
reads the pruned count, so the new tensor carries `x`'s labels (its values are one constant for every channel).
Writing a labelled tensor into it by an index that leaves the channel dim whole pairs the two, channel by channel,
as an add would. Anything else a factory is given a channel count for, or any other write, freezes the channels.
"""

from __future__ import annotations

from typing import Any

import torch

from nasprune_cli.graph.context import TraceContext
from nasprune_cli.graph.labels import ChannelLabels
from nasprune_cli.graph.watch import WatchedInt, use_all, watched_ints

FACTORY_OPS = frozenset(("zeros", "ones", "empty", "full", "new_zeros", "new_ones", "new_empty", "new_full"))


def made_from_count(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> bool:
    """A factory given one channel count in its size: label the new tensor with those channels (True), else False
    (the caller records every count as used)."""
    rest = args[1:] if name.startswith("new_") else args
    size: Any = kwargs.get("size")
    if size is None and rest:
        size = rest[0] if isinstance(rest[0], (tuple, list, torch.Size)) else rest
        if name.endswith("full") and isinstance(rest[0], (tuple, list, torch.Size)):
            size = rest[0]
    if not isinstance(size, (tuple, list, torch.Size)) or not isinstance(out, torch.Tensor):
        return False
    counts = [(d, s) for d, s in enumerate(size) if isinstance(s, WatchedInt)]
    if len(counts) != 1 or len(size) != out.dim():
        return False
    dim, count = counts[0]
    if count.origin.vec.numel() != out.shape[dim]:
        return False
    use_all(w for w in watched_ints((args, kwargs)) if w is not count)
    ctx.set_labels(out, ChannelLabels(dim, count.origin.vec))
    return True


def setitem(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """target[index] = value: pair the value's channels with the target's when the index leaves them whole."""
    target, index, value = args[0], args[1], args[2] if len(args) > 2 else None
    t_lab = ctx.labels_of(target)
    v_lab = ctx.labels_of(value)
    reason = f"'{name}' writes channels into a tensor at {ctx.where()} in a way nasprune cannot follow"
    shift = _index_shift(index, target)
    if shift is None or (t_lab is not None and t_lab.dim == 0):
        for t in (target, value, index):
            ctx.freeze(ctx.labels_of(t), reason)
        return
    ctx.freeze(ctx.labels_of(index), f"'{name}' indexes by channel values at {ctx.where()}")
    if not isinstance(value, torch.Tensor) or v_lab is None:
        if isinstance(value, torch.Tensor) and t_lab is not None and _size_at(value, target, t_lab.dim) > 1:
            ctx.freeze(t_lab, f"'{name}' writes fixed positions into the channels at {ctx.where()}")
        return
    dim = v_lab.dim + target.dim() - value.dim()  # the value broadcasts to target[index] (right-aligned)
    if t_lab is None or t_lab.dim != dim:
        ctx.freeze(v_lab, f"'{name}' writes channels into a tensor without them at {ctx.where()}")
        if t_lab is not None:
            ctx.freeze(t_lab, reason)
        return
    ctx.book.couple(t_lab, ChannelLabels(dim, v_lab.vec), f"'{name}' pairs them with fixed positions at {ctx.where()}")


def _index_shift(index: Any, target: torch.Tensor) -> int | None:
    """How many leading target dims an index removes: 0 for a 1-d index tensor or a slice of dim 0, 1 for an int;
    None for anything that might reach further (tuples, masks of several dims)."""
    if isinstance(index, torch.Tensor):
        return 0 if index.dim() == 1 and target.dim() > 1 else None
    if isinstance(index, slice):
        return 0
    if isinstance(index, int) and not isinstance(index, bool):
        return 1
    return None


def _size_at(value: torch.Tensor, target: torch.Tensor, t_dim: int) -> int:
    """The size of the value along the target's channel dim (1 when it broadcasts there)."""
    v_dim = t_dim - (target.dim() - value.dim())
    return int(value.shape[v_dim]) if 0 <= v_dim < value.dim() else 1
