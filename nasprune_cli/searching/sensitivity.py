"""The FastNAS sensitivity map: the score of every single-hparam reduction, and the score drops derived from it.

drop(h, c) = original score - score of the model with only hparam h at choice c (every other hparam at its
maximum). Two modes (the `sensitivity` search setting):

- ``budget`` (default): drops are made monotone, a choice never drops less than a wider one of the same hparam
  (nor less than 0), and only the choices the budget can reach are scored. Hparams are probed widest choice first;
  the next probe goes to the hparam whose narrowest scored choice drops least. Every unscored choice then drops at
  least `limit()`, the smallest such drop, so any threshold below the limit selects the same subnet as with the
  complete map. Probing stops once the subnet at the largest known threshold below the limit fits the budgets:
  the threshold search ends below the limit, and the result is the one the complete monotone map gives.
- ``full``: every choice is scored and the measured drops are used as they are (the first version's map).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class SensitivityMap:
    """Drops, thresholds and probe order over the stored scores `{hparam: {choice: score}}` (updated in place)."""

    def __init__(self, hparams: Mapping[str, Any], scores: dict[str, dict[int, float]], original: float, mode: str):
        self.hparams = hparams
        self.scores = scores
        self.original = original
        self.monotone = mode != "full"

    def total(self) -> int:
        """Number of choices a complete map scores."""
        return sum(len(hp.choices) - 1 for hp in self.hparams.values())

    def done(self) -> int:
        """Number of choices scored so far."""
        return sum(len(v) for v in self.scores.values())

    def is_scored(self, name: str, choice: int) -> bool:
        """Whether a choice has a drop: it was scored, or it is the hparam's maximum."""
        return choice == self.hparams[name].choices[-1] or choice in self.scores.get(name, {})

    def record(self, name: str, choice: int, score: float) -> None:
        """Store the score of one hparam at one choice."""
        self.scores.setdefault(name, {})[choice] = float(score)

    def drop(self, name: str, choice: int) -> float:
        """Score drop of one hparam at one scored choice (0 at its maximum); monotone in "budget" mode."""
        choices = self.hparams[name].choices
        if choice == choices[-1]:
            return 0.0
        scores = self.scores[name]
        if not self.monotone:
            return self.original - scores[choice]
        wider = [self.original - scores[c] for c in choices[choices.index(choice) : -1] if c in scores]
        return max(0.0, *wider)

    def narrowest(self, name: str) -> int:
        """The narrowest choice of an hparam such that it and every wider choice are scored."""
        choices = self.hparams[name].choices
        idx = len(choices) - 1
        while idx > 0 and self.is_scored(name, choices[idx - 1]):
            idx -= 1
        return choices[idx]

    def limit(self) -> float:
        """Every unscored choice drops at least this much (monotone drops); inf when every choice is scored."""
        limits = [
            self.drop(name, self.narrowest(name))
            for name, hp in self.hparams.items()
            if self.narrowest(name) != hp.choices[0]
        ]
        return min(limits, default=float("inf"))

    def thresholds(self) -> list[float]:
        """Sorted distinct drops below the limit, and 0 (every hparam at its maximum): the thresholds to search."""
        drops = {0.0} | {self.drop(n, c) for n, scored in self.scores.items() for c in scored}
        limit = self.limit()
        return sorted(t for t in drops if t < limit)

    def config_at(self, threshold: float) -> dict[str, int]:
        """Every hparam at its smallest scored choice whose drop is <= threshold (the maximum always qualifies)."""
        config = {}
        for name, hp in self.hparams.items():
            allowed = [c for c in hp.choices[:-1] if c in self.scores.get(name, {}) and self.drop(name, c) <= threshold]
            config[name] = min(allowed, default=hp.choices[-1])
        return config

    def next_probe(self, fits: Callable[[dict[str, int]], bool]) -> tuple[str, int] | None:
        """The (hparam, choice) to score next, or None when the map decides the threshold search."""
        frontier: dict[str, tuple[float, int]] = {}  # hparam -> (drop of its narrowest scored choice, next choice)
        for name, hp in self.hparams.items():
            narrowest = self.narrowest(name)
            if narrowest == hp.choices[0]:
                continue
            below = hp.choices[hp.choices.index(narrowest) - 1]
            if not self.monotone:
                return name, below
            frontier[name] = (self.drop(name, narrowest), below)
        if not frontier:
            return None
        thresholds = self.thresholds()
        if thresholds and fits(self.config_at(thresholds[-1])):
            return None
        name = min(frontier, key=lambda n: frontier[n][0])  # ties: the first hparam
        return name, frontier[name][1]
