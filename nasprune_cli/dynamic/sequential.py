"""Dynamic nn.Sequential: skip children (the trailing ones for a depth, or any set of them)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, register


@register(nn.Sequential)
class DynamicSequential(DynamicModule, nn.Sequential):
    """nn.Sequential whose children can be skipped (depth search); it has no sliceable sides."""

    _nasprune_skipped: frozenset[int]

    def _init_state(self) -> None:
        self._nasprune_skipped = frozenset()

    def side_size(self, side: str) -> int:
        """A Sequential has no sides: always raises."""
        self._check_side(side)
        raise AssertionError("unreachable")  # pragma: no cover

    def set_depth(self, depth: int | None) -> None:
        """Run only the first `depth` children (0: identity); None runs them all."""
        n = len(self._modules)
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= n):
            raise self._nasprune_error(f"set_depth({depth!r}): expected an int in [0, {n}] or None")
        self._nasprune_skipped = frozenset(range(depth, n)) if depth is not None else frozenset()

    def set_skipped(self, positions: Iterable[int] | None) -> None:
        """Skip the children at these positions (0-based; each must keep its input's shape); None runs them all."""
        n = len(self._modules)
        skipped = frozenset(positions or ())
        bad = [p for p in skipped if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n]
        if bad:
            raise self._nasprune_error(f"set_skipped({sorted(bad, key=str)!r}): expected positions in [0, {n})")
        self._nasprune_skipped = skipped

    def skipped(self) -> frozenset[int]:
        """Positions of the children that are skipped."""
        return self._nasprune_skipped

    def get_depth(self) -> int | None:
        """The depth when exactly the trailing children from it are skipped (None: every child runs, or an inner
        child is skipped)."""
        if not self._nasprune_skipped:
            return None
        first = min(self._nasprune_skipped)
        return first if self._nasprune_skipped == frozenset(range(first, len(self._modules))) else None

    def active_depth(self) -> int:
        """Number of children that run."""
        return len(self._modules) - len(self._nasprune_skipped)

    def forward(self, input: Any) -> Any:
        """Run the children that are not skipped, in order."""
        for i, module in enumerate(self._modules.values()):
            if i not in self._nasprune_skipped:
                input = module(input)
        return input

    def export(self) -> nn.Module:
        """A plain nn.Sequential of the children that run, keeping their names (the children are shared)."""
        children = [(k, m) for i, (k, m) in enumerate(self._modules.items()) if i not in self._nasprune_skipped]
        plain = nn.Sequential(OrderedDict(children))
        plain.training = self.training
        return plain

    def _active_note(self) -> str:
        if not self._nasprune_skipped:
            return ""
        depth = self.get_depth()
        if depth is not None:
            return f"active: depth={depth}/{len(self._modules)}"
        return f"active: skips {sorted(self._nasprune_skipped)} of {len(self._modules)}"
