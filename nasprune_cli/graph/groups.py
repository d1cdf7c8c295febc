"""Turn a trace's channel labels into groups of coupled channels: one hparam per group."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nasprune_cli.graph.context import SideRecord, Trace
from nasprune_cli.graph.segments import Segments, find_segments

_OUT_NAMES = {"Linear": "out_features"}


@dataclass
class ChannelGroup:
    """Channels of one or more layer outputs that must be pruned together, position by position."""

    index: int
    name: str  # hparam name, e.g. "layer1.0.conv1.out_channels"
    size: int
    sources: list[str]  # layers whose outputs create these channels
    members: list[str] = field(default_factory=list)  # every "layer.side" that reads them
    frozen_reason: str | None = None
    blocks: int = 1  # a grouped conv reads these channels: prune the same number in each of `blocks` blocks
    block_of: torch.Tensor | None = None  # block of each canonical position
    unit: int = 1  # attention reads these channels: prune whole units (heads) of `unit` channels
    unit_of: torch.Tensor | None = None  # unit of each canonical position
    cut_by: str | None = None  # the equal cut (chunk) whose parts are the blocks, e.g. "'chunk' at c2f"


@dataclass
class Grouping:
    """Groups plus, for every channel id, its group and its position in the group's canonical order."""

    groups: list[ChannelGroup]
    group_of: torch.Tensor  # id -> group index
    pos_of: torch.Tensor  # id -> position in the group (order of the first source's channels)


def build_groups(trace: Trace) -> Grouping:
    """Group the channels into segments tied by equal cuts (graph/segments.py); freeze groups the trace could not
    prove safe."""
    book = trace.book
    roots = book.roots() if len(book) else torch.zeros(0, dtype=torch.long)
    sources: list[SideRecord] = trace.sources
    segments = find_segments(roots, sources, trace.cuts)
    frozen_roots: dict[int, str] = {}
    for i, reason in sorted(book.frozen.items()):
        frozen_roots.setdefault(int(roots[i]), reason)
    for r, reason in segments.cut_problems.items():
        frozen_roots.setdefault(r, reason)

    root_group = torch.full((len(book),), -1, dtype=torch.long)  # indexed by root
    root_pos = torch.full((len(book),), -1, dtype=torch.long)
    for g_idx, segs in enumerate(segments.groups):
        canon = [r for seg in segs for r in segments.roots[seg]]
        root_group[canon] = g_idx
        root_pos[canon] = torch.arange(len(canon))
    group_of = root_group[roots] if len(book) else roots
    pos_of = root_pos[roots] if len(book) else roots
    covering: dict[int, list[int]] = {}  # group -> the sources that create some of its channels
    for s_idx, src in enumerate(sources):
        for g in torch.unique(group_of[src.vec]).tolist():
            covering.setdefault(g, []).append(s_idx)
    groups: list[ChannelGroup] = []
    used: set[str] = set()
    for g_idx, segs in enumerate(segments.groups):
        canon = [r for seg in segs for r in segments.roots[seg]]
        group = ChannelGroup(
            index=g_idx,
            name=_group_name(trace, [sources[i] for i in covering[g_idx]], group_of, g_idx, len(canon), used),
            size=len(canon),
            sources=[sources[i].module for i in covering[g_idx]],
        )
        if len(segs) > 1:  # the equal parts of a cut: the same number of channels is kept in each
            group.blocks = len(segs)
            group.block_of = torch.cat([torch.full((len(segments.roots[seg]),), b) for b, seg in enumerate(segs)])
            group.cut_by = segments.cut_by.get(segs[0])
        reasons = [frozen_roots[r] for r in sorted(canon) if r in frozen_roots]
        group.frozen_reason = (
            reasons[0] if reasons else _structure_problem(covering[g_idx], sources, roots, root_pos, segs, segments)
        )
        if group.frozen_reason is not None:
            pos_of[group_of == g_idx] = -1
        groups.append(group)
    # members: every layer side reading a group's channels
    for (module, side), rec in trace.sides.items():
        ids = rec.vec[rec.vec >= 0]
        for g in torch.unique(group_of[ids]).tolist() if ids.numel() else []:
            if g >= 0:
                groups[g].members.append(f"{module}.{side}")
    return Grouping(groups=groups, group_of=group_of, pos_of=pos_of)


def _group_name(
    trace: Trace, covering: list[SideRecord], group_of: torch.Tensor, g_idx: int, size: int, used: set[str]
) -> str:
    """The hparam name of a group: the first layer that creates exactly its channels (or the first that creates some
    of them, with the range of its channels they are), unique among the groups."""
    exact = [src for src in covering if bool((group_of[src.vec] == g_idx).all()) and src.vec.numel() == size]
    src = exact[0] if exact else covering[0]
    info = trace.layer_info.get(src.module, {})
    out_name = info.get("out_name") or _OUT_NAMES.get(info.get("type", ""), "out_channels")
    name = base = f"{src.module}.{out_name}"
    if not exact or name in used:
        where = torch.nonzero(group_of[src.vec] == g_idx).flatten()
        lo, hi = int(where.min()), int(where.max()) + 1
        name = base = (
            f"{base}[{lo}:{hi}]" if hi - lo == where.numel() else f"{base}[{where.numel()} of {src.vec.numel()}]"
        )
    count = 1
    while name in used:
        count += 1
        name = f"{base}#{count}"
    used.add(name)
    return name


