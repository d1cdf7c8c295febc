"""eval_mode: every module in eval mode inside the block, each module's own flag back afterwards."""

from __future__ import annotations

import pytest
from torch import nn

from nasprune_cli.modes import eval_mode


def _mixed() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # a frozen norm inside a training model: its own flag must survive
    return model


def test_eval_inside_and_each_flag_restored() -> None:
    model = _mixed()
    before = [m.training for m in model.modules()]
    with eval_mode(model) as inner:
        assert inner is model
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before == [True, True, False, True]


def test_flags_restored_when_the_block_raises() -> None:
    model = _mixed()
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
