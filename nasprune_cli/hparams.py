"""Hparam, a searchable choice of a converted model, and the depth gates its depth hparams imply.

Below the search space, the cost model and the latency table, which all gate the layers of skipped children the
same way (`depth_gates`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Hparam:
    """A searchable choice: a group's width, a Sequential's depth or a conv's kernel size."""

    name: str
    kind: str  # "width" | "depth" | "kernel"
    choices: tuple[int, ...]  # ascending
    original: int
    members: tuple[str, ...]  # layer sides / modules it changes


def depth_gates(hparams: Mapping[str, Hparam]) -> dict[str, tuple[str, int]]:
    """Skippable child module name -> (its depth hparam, threshold): the child runs while the hparam's value is
    greater than the threshold (a depth hparam's members are its children in order, the first at its smallest
    choice)."""
    return {
        child: (hp.name, hp.choices[0] + j)
        for hp in hparams.values()
        if hp.kind == "depth"
        for j, child in enumerate(hp.members)
    }
