"""Width choices of a group: the intersection over its layers' rules, and multiples of a GroupNorm's group count."""

from __future__ import annotations

import torch
from torch import nn

from nasprune_cli import convert
from nasprune_cli.recipe.load import recipe_from_dict


class TwoSources(nn.Module):
    """Two convs added together: one group of coupled channels, two source layers with their own rules."""

    def __init__(self, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 96, 3, padding=1)
        self.b = nn.Conv2d(3, 96, 1)
        self.norm = norm or nn.BatchNorm2d(96)
        self.head = nn.Conv2d(96, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.a(x) + self.b(x))))


def test_group_choices_are_the_intersection_of_its_layers_choices() -> None:
    recipe = recipe_from_dict(
        {
            "rules": {
                "nn.Conv2d": {
                    "*": {"channels_ratio": [0.25, 0.5, 0.75, 1.0], "channel_divisor": 8},  # 24, 48, 72, 96
                    "b": {"channels_ratio": [0.5, 1.0], "channel_divisor": 16},  # 48, 96
                },
                "nn.BatchNorm2d": {"features_ratio": [0.25, 0.5, 0.75, 1.0], "feature_divisor": 8},
            }
        }
    )
    space = convert(TwoSources(), recipe, torch.randn(1, 3, 8, 8))
    (hp,) = space.hparams.values()
    assert hp.choices == (48, 96) and hp.original == 96
    assert {"a.out", "b.out", "norm.features", "head.in"} <= set(hp.members)


def test_group_norm_choices_keep_the_group_count_valid() -> None:
    recipe = recipe_from_dict(
        {
            "rules": {
                "nn.Conv2d": {"channels_ratio": [0.25, 0.5, 0.75, 1.0], "channel_divisor": 8},  # 24, 48, 72, 96
                "nn.GroupNorm": {"channels_ratio": [0.25, 0.5, 0.75, 1.0], "channel_divisor": 8},
            }
        }
    )
    model = TwoSources(nn.GroupNorm(16, 96)).eval()  # 16 groups: 48 and 96 channels divide, 24 and 72 do not
    x = torch.randn(1, 3, 8, 8)
    space = convert(model, recipe, x)
    (hp,) = space.hparams.values()
    assert hp.choices == (48, 96)
    space.select({hp.name: 48})
    exported = space.export()
    assert exported.norm.num_channels == 48 and exported.norm.num_groups == 16
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x))
