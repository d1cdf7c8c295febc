"""Training a search space: the subnet sampler and the sandwich step (modelopt's sampling during training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasprune_cli.conversion import convert
from nasprune_cli.recipe.load import recipe_from_dict
from nasprune_cli.training import TrainSettings, sample_during_training, sandwich_configs, sandwich_step
from nasprune_cli.training.sampler import step_rng
from tests.toys import cbr

RULES = {
    "nn.Conv2d": {"channel_divisor": 4, "kernel_size": [1, 3]},
    "nn.BatchNorm2d": {},
    "nn.Sequential": {"1": {"min_depth": 1}},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def deep_space():
    """Width, depth and kernel-size hparams on a small conv net (logits out)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        cbr(3, 8),
        nn.Sequential(cbr(8, 8), cbr(8, 8), cbr(8, 8)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    return convert(model.eval(), recipe_from_dict({"mode": "autonas", "rules": RULES}), torch.randn(1, 3, 8, 8))


def test_the_space_has_every_kind_of_hparam() -> None:
    kinds = {hp.kind for hp in deep_space().hparams.values()}
    assert {"depth", "kernel"} <= kinds and len(kinds) >= 3


def test_every_choice_is_reachable_by_the_sampler() -> None:
    space = deep_space()
    seen: dict[str, set[int]] = {name: set() for name in space.hparams}
    with sample_during_training(space, seed=3):
        space.model.train()
        for _ in range(60):
            space.model(torch.randn(2, 3, 8, 8))
            for name, value in space.config().items():
                seen[name].add(value)
    assert seen == {name: set(hp.choices) for name, hp in space.hparams.items()}


def test_eval_mode_runs_the_active_subnet_and_the_subnet_before_is_back_on_exit() -> None:
    space = deep_space()
    space.select(space.min())
    before = space.config()
    with sample_during_training(space, seed=0):
        space.model.eval()
        for _ in range(5):
            space.model(torch.randn(1, 3, 8, 8))
            assert space.config() == before
        space.model.train()
        configs = set()
        for _ in range(5):
            space.model(torch.randn(2, 3, 8, 8))
            configs.add(tuple(sorted(space.config().items())))
        assert len(configs) > 1
    assert space.config() == before
    space.model.train()
    space.model(torch.randn(2, 3, 8, 8))  # the hook is gone: no more sampling
    assert space.config() == before


def test_the_sampler_is_seeded() -> None:
    space = deep_space()
    assert sandwich_configs(space, step_rng(7, 3)) == sandwich_configs(space, step_rng(7, 3))
    assert sandwich_configs(space, step_rng(7, 3)) != sandwich_configs(space, step_rng(7, 4))


@pytest.mark.parametrize("loss", ["ce", "ce+kd"])
def test_each_sandwich_step_trains_the_largest_and_the_smallest_subnet(loss: str) -> None:
    space = deep_space()
    teacher = space.export() if "kd" in loss else None
    settings = TrainSettings(loss=loss, num_random=2)
    batch = (torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    space.model.train()
    for step in range(3):
        space.model.zero_grad()
        done = sandwich_step(space, batch, step, settings, teacher)
        assert done.configs[0] == space.max() and done.configs[1] == space.min()
        assert len(done.configs) == 4 and len(done.losses) == 4
        assert all(torch.isfinite(torch.tensor(done.losses)))
        assert space.config() == space.max()  # the largest is active after the step
        grads = [p.grad for p in space.model.parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_the_random_subnets_of_a_step_vary() -> None:
    space = deep_space()
    configs = [tuple(sorted(c.items())) for s in range(6) for c in sandwich_configs(space, step_rng(0, s))[2:]]
    assert len(set(configs)) > 1
    assert all(dict(c)[n] in space.hparams[n].choices for c in configs for n in space.hparams)
