"""A small union-find over the integers 0..n-1: path halving, and the smaller root wins (deterministic results)."""

from __future__ import annotations


class UnionFind:
    """Disjoint sets of the integers 0..len-1; `add` appends new singletons."""

    def __init__(self, size: int = 0) -> None:
        self._parent: list[int] = list(range(size))

    def __len__(self) -> int:
        return len(self._parent)

    def add(self, count: int) -> int:
        """Append `count` singletons; returns the first new element."""
        base = len(self._parent)
        self._parent.extend(range(base, base + count))
        return base

    def find(self, i: int) -> int:
        """Root of an element (with path halving)."""
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Unite the sets of two elements (the smaller root becomes the root of both)."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)
