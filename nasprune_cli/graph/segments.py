"""Channel segments: the parts a group of coupled channels is made of.

After the trace, every channel id has a root (its class in the channel book). A *segment* is a set of roots that
the same layers create and the same equal cuts (chunk) take as one part: the outputs of a concat are the segments
of its inputs, and a layer whose output meets a concat elementwise (an add, a gate) covers several segments, so
its channels are the concatenation of theirs. Segments are pruned independently, except that the parts of one
equal cut keep equal widths: such segments are *tied* into one group, each part a block of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nasprune_cli.graph.context import SegmentCut, SideRecord
from nasprune_cli.graph.unionfind import UnionFind


@dataclass
class Segments:
    """The segments of a trace and the groups (tied segments) they form."""

    roots: list[list[int]]  # segment -> its roots, in the order the first source that creates them has them
    of_root: dict[int, int]  # root -> segment
    groups: list[list[int]]  # group -> its segments, in order (the blocks of a cut's parts)
    cut_problems: dict[int, str]  # root -> why its cut cannot keep equal parts (the root is frozen)
    cut_by: dict[int, str]  # segment -> the equal cut that made it a part ("'chunk' at c2f")


def find_segments(roots: torch.Tensor, sources: list[SideRecord], cuts: list[SegmentCut]) -> Segments:
    """Split the roots into segments (by which sources and which cut parts cover them) and tie the parts of cuts."""
    cover: dict[int, list[tuple[int, ...]]] = {}
    for s_idx, src in enumerate(sources):
        for r in torch.unique(roots[src.vec]).tolist():
            cover.setdefault(r, []).append((s_idx,))
    for c_idx, cut in enumerate(cuts):
        for p_idx, piece in enumerate(cut.pieces):
            for r in torch.unique(roots[piece]).tolist():
                cover.setdefault(r, []).append((c_idx, p_idx, -1))
    by_key: dict[tuple[tuple[int, ...], ...], int] = {}
    segment_roots: list[list[int]] = []
    of_root: dict[int, int] = {}
    for src in sources:
        for r in roots[src.vec].tolist():
            if r in of_root:
                continue
            key = tuple(cover[r])
            if key not in by_key:
                by_key[key] = len(segment_roots)
                segment_roots.append([])
            of_root[r] = by_key[key]
            segment_roots[by_key[key]].append(r)
    tied = UnionFind(len(segment_roots))
    problems: dict[int, str] = {}
    cut_by: dict[int, str] = {}
    for cut in cuts:
        for seg in _tie_cut(cut, roots, of_root, tied, problems):
            cut_by.setdefault(seg, f"'{cut.op}' at {cut.where}")
    groups: dict[int, list[int]] = {}
    for seg in range(len(segment_roots)):
        groups.setdefault(tied.find(seg), []).append(seg)
    return Segments(segment_roots, of_root, list(groups.values()), problems, cut_by)


def _tie_cut(
    cut: SegmentCut, roots: torch.Tensor, of_root: dict[int, int], tied: UnionFind, problems: dict[int, str]
) -> list[int]:
    """Tie the segments of a cut's parts to equal widths (returns them); when a part is not one whole segment,
    record why (and return none)."""
    segments = []
    for piece in cut.pieces:
        piece_roots = roots[piece].tolist()
        found = {of_root[r] for r in piece_roots}
        if len(found) != 1 or len(set(piece_roots)) != len(piece_roots):
            reason = (
                f"'{cut.op}' at {cut.where} cuts these channels into {len(cut.pieces)} equal parts, but other layers "
                "split or pair the parts unevenly (each part must be pruned as one segment)"
            )
            for r in torch.unique(roots[torch.cat(cut.pieces)]).tolist():
                problems.setdefault(r, reason)
            return []
        segments.append(found.pop())
    for seg in segments[1:]:
        tied.union(segments[0], seg)
    return segments
