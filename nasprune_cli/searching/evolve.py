"""AutoNAS evolutionary search: generations of mutated and crossed-over children of the best subnets.

Every child is repaired into the budget window (0.85x to 1x of each upper bound, as AutoNAS does) before it
is scored. A generation is drawn at once (its configs are part of the state), so a resumed search draws
exactly the same children as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasprune_cli.searching.base import config_key
from nasprune_cli.searching.random import RandomSearcher


class EvolveSearcher(RandomSearcher):
    """Population-based search: keep the `candidate_size` best subnets, breed the next generation from them."""

    name = "evolve"

    def default_state(self) -> dict[str, Any]:
        """Adds the generation counter, the pending children, the scored population and the parents."""
        state = super().default_state()
        state.update({"generation": 0, "pending": [], "population": [], "candidates": []})
        return state

    def mutate(self, parent: Mapping[str, int]) -> dict[str, int]:
        """Resample each hparam with probability mutation_prob."""
        child = {}
        for name in sorted(self.space.hparams):
            if self.rng.random() < self.settings.mutation_prob:
                child[name] = self.rng.choice(self.space.hparams[name].choices)
            else:
                child[name] = parent[name]
        return child

    def crossover(self, a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
        """Each hparam from one of two parents, with equal chance."""
        return {name: (a if self.rng.random() < 0.5 else b)[name] for name in sorted(self.space.hparams)}

    def next_generation(self) -> list[dict[str, int]]:
        """The configs of the next generation: mutations, crossovers, then random subnets."""
        size = self.settings.population_size
        parents = [c["config"] for c in self.state["candidates"]]
        avoid = set(self.seen)
        children: list[dict[str, int]] = []

        def add(make: Any) -> None:
            child = self.draw(make, avoid)
            avoid.add(config_key(child))
            children.append(child)

        if parents:
            n_mutate = min(self.settings.mutation_size, size)
            n_cross = min(self.settings.crossover_size, size - n_mutate)
            for _ in range(n_mutate):
                add(lambda rng: self.mutate(rng.choice(parents)))
            for _ in range(n_cross):
                add(lambda rng: self.crossover(*(rng.sample(parents, 2) if len(parents) > 1 else parents * 2)))
        while len(children) < size:
            add(self.random_config)
        return children

    def upcoming(self, remaining: int) -> list[dict[str, int]]:
        """Several ranks: the rest of the generation (drawn now when none is pending, as `step` would) that the loop
        will score; one process: none."""
        if self.world.size == 1:
            return []
        if not self.state["pending"]:
            self.state["pending"] = self.next_generation()
        avoid, configs = set(self.seen), []
        for config in self.state["pending"][:remaining]:
            if config_key(config) not in avoid:
                configs.append(config)
                avoid.add(config_key(config))
        return configs

    def step(self) -> None:
        """Score the next pending child; at the end of a generation, keep the best as parents."""
        state = self.state
        if not state["pending"]:
            state["pending"] = self.next_generation()
        config = state["pending"].pop(0)
        state["population"].append(self.score_config(config))
        if not state["pending"]:
            pool = state["candidates"] + state["population"]
            ranked = sorted(range(len(pool)), key=lambda i: (-pool[i]["score"], i))
            unique: dict[str, dict[str, Any]] = {}
            for i in ranked:
                unique.setdefault(config_key(pool[i]["config"]), pool[i])
            state["candidates"] = list(unique.values())[: self.settings.candidate_size]
            state["population"] = []
            state["generation"] += 1
