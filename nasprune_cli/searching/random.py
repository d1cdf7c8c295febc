"""Random search: subnets drawn at random, repaired into the budget window, each scored once."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from nasprune_cli.searching.base import Searcher, config_key

LOWER_BOUND_RATIO = 0.85  # candidates are kept between 0.85x and 1x of each upper bound
_MAX_RETRIES = 10  # attempts to draw a subnet that has not been scored yet


class RandomSearcher(Searcher):
    """Draws `iterations` random subnets within the budget window and keeps the best-scoring one."""

    name = "random"

    def before_search(self) -> None:
        """Original score, the lower bounds of the window and the scores seen so far."""
        super().before_search()
        self.lower = {k: LOWER_BOUND_RATIO * v for k, v in self.bounds.items()}
        self.seen: dict[str, float] = {config_key(e["config"]): e["score"] for e in self.state["history"]}

    # ---- sampling ----------------------------------------------------------------------------------------
    def in_window(self, config: Mapping[str, int]) -> bool:
        """Whether a subnet uses at least 85% of every budget."""
        cost = self.cost(config)
        return all(cost.get(k) >= bound for k, bound in self.lower.items())

    def repair(self, config: Mapping[str, int], rng: random.Random) -> dict[str, int]:
        """Shrink random hparams until the subnet fits, then grow random ones while it fits and is below 85%."""
        config = dict(config)
        names = sorted(self.space.hparams)
        choices = {n: self.space.hparams[n].choices for n in names}
        while not self.fits(config):
            shrinkable = [n for n in names if config[n] != choices[n][0]]
            name = rng.choice(shrinkable)  # never empty: the smallest subnet fits (checked before the search)
            config[name] = choices[name][choices[name].index(config[name]) - 1]
        while not self.in_window(config):
            growable = []
            for n in names:
                idx = choices[n].index(config[n])
                if idx + 1 < len(choices[n]) and self.fits({**config, n: choices[n][idx + 1]}):
                    growable.append(n)
            if not growable:
                break
            name = rng.choice(growable)
            config[name] = choices[name][choices[name].index(config[name]) + 1]
        return config

    def random_config(self, rng: random.Random) -> dict[str, int]:
        """A uniformly drawn subnet (not yet repaired)."""
        return {n: rng.choice(self.space.hparams[n].choices) for n in sorted(self.space.hparams)}

    def draw(self, make: Any, avoid: set[str]) -> dict[str, int]:
        """A repaired subnet from `make(rng)`, retrying a few times to avoid subnets in `avoid`."""
        config = self.repair(make(self.rng), self.rng)
        for _ in range(_MAX_RETRIES):
            if config_key(config) not in avoid:
                break
            config = self.repair(make(self.rng), self.rng)
        return config

    # ---- loop --------------------------------------------------------------------------------------------
    def next_config(self) -> dict[str, int]:
        """The next subnet to score."""
        return self.draw(self.random_config, set(self.seen))

    def score_config(self, config: Mapping[str, int]) -> dict[str, Any]:
        """Score a subnet (once: repeated subnets reuse their score) and record it."""
        key = config_key(config)
        if key not in self.seen:
            self.seen[key] = self.evaluate(config)
        return self.record(config, self.seen[key])

    def run_search(self) -> None:
        """`iterations` steps, each drawing, scoring and recording one subnet; checkpoint after each."""
        state = self.state
        total = self.settings.iterations
        self.progress("search", min(state["iteration"], total), total)
        while not state["done"] and state["iteration"] < total:
            upcoming = self.upcoming(total - state["iteration"])
            if upcoming and not self.is_prefetched(upcoming[0]):
                self.prefetch(upcoming)
            self.step()
            state["iteration"] += 1
            self.save_checkpoint()
            self.progress("search", state["iteration"], total)

    def upcoming(self, remaining: int) -> list[dict[str, int]]:
        """Several ranks: the next subnets the loop will score (one per rank, drawn ahead on a copy of the RNG, as
        the loop will draw them); one process: none."""
        if self.world.size == 1:
            return []
        ahead = random.Random()
        ahead.setstate(self.rng.getstate())
        own, self.rng = self.rng, ahead
        try:
            avoid, configs = set(self.seen), []
            for _ in range(min(remaining, self.world.size)):
                config = self.draw(self.random_config, avoid)
                if config_key(config) not in avoid:
                    configs.append(config)
                    avoid.add(config_key(config))
        finally:
            self.rng = own
        return configs

    def step(self) -> None:
        """One search step."""
        self.score_config(self.next_config())
