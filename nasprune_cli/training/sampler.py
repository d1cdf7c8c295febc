"""Subnet sampling while a search space trains: a random subnet per training forward, the active one in eval mode."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nasprune_cli.space import SearchSpace


def step_rng(seed: int, step: int) -> random.Random:
    """The random generator of one training step: a function of (seed, step) only, so a resumed run samples alike."""
    return random.Random(f"nasprune-train:{seed}:{step}")


def sandwich_configs(space: SearchSpace, rng: random.Random, num_random: int = 2) -> list[dict[str, int]]:
    """The subnets of one sandwich step: the largest, the smallest and `num_random` random ones (recipe choices,
    depths and kernel sizes included); selects nothing."""
    configs = [space.max(), space.min()]
    names = sorted(space.hparams)
    for _ in range(num_random):
        configs.append({n: rng.choice(space.hparams[n].choices) for n in names})
    return configs


@contextmanager
def sample_during_training(space: SearchSpace, seed: int = 0) -> Iterator[SearchSpace]:
    """While inside: every forward of `space.model` in training mode first selects a random subnet (seeded); in eval
    mode the active subnet runs. The subnet active before is selected again on exit.

    For your own training loop: `with sample_during_training(space): for x, y in data: loss(space.model(x), y)...`"""
    before = space.config()
    rng = random.Random(seed)

    def pre_hook(module: Any, args: Any) -> None:
        if module.training:
            space.sample(rng)

    handle = space.model.register_forward_pre_hook(pre_hook)
    try:
        yield space
    finally:
        handle.remove()
        space.select(before)
