"""Watched channel counts: the Python ints a traced model reads from a tensor's channel dim.

Reading `x.shape` is harmless; *using* the channel count is not, because the traced run cannot follow what the
model computes from it. So the channel entry of a watched shape is a `WatchedInt`: any arithmetic, comparison
or conversion on it freezes the channels it came from, and so does passing it to a torch function (the tracer
scans call arguments). One use is proven safe and allowed: reshaping the very tensor the count was read from
with that count in the channel position (`B, C, H, W = x.shape; x.reshape(B, C, H * W)`), because the pruned
model reads the pruned count there.

Dividing the count by a constant that divides it (`x.shape[1] // 2`) is not a use yet: it gives a `WatchedShare`,
an equal part of the channels, which a split of the same tensor into that many equal parts takes as its size (the
pruned model computes the part from the pruned count); any other use of the share freezes the channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from nasprune_cli.graph.labels import ChannelLabels


class WatchedInt(int):
    """A channel count read from a traced tensor; using it calls `on_use` (which freezes the channels)."""

    origin: ChannelLabels
    _on_use: Callable[[], None]

    def __new__(cls, value: int, origin: ChannelLabels, on_use: Callable[[], None]) -> WatchedInt:
        obj = super().__new__(cls, value)
        obj.origin = origin
        obj._on_use = on_use
        return obj

    def use(self) -> int:
        """Record a use of the count and return it as a plain int."""
        self._on_use()
        return int.__int__(self)

    def __reduce__(self) -> tuple:  # copies and pickles are plain ints
        return (int, (int.__int__(self),))


def _watched(name: str) -> Callable[..., Any]:
    method = getattr(int, name)

    def wrapper(self: WatchedInt, *args: Any) -> Any:
        self.use()
        return method(int.__int__(self), *(int.__int__(a) if isinstance(a, WatchedInt) else a for a in args))

    wrapper.__name__ = name
    wrapper.__doc__ = f"int.{name}, recorded as a use of the channel count."
    return wrapper


_USES = (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __floordiv__ __rfloordiv__ __truediv__ __rtruediv__ "
    "__mod__ __rmod__ __divmod__ __rdivmod__ __pow__ __rpow__ __neg__ __pos__ __abs__ __invert__ __lshift__ "
    "__rlshift__ __rshift__ __rrshift__ __and__ __rand__ __or__ __ror__ __xor__ __rxor__ __eq__ __ne__ __lt__ "
    "__le__ __gt__ __ge__ __hash__ __bool__ __int__ __float__ __index__ __round__ __trunc__ __floor__ __ceil__ "
    "__str__ __repr__ __format__ bit_length bit_count to_bytes as_integer_ratio conjugate"
).split()
for _name in _USES:
    setattr(WatchedInt, _name, _watched(_name))


class WatchedShare(WatchedInt):
    """`count // parts` of a watched channel count (parts dividing it): the size of one of `parts` equal parts."""

    parts: int

    def __new__(cls, value: int, origin: ChannelLabels, on_use: Callable[[], None], parts: int) -> WatchedShare:
        obj = super().__new__(cls, value, origin, on_use)
        obj.parts = parts
        return obj


_plain_floordiv = WatchedInt.__floordiv__


def _floordiv(self: WatchedInt, other: Any) -> Any:
    """count // k for a plain k dividing the count: a WatchedShare (not a use yet); anything else is a use."""
    value = int.__int__(self)
    if type(self) is WatchedInt and type(other) is int and other > 0 and value % other == 0:
        return WatchedShare(value // other, self.origin, self._on_use, other)
    return _plain_floordiv(self, other)


WatchedInt.__floordiv__ = _floordiv  # type: ignore[method-assign]


class WatchedSize(tuple):
    """x.shape of a tensor with channels, whose channel entry is a WatchedInt."""

    def __new__(
        cls, size: torch.Size, channel_dim: int, origin: ChannelLabels, on_use: Callable[[], None]
    ) -> WatchedSize:
        items = [WatchedInt(s, origin, on_use) if d == channel_dim else s for d, s in enumerate(size)]
        obj = super().__new__(cls, items)
        obj._on_use = on_use
        return obj

    def __getitem__(self, idx: Any) -> Any:
        item = tuple.__getitem__(self, idx)
        return torch.Size(item) if isinstance(idx, slice) else item

    def __eq__(self, other: object) -> bool:
        self._on_use()
        return tuple.__eq__(tuple(int.__int__(s) for s in self), other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def numel(self) -> int:
        """Product of the sizes (a use of the channel count)."""
        self._on_use()
        return torch.Size([int.__int__(s) for s in self]).numel()


def watched_ints(obj: Any) -> Iterable[WatchedInt]:
    """Every WatchedInt inside call arguments (nested lists, tuples and dicts)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, WatchedInt):
            yield item
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, slice):
            stack.extend((item.start, item.stop, item.step))


def use_all(watched: Iterable[WatchedInt]) -> None:
    """Record a use of every count in `watched`."""
    for w in watched:
        w.use()