def _structure_problem(
    covering: list[int],
    sources: list[SideRecord],
    roots: torch.Tensor,
    root_pos: torch.Tensor,
    segs: list[int],
    segments: Segments,
) -> str | None:
    """Why the sources of a group do not carry its channels one for one, in one order (None when they do)."""
    first = sources[covering[0]]
    in_group = set(r for seg in segs for r in segments.roots[seg])
    for s_idx in covering:
        src = sources[s_idx]
        src_roots = _one_copy([r for r in roots[src.vec].tolist() if r in in_group])
        if src_roots is None:
            return f"channels of {src.module} are tied to each other (e.g. by a broadcast)"
        for seg in segs:
            members = set(segments.roots[seg])
            ranks = [int(root_pos[r]) for r in src_roots if r in members]
            if ranks != sorted(ranks):
                return f"channel order of {src.module} differs from {first.module}"
    return None


def _one_copy(src_roots: list[int]) -> list[int] | None:
    """The roots of a source's channels, each once, when every root is repeated k times in one of two patterns
    (None when not): k equal copies of the sequence, or each root k times in a row.

    GhostNet adds a layer's output to `cat([x1, dw(x1)])`, whose halves carry the same channels (the layer's channel i
    and i + C are tied); FastViT adds one to a depthwise conv with channel multiplier k, whose outputs k * i ...
    k * i + k - 1 carry input channel i. A kept channel keeps all its copies (every side keeps the positions whose
    channel is kept). Any other repeat (a broadcast of one channel) is not proven safe."""
    unique = list(dict.fromkeys(src_roots))
    if len(unique) == len(src_roots):
        return src_roots
    k, rest = divmod(len(src_roots), len(unique))
    if len(unique) == 1 or rest:
        return None
    return unique if src_roots in (unique * k, [r for r in unique for _ in range(k)]) else None


def apply_block_constraints(trace: Trace, grouping: Grouping) -> None:
    """Grouped convs keep the same number of channels in each of their groups, attention keeps whole heads:
    record these constraints on the groups (or freeze a group whose constraints disagree)."""
    for name, info in trace.layer_info.items():
        if info.get("head_width"):
            record = trace.sides.get((name, info.get("head_side", "features")))
            if record is not None:
                _constrain_units(grouping, name, info["head_width"], record.vec)
            continue
        blocks = info.get("blocks", 1)
        if blocks <= 1:
            continue
        for side in ("in", "out"):
            record = trace.sides.get((name, side))
            if record is None:
                continue
            _constrain(grouping, name, blocks, record.vec)


def _whole_group(grouping: Grouping, vec: torch.Tensor, reason: str) -> ChannelGroup | None:
    """The one unfrozen group a layer side covers exactly; freeze whatever it touches when it is not that."""
    ids = vec[vec >= 0]
    touched = torch.unique(grouping.group_of[ids]).tolist() if ids.numel() else []
    if not touched:
        return None
    if len(touched) > 1 or ids.numel() != vec.numel() or grouping.groups[touched[0]].size != vec.numel():
        for g in touched:
            grouping.groups[g].frozen_reason = grouping.groups[g].frozen_reason or reason
        return None
    group = grouping.groups[touched[0]]
    return None if group.frozen_reason is not None else group


def _constrain_units(grouping: Grouping, layer: str, unit: int, vec: torch.Tensor) -> None:
    group = _whole_group(grouping, vec, f"{layer}: attention reads channels that do not form one group")
    if group is None:
        return
    unit_of = torch.empty(group.size, dtype=torch.long)
    unit_of[grouping.pos_of[vec]] = torch.arange(vec.numel()) // unit
    if group.unit_of is not None and not torch.equal(group.unit_of, unit_of):
        group.frozen_reason = f"{layer}: attention layers split these channels into different heads"
    elif group.block_of is not None:
        group.frozen_reason = f"{layer}: channels read both by attention heads and by a grouped convolution"
    else:
        group.unit, group.unit_of = unit, unit_of


def _constrain(grouping: Grouping, layer: str, blocks: int, vec: torch.Tensor) -> None:
    reason = f"{layer}: grouped convolution (groups={blocks}) reads channels that do not form one group"
    group = _whole_group(grouping, vec, reason)
    if group is None:
        return
    if group.unit_of is not None:
        group.frozen_reason = f"{layer}: channels read both by attention heads and by a grouped convolution"
        return
    per_block = vec.numel() // blocks
    block_of = torch.empty(group.size, dtype=torch.long)
    block_of[grouping.pos_of[vec]] = torch.arange(vec.numel()) // per_block
    if group.block_of is not None and not torch.equal(group.block_of, block_of):
        group.frozen_reason = f"{layer}: grouped convolutions split these channels into different blocks"
        return
    group.blocks, group.block_of = blocks, block_of
