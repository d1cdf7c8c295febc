"""Channel labels: which positions of a tensor dim are prunable channels, and the book of channel ids (a union-find
over them, with the reason each frozen id was frozen)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nasprune_cli.graph.unionfind import UnionFind

FIXED = -1  # a position that can never be removed (model input, plain parameter, padding)


@dataclass(frozen=True)
class ChannelLabels:
    """The channel dim of a traced tensor and the label (channel id or FIXED) of each position along it."""

    dim: int
    vec: torch.Tensor  # 1-D int64, length == size of `dim`

    def moved(self, dim: int) -> ChannelLabels:
        """The same labels on another dim."""
        return ChannelLabels(dim, self.vec)

    def has_ids(self) -> bool:
        """Whether any position is a prunable channel id."""
        return bool((self.vec >= 0).any())


def fixed_vec(size: int) -> torch.Tensor:
    """A label vector of `size` FIXED positions."""
    return torch.full((size,), FIXED, dtype=torch.long)


class ChannelBook(UnionFind):
    """Allocates channel ids, unites coupled ids and records why ids are frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: dict[int, str] = {}  # id -> first reason it was frozen

    def allocate(self, size: int) -> torch.Tensor:
        """New ids for a source of `size` channels."""
        base = self.add(size)
        return torch.arange(base, base + size, dtype=torch.long)

    def freeze(self, vec: torch.Tensor | ChannelLabels | None, reason: str, overriding: bool = False) -> bool:
        """Freeze every id in a label vector, keeping the first reason given for each (`overriding`: this reason
        replaces earlier ones, for a cause that explains more than they do). Returns whether it held any id."""
        if vec is None:
            return False
        if isinstance(vec, ChannelLabels):
            vec = vec.vec
        ids = torch.unique(vec[vec >= 0]).tolist()
        for i in ids:
            if overriding:
                self.frozen[i] = reason
            else:
                self.frozen.setdefault(i, reason)
        return bool(ids)

    def pair(self, a: torch.Tensor, b: torch.Tensor, reason: str) -> torch.Tensor:
        """Unite two label vectors position by position; an id paired with FIXED is frozen. Returns the merge."""
        if a.numel() != b.numel():
            raise ValueError("label vectors differ in length")
        pairs = torch.unique(torch.stack([a, b], dim=1), dim=0).tolist()
        for x, y in pairs:
            if x >= 0 and y >= 0:
                self.union(x, y)
            elif x >= 0:
                self.frozen.setdefault(x, reason)
            elif y >= 0:
                self.frozen.setdefault(y, reason)
        return torch.where(a >= 0, a, b)

    def couple(self, a: ChannelLabels | None, b: ChannelLabels | None, reason: str) -> None:
        """Unite two labelled tensors channel by channel; when their channels do not line up, freeze both."""
        if a is None and b is None:
            return
        if a is None or b is None or a.dim != b.dim or a.vec.numel() != b.vec.numel():
            self.freeze(a, reason)
            self.freeze(b, reason)
            return
        self.pair(a.vec, b.vec, reason)

    def frozen_roots(self) -> set[int]:
        """The roots of every frozen id."""
        return {self.find(i) for i in self.frozen}

    def same_channels(self, a: ChannelLabels | None, b: ChannelLabels | None, frozen_roots: set[int]) -> bool:
        """Whether two labelled tensors already carry the same channels, position by position (as a residual block's
        input and output do). Positions frozen or fixed on both sides count as the same; `frozen_roots` is
        `self.frozen_roots()`, computed once by the caller."""

        def root(i: int) -> int | None:  # None: fixed or frozen
            if i < 0:
                return None
            r = self.find(i)
            return None if r in frozen_roots else r

        if a is None or b is None:  # channels the tracer does not follow: frozen
            known = a if a is not None else b
            return known is None or all(root(i) is None for i in torch.unique(known.vec).tolist())
        if a.dim != b.dim or a.vec.numel() != b.vec.numel():
            return False
        pairs = torch.unique(torch.stack([a.vec, b.vec], dim=1), dim=0).tolist()
        return all(root(x) == root(y) for x, y in pairs)

    def roots(self) -> torch.Tensor:
        """Root of every allocated id, as a tensor indexed by id."""
        return torch.tensor([self.find(i) for i in range(len(self))], dtype=torch.long)
