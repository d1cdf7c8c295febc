"""Channel labels: which positions of a tensor dim are prunable channels, and a union-find over them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIXED = -1  # a position that can never be removed (model input, plain parameter, padding)


@dataclass(frozen=True)
class Lab:
    """The channel dim of a traced tensor and the label (channel id or FIXED) of each position along it."""

    dim: int
    vec: torch.Tensor  # 1-D int64, length == size of `dim`

    def moved(self, dim: int) -> Lab:
        """The same labels on another dim."""
        return Lab(dim, self.vec)

    def has_ids(self) -> bool:
        """Whether any position is a prunable channel id."""
        return bool((self.vec >= 0).any())


def fixed_vec(size: int) -> torch.Tensor:
    """A label vector of `size` FIXED positions."""
    return torch.full((size,), FIXED, dtype=torch.long)


class ChannelBook:
    """Allocates channel ids, unites coupled ids and records why ids are frozen."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self.frozen: dict[int, str] = {}  # id -> first reason it was frozen

    def __len__(self) -> int:
        return len(self._parent)

    def allocate(self, size: int) -> torch.Tensor:
        """New ids for a source of `size` channels."""
        base = len(self._parent)
        self._parent.extend(range(base, base + size))
        return torch.arange(base, base + size, dtype=torch.long)

    def find(self, i: int) -> int:
        """Root of an id (with path halving)."""
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Unite two ids (the smaller root wins, so results are deterministic)."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self._parent[hi] = lo

    def freeze(self, vec: torch.Tensor | Lab | None, reason: str) -> None:
        """Freeze every id in a label vector, keeping the first reason given for each."""
        if vec is None:
            return
        if isinstance(vec, Lab):
            vec = vec.vec
        for i in torch.unique(vec[vec >= 0]).tolist():
            self.frozen.setdefault(i, reason)

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

    def roots(self) -> torch.Tensor:
        """Root of every allocated id, as a tensor indexed by id."""
        return torch.tensor([self.find(i) for i in range(len(self._parent))], dtype=torch.long)
