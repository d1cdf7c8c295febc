"""sort_parameters(): after sorting, width k keeps the k most important channels of a group (all its layers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasprune_cli import convert
from nasprune_cli.recipe.load import recipe_from_dict

RECIPE = recipe_from_dict(
    {
        "rules": {
            "nn.Conv2d": {"channels_ratio": [0.25, 0.5, 1.0], "channel_divisor": 1},
            "nn.BatchNorm2d": {"features_ratio": [0.25, 0.5, 1.0], "feature_divisor": 1},
        }
    }
)
WIDTH = 64


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, WIDTH, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(WIDTH)
        self.head = nn.Conv2d(WIDTH, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn0(self.c0(x))))


class Residual(Chain):
    """Two sources of one group (c0 and c1 are added), c1 also reads the group."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn0(self.c0(x)))
        y = y + self.bn1(self.c1(y))
        return self.head(y)


def with_importance(model: nn.Module, importance: torch.Tensor) -> nn.Module:
    """Channel c of the group weighs importance[c] in every layer that touches it (unit weights, random signs),
    so every magnitude-based measure, per layer or summed over the group, ranks the channels the same way."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                sign = torch.randint(0, 2, m.weight.shape, generator=gen).float() * 2 - 1
                m.weight.copy_(sign)
                if m.out_channels == WIDTH:
                    m.weight.mul_(importance.view(-1, 1, 1, 1))
                if m.in_channels == WIDTH:
                    m.weight.mul_(importance.view(1, -1, 1, 1))
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(importance)
                m.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("cls", [Chain, Residual])
@pytest.mark.parametrize("width", [16, 32])
def test_width_k_keeps_the_k_most_important_channels(cls: type[nn.Module], width: int) -> None:
    importance = 1.0 + torch.randperm(WIDTH, generator=torch.Generator().manual_seed(1)).float()
    model = with_importance(cls(), importance)
    x = torch.randn(2, 3, 8, 8)
    space = convert(model, RECIPE, x)
    (name,) = [n for n, hp in space.hparams.items() if hp.original == WIDTH]
    assert width in space.hparams[name].choices
    space.sort_parameters()
    space.select({name: width})
    exported = space.export()
    kept = sorted(exported.bn0.weight.tolist())  # the BN scales are the importances: they name the kept channels
    assert kept == sorted(importance.tolist())[-width:]
    if cls is Residual:
        assert sorted(exported.bn1.weight.tolist()) == kept  # both sources of the group keep the same channels
        assert exported.c1.weight.shape[:2] == (width, width)
    assert exported.head.weight.shape[1] == width
    assert not any(type(m).__module__.startswith("nasprune_cli") for m in exported.modules())  # plain torch modules
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x))  # the dynamic model runs the same subnet
