"""Parse FLOPs / params / latency budgets: numbers, SI suffixes, milliseconds or percentages of the original."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nasprune_cli.errors import NasPruneError

CONSTRAINT_NAMES = ("flops", "params", "latency")
_SUFFIXES = {
    "": 1.0,
    "k": 1e3,
    "K": 1e3,
    "m": 1e6,
    "M": 1e6,
    "g": 1e9,
    "G": 1e9,
    "b": 1e9,
    "B": 1e9,
    "t": 1e12,
    "T": 1e12,
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGbBtT]?)\s*$")
_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")
_PLAIN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_MILLISECONDS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*ms\s*$")


@dataclass(frozen=True)
class Cost:
    """FLOPs (one per multiply-add, as fvcore counts), parameter count and, with a latency table, latency (ms)."""

    flops: float
    params: float
    latency: float | None = None

    def get(self, name: str) -> float:
        """Return the figure for a constraint name ('flops', 'params' or 'latency')."""
        value = getattr(self, name)
        if value is None:
            raise NasPruneError(f"constraint '{name}': no latency table is attached to the search space")
        return float(value)


def parse_constraint(name: str, value: str | float | int, original: float) -> float:
    """Turn one budget ("60%", "450M", 4.5e8; latency: "60%", "25ms", 25) into an absolute upper bound."""
    if name not in CONSTRAINT_NAMES:
        raise NasPruneError(f"constraint '{name}': unknown (expected one of {', '.join(CONSTRAINT_NAMES)})")
    if isinstance(value, bool):
        raise NasPruneError(f"constraint '{name}': expected a number or a percentage such as '60%' (got {value!r})")
    if isinstance(value, (int, float)):
        bound = float(value)
    else:
        text = str(value)
        pct = _PERCENT.match(text)
        num = _NUMBER.match(text) if name != "latency" else _MILLISECONDS.match(text) or _PLAIN.match(text)
        if pct:
            share = float(pct.group(1))
            if not 0 < share <= 100:
                raise NasPruneError(f"constraint '{name}': percentage must be in (0%, 100%] (got {text!r})")
            bound = original * share / 100.0
        elif num:
            bound = float(num.group(1)) * (_SUFFIXES[num.group(2)] if name != "latency" else 1.0)
        elif name == "latency":
            raise NasPruneError(
                f"constraint 'latency': expected milliseconds ('25ms', 25) or a percentage of the original "
                f"latency ('60%') (got {text!r})"
            )
        else:
            raise NasPruneError(
                f"constraint '{name}': expected a number (4.5e8, 450M) or a percentage ('60%') (got {text!r})"
            )
    if not math.isfinite(bound) or bound <= 0:
        raise NasPruneError(f"constraint '{name}': must be a positive finite number (got {value!r})")
    return bound


def parse_constraints(constraints: Mapping[str, str | float | int | None], original: Cost) -> dict[str, float]:
    """Parse every budget of a constraints mapping into absolute upper bounds; None entries are dropped."""
    return {
        name: parse_constraint(name, value, original.get(name) if name in CONSTRAINT_NAMES else 0.0)
        for name, value in constraints.items()
        if value is not None
    }


def satisfies(cost: Cost, bounds: Mapping[str, float]) -> bool:
    """Whether a cost is within every upper bound."""
    return all(cost.get(name) <= bound for name, bound in bounds.items())
