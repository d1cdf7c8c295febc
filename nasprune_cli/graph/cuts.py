"""Ops that cut the channel dim (chunk, split, tensor_split, narrow, select, unbind, index_select).

A cut into equal parts whose sizes the model computes from the tensor (`chunk(k)`, `tensor_split(k)`,
`split(x.shape[1] // k)`) stays right once channels are removed, as long as every part keeps the same number of
channels: its parts become *segments* of the channels, tied to equal widths when the groups are built (a
`SegmentCut`). Any other cut uses sizes fixed when the model was written (a literal split size, a narrow range, a
selected channel): they would be stale in a pruned model, so the cut channels are frozen, and the reason names the
op, the dim and the literal.
"""

from __future__ import annotations

from typing import Any

import torch

from nasprune_cli.graph.context import SegmentCut, TraceContext
from nasprune_cli.graph.labels import FIXED, ChannelLabels
from nasprune_cli.graph.watch import WatchedInt, WatchedShare, use_all, watched_ints

STALE = "fixed when the model was written, it would be stale once channels are removed"


def _arg(args: tuple, kwargs: dict, pos: int, *names: str) -> Any:
    if len(args) > pos:
        return args[pos]
    return next((kwargs[n] for n in names if n in kwargs), None)


def cut_dim(name: str, args: tuple, kwargs: dict, ndim: int) -> int:
    """The dim a split-like op cuts (normalised)."""
    if name == "hsplit":
        return 1 if ndim > 1 else 0
    if name == "vsplit":
        return 0
    pos = 1 if name in ("select", "index_select", "narrow", "unbind") else 2
    dim = _arg(args, kwargs, pos, "dim")
    dim = 0 if dim is None else int(dim)
    return dim + ndim if dim < 0 else dim


def cut_channels(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any, lab: ChannelLabels) -> None:
    """A split-like op along the channel dim: equal computed parts become segments, anything else freezes."""
    x = args[0]
    watched = list(watched_ints((args[1:], kwargs)))
    parts, share = _equal_parts(name, args, kwargs, x, lab, out)
    use_all(w for w in watched if w is not share)
    if isinstance(parts, str):
        ctx.freeze(lab, f"{parts} at {ctx.where()}; {STALE}")
        return ctx.set_outputs(out, None)
    pieces = list(lab.vec.chunk(parts))
    if any(bool((p == FIXED).any()) for p in pieces):
        ctx.freeze(lab, f"'{name}' cuts the channel dim ({lab.dim}) into {parts} equal parts next to fixed positions")
        return ctx.set_outputs(out, None)
    for o, piece in zip(out, pieces, strict=True):
        ctx.set_labels(o, ChannelLabels(lab.dim, piece))
    ctx.cuts.append(SegmentCut(name, ctx.where(), pieces))
    return None


def _equal_parts(
    name: str, args: tuple, kwargs: dict, x: torch.Tensor, lab: ChannelLabels, out: Any
) -> tuple[int | str, WatchedInt | None]:
    """(number of equal parts the pruned model cuts too, the watched share it used) or (why not, None)."""
    size, d = lab.vec.numel(), lab.dim
    count = len(out) if isinstance(out, (tuple, list)) else 0
    if name in ("chunk", "unsafe_chunk", "tensor_split", "hsplit"):
        k = _arg(args, kwargs, 1, "chunks", "sections", "indices_or_sections", "indices")
        if type(k) is int and k == count and size % k == 0:
            return k, None
        if type(k) is int:
            sizes = [int(o.shape[d]) for o in out] if count else []
            return f"'{name}' cuts the channel dim ({d}) into {k} parts of unequal sizes {sizes}", None
        return f"'{name}' cuts the channel dim ({d}) at fixed indices {_show(k)}", None
    if name in ("split", "unsafe_split", "split_with_sizes"):
        s = _arg(args, kwargs, 1, "split_size", "split_size_or_sections", "split_sizes")
        shares = s if isinstance(s, (list, tuple)) else [s]
        if shares and all(_share_of(v, lab) for v in shares):
            parts = shares[0].parts
            if (len(shares) == 1 and count == parts) or (
                len(shares) == parts and len({int.__int__(v) for v in shares}) == 1
            ):
                return parts, shares[0] if len(shares) == 1 else None
        what = "parts of a fixed size" if isinstance(s, int) else "fixed sizes"
        return f"'{name}' cuts the channel dim ({d}) into {what} {_show(s)}", None
    if name == "narrow":
        start, length = _arg(args, kwargs, 2, "start"), _arg(args, kwargs, 3, "length")
        return (
            f"'narrow' takes a fixed range of the channel dim ({d}): start {_show(start)}, length {_show(length)}",
            None,
        )
    if name == "select":
        return f"'select' picks channel {_show(_arg(args, kwargs, 2, 'index'))} of the channel dim ({d})", None
    if name == "unbind":
        return f"'unbind' takes the channel dim ({d}) apart into {size} single channels", None
    return f"'{name}' picks channels of the channel dim ({d}) by a fixed index", None


def _share_of(value: Any, lab: ChannelLabels) -> bool:
    """Whether a split size is an equal share of this very tensor's channel count."""
    return isinstance(value, WatchedShare) and torch.equal(value.origin.vec, lab.vec) and value.origin.dim == lab.dim


def _show(value: Any) -> str:
    """A literal as the model wrote it (watched counts as plain ints, without recording a use)."""
    if isinstance(value, WatchedInt):
        return str(int.__int__(value))
    if isinstance(value, (list, tuple, torch.Size)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
