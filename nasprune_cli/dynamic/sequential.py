"""Dynamic nn.Sequential: run only the first `depth` children."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, register


@register(nn.Sequential)
class DynamicSequential(DynamicModule, nn.Sequential):
    """nn.Sequential whose depth can be reduced; it has no sliceable sides."""

    _nasprune_depth: int | None

    def _init_state(self) -> None:
        self._nasprune_depth = None

    def side_size(self, side: str) -> int:
        """A Sequential has no sides: always raises."""
        self._check_side(side)
        raise AssertionError("unreachable")  # pragma: no cover

    def set_depth(self, depth: int | None) -> None:
        """Run only the first `depth` children (0: identity); None runs them all."""
        n = len(self._modules)
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= n):
            raise self._nasprune_error(f"set_depth({depth!r}): expected an int in [0, {n}] or None")
        self._nasprune_depth = None if depth == n else depth

    def get_depth(self) -> int | None:
        """The depth set by set_depth (None: every child runs)."""
        return self._nasprune_depth

    def active_depth(self) -> int:
        """Number of children that run."""
        return len(self._modules) if self._nasprune_depth is None else self._nasprune_depth

    def forward(self, input: Any) -> Any:
        """Run the first `depth` children in order."""
        for module in itertools.islice(self._modules.values(), self.active_depth()):
            input = module(input)
        return input

    def export(self) -> nn.Module:
        """A plain nn.Sequential of the first `depth` children, keeping their names (the children are shared)."""
        children = list(self._modules.items())[: self.active_depth()]
        plain = nn.Sequential(OrderedDict(children))
        plain.training = self.training
        return plain

    def _active_note(self) -> str:
        return "" if self._nasprune_depth is None else f"active: depth={self._nasprune_depth}/{len(self._modules)}"
