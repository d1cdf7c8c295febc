"""Turn a trace's channel labels into groups of coupled channels: one hparam per group."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nasprune_cli.graph.context import SideRecord, Trace
from nasprune_cli.graph.unionfind import UnionFind

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


@dataclass
class Grouping:
    """Groups plus, for every channel id, its group and its position in the group's canonical order."""

    groups: list[ChannelGroup]
    group_of: torch.Tensor  # id -> group index
    pos_of: torch.Tensor  # id -> position in the group (order of the first source's channels)


def build_groups(trace: Trace) -> Grouping:
    """Group sources united channel by channel; freeze groups the trace could not prove safe."""
    book = trace.book
    roots = book.roots() if len(book) else torch.zeros(0, dtype=torch.long)
    sources: list[SideRecord] = trace.sources
    # sources that share a root belong to one component
    linked = UnionFind(len(sources))
    owner: dict[int, int] = {}
    for s_idx, src in enumerate(sources):
        for r in torch.unique(roots[src.vec]).tolist():
            if r in owner:
                linked.union(owner[r], s_idx)
            else:
                owner[r] = s_idx
    components: dict[int, list[int]] = {}
    for s_idx in range(len(sources)):
        components.setdefault(linked.find(s_idx), []).append(s_idx)

    frozen_roots: dict[int, str] = {}
    for i, reason in sorted(book.frozen.items()):
        frozen_roots.setdefault(int(roots[i]), reason)

    group_of = torch.full((len(book),), -1, dtype=torch.long)
    pos_of = torch.full((len(book),), -1, dtype=torch.long)
    groups: list[ChannelGroup] = []
    for comp in components.values():
        first = sources[comp[0]]
        info = trace.layer_info.get(first.module, {})
        group = ChannelGroup(
            index=len(groups),
            name=f"{first.module}.{info.get('out_name') or _OUT_NAMES.get(info.get('type', ''), 'out_channels')}",
            size=first.vec.numel(),
            sources=[sources[i].module for i in comp],
        )
        canon = roots[first.vec]
        rank = {r: p for p, r in enumerate(canon.tolist())}
        comp_roots = set(torch.unique(roots[torch.cat([sources[i].vec for i in comp])]).tolist())
        reasons = [frozen_roots[r] for r in sorted(comp_roots) if r in frozen_roots]
        group.frozen_reason = reasons[0] if reasons else _structure_problem(comp, sources, roots, rank, first)
        for s_idx in comp:
            vec = sources[s_idx].vec
            group_of[vec] = group.index
            if group.frozen_reason is None:
                pos_of[vec] = torch.tensor([rank[r] for r in roots[vec].tolist()], dtype=torch.long)
        groups.append(group)
    # members: every layer side reading a group's channels
    for (module, side), rec in trace.sides.items():
        ids = rec.vec[rec.vec >= 0]
        for g in torch.unique(group_of[ids]).tolist() if ids.numel() else []:
            if g >= 0:
                groups[g].members.append(f"{module}.{side}")
    return Grouping(groups=groups, group_of=group_of, pos_of=pos_of)


def _structure_problem(
    comp: list[int], sources: list[SideRecord], roots: torch.Tensor, rank: dict[int, int], first: SideRecord
) -> str | None:
    """Why the sources of a component are not united channel for channel (None when they are)."""
    for s_idx in comp:
        src = sources[s_idx]
        src_roots = roots[src.vec].tolist()
        if len(set(src_roots)) != len(src_roots):
            return f"channels of {src.module} are tied to each other (e.g. by a broadcast)"
        if len(src_roots) != len(rank) or set(src_roots) != set(rank):
            return f"{src.module} and {first.module} are coupled but not channel for channel"
        if [rank[r] for r in src_roots] != list(range(len(rank))):
            return f"channel order of {src.module} differs from {first.module}"
    return None


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
