"""Search settings, the fingerprint that ties a checkpoint to one search, and RNG state as plain lists.

A searcher's whole state is one dict of plain values (dicts, lists, str, int, float, bool, None), so it can be
written with torch.save and read back with torch.load(weights_only=True).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from nasprune_cli.errors import SearchError
from nasprune_cli.importance import IMPORTANCE_METHODS
from nasprune_cli.searchers.sensitivity import SENSITIVITY_MODES

SEARCHERS = ("binary", "evolve", "random")
DEFAULT_CANDIDATE_SIZE = 10
AFTER_SEARCH = ("reconstruct",)  # settings applied to the found subnet only: a checkpoint resumes across them


@dataclass
class SearchSettings:
    """How a search runs (the recipe's `search` section, command-line flags win)."""

    searcher: str = "binary"
    seed: int = 0
    max_batches: int = 8  # data batches per evaluation (BN recalibration and the default score)
    fill: bool = True  # binary: after the threshold search, grow hparams greedily while the budget allows
    sensitivity: str = "budget"  # binary: budget (monotone drops, probe what the budget can reach) | full
    descent: bool = True  # binary: also build the cost-aware descent subnet, score both and keep the better
    width_floor: float = 0.0  # binary: no width below width_floor x the uniform ratio that meets the budget; 0: off
    rival_floor: float = 0.5  # binary: also score a descent whose widths stay >= rival_floor x that ratio; 0: off
    importance: str = "magnitude"  # channel order: magnitude | consumer (nasprune_cli.importance)
    reconstruct: bool = True  # refit the kept weights by least squares on the data after the search (needs data)
    iterations: int = 100  # evolve / random: subnets evaluated in total
    population_size: int = 20  # evolve: subnets per generation
    candidate_size: int | None = None  # evolve: best subnets kept as parents; None: min(10, population_size)
    mutation_prob: float = 0.1  # evolve: chance to resample each hparam of a mutated child
    crossover_size: int = 10  # evolve: children made by crossover per generation
    mutation_size: int = 10  # evolve: children made by mutation per generation

    def __post_init__(self) -> None:
        if self.candidate_size is None and isinstance(self.population_size, int):
            self.candidate_size = min(DEFAULT_CANDIDATE_SIZE, self.population_size)

    def check(self) -> SearchSettings:
        """Raise a SearchError for a value out of range; return self."""
        if self.searcher not in SEARCHERS:
            raise SearchError(f"search.searcher: unknown searcher {self.searcher!r} (expected one of {SEARCHERS})")
        positive = ("max_batches", "iterations", "population_size", "candidate_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f"search.{name}: expected an integer >= 1 (got {value!r})")
        for name in ("crossover_size", "mutation_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name != "seed" and value < 0):
                raise SearchError(f"search.{name}: expected an integer >= 0 (got {value!r})")
        for name in ("fill", "descent", "reconstruct"):
            if not isinstance(getattr(self, name), bool):
                raise SearchError(f"search.{name}: expected true or false (got {getattr(self, name)!r})")
        if self.sensitivity not in SENSITIVITY_MODES:
            raise SearchError(
                f"search.sensitivity: unknown mode {self.sensitivity!r} (expected one of {SENSITIVITY_MODES})"
            )
        if self.importance not in IMPORTANCE_METHODS:
            raise SearchError(
                f"search.importance: unknown method {self.importance!r} (expected one of {IMPORTANCE_METHODS})"
            )
        for name in ("width_floor", "rival_floor"):
            floor = getattr(self, name)
            if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
                raise SearchError(f"search.{name}: expected a number in [0, 1] (got {floor!r})")
        if not 0.0 <= float(self.mutation_prob) <= 1.0:
            raise SearchError(f"search.mutation_prob: expected a number in [0, 1] (got {self.mutation_prob!r})")
        if self.candidate_size > self.population_size:
            raise SearchError(
                f"search.candidate_size: must be <= population_size (got {self.candidate_size} > "
                f"{self.population_size})"
            )
        return self

    @classmethod
    def names(cls) -> list[str]:
        """Field names."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings."""
        return asdict(self)


def fingerprint(
    *,
    model: Mapping[str, Any],
    recipe: Mapping[str, Any] | None,
    settings: SearchSettings,
    bounds: Mapping[str, float],
    input_spec: Mapping[str, Any],
    hparams: Mapping[str, list[int]],
    score: str,
    data: str,
    collect: str,
    weights: str | None = None,
    latency: str | None = None,
) -> dict[str, Any]:
    """Everything a search result depends on, as plain JSON-able values (compared key by key on resume).

    `weights` is a digest of the model's parameters: a retrained (or freshly initialised) model is another model.
    `latency` is a digest of the latency table a "latency" constraint was measured with.
    """
    rules = None
    if recipe is not None:
        rules = {k: v for k, v in recipe.items() if k not in ("search", "description")}
    spec = {"entry_point": model.get("entry_point"), "kwargs": dict(model.get("kwargs") or {})}
    if weights is not None:
        spec["weights"] = weights
    result = {
        "model": spec,
        "recipe": rules,
        "settings": {k: v for k, v in settings.to_dict().items() if k not in AFTER_SEARCH},
        "constraints": {k: float(v) for k, v in sorted(bounds.items())},
        "input": dict(input_spec),
        "hparams": {k: list(v) for k, v in hparams.items()},
        "score": score,
        "data": data,
        "collect": collect,
    }
    if latency is not None:
        result["latency_table"] = latency
    return result


def rng_state(rng: random.Random) -> list[Any]:
    """random.Random state as nested lists (weights_only-safe)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Restore a state written by rng_state."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def config_key(config: Mapping[str, int]) -> str:
    """A hashable, stable key of a subnet config."""
    return ",".join(f"{k}={config[k]}" for k in sorted(config))
