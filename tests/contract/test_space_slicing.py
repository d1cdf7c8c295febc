"""Slicing the channel dim (split, narrow, indexing) next to prunable branches: the cut channels are frozen, the
rest stays prunable, and every random subnet exports to the dynamic model's outputs and fvcore's FLOPs."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nasprune_cli import convert
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from tests.toys import cbr


class SliceSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 128)
        self.mid = cbr(64, 96)
        self.other = cbr(32, 64)
        self.fc = nn.Linear(96 + 64 + 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.stem(x), [64, 64], dim=1)
        c = b[:, :32, 1:]  # a channel slice, and a spatial one
        d = b.narrow(1, 32, 32)[:, :, 1:]
        y = torch.cat([self.mid(a)[:, :, 1:], self.other(c), d], 1)
        return self.fc(y.mean((2, 3)))


def test_channel_slices_freeze_the_cut_channels_and_keep_the_rest_prunable() -> None:
    torch.manual_seed(0)
    model, x = SliceSplit().eval(), torch.randn(2, 3, 16, 16)
    space = convert(model, None, x)
    assert set(space.hparams) == {"mid.0.out_channels", "other.0.out_channels"}
    assert "stem.0" in {f.name for f in space.frozen}  # its channels are cut: never pruned
    for seed in range(3):
        config = space.sample(random.Random(seed))
        with torch.no_grad():
            exported = space.export().eval()
            torch.testing.assert_close(exported(x), model(x))
        assert space.cost(config).flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
        assert space.cost(config).params == count_params(exported)
