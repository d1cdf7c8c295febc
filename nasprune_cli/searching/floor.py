"""The width floor of the binary searcher: no layer much narrower than a uniform prune to the same budget.

The uniform ratio r_u is the largest width ratio r such that every width hparam at its largest choice <= r x its
maximum (at least its smallest choice; depth and kernel hparams at their minimum) meets the budgets; a binary
search over the choices' ratios finds it with the cost model alone. With `width_floor=f`, every width hparam then
keeps only the choices >= f x r_u x its maximum, and never loses its choice in that uniform subnet: the uniform
subnet stays in the search, so the floor never makes a satisfiable budget fail. f=0 keeps every choice (the
search without a floor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

EPS = 1e-9


def uniform_config(hparams: Mapping[str, Any], ratio: float) -> dict[str, int]:
    """Every width hparam at its largest choice <= ratio x its maximum (at least its smallest); the rest at min."""
    config = {}
    for name, hp in hparams.items():
        narrow = [c for c in hp.choices if c <= ratio * hp.choices[-1] + EPS] if hp.kind == "width" else []
        config[name] = narrow[-1] if narrow else hp.choices[0]
    return config


def uniform_ratio(hparams: Mapping[str, Any], fits: Callable[[dict[str, int]], bool]) -> float:
    """The largest width ratio (one of the choices' ratios, or 0) whose uniform subnet meets the budgets."""
    ratios = sorted({c / hp.choices[-1] for hp in hparams.values() if hp.kind == "width" for c in hp.choices})
    lo, hi = -1, len(ratios)  # ratios[lo] fits (-1: ratio 0, the smallest widths), ratios[hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(uniform_config(hparams, ratios[mid])):
            lo = mid
        else:
            hi = mid
    return ratios[lo] if lo >= 0 else 0.0


def floor_choices(hparams: Mapping[str, Any], width_floor: float, ratio: float) -> dict[str, int]:
    """The narrowest choice each hparam may take: its smallest >= width_floor x ratio x its maximum, capped by its
    choice in the uniform subnet at ratio (width hparams only)."""
    uniform = uniform_config(hparams, ratio)
    lowest = {}
    for name, hp in hparams.items():
        wide = [c for c in hp.choices if c >= width_floor * ratio * hp.choices[-1] - EPS]
        lowest[name] = min(wide[0], uniform[name]) if hp.kind == "width" else hp.choices[0]
    return lowest


def floored_hparams(hparams: Mapping[str, Any], lowest: Mapping[str, int]) -> dict[str, Any]:
    """The hparams with only the choices >= their floor (unchanged when the floor is the smallest choice)."""
    out = {}
    for name, hp in hparams.items():
        low = lowest.get(name, hp.choices[0])
        out[name] = (
            hp if low == hp.choices[0] else dataclasses.replace(hp, choices=tuple(c for c in hp.choices if c >= low))
        )
    return out
