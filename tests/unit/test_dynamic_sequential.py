"""DynamicSequential: depth runs the first children, export keeps their names."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from nasprune_cli.dynamic import make_dynamic
from nasprune_cli.errors import NasPruneError


def _seq() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict([("fc1", nn.Linear(5, 5)), ("act", nn.ReLU()), ("fc2", nn.Linear(5, 5)), ("out", nn.Tanh())])
    )


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
def test_depth_runs_the_first_children_and_export_keeps_names(depth: int) -> None:
    seq = make_dynamic(_seq())
    children = list(seq.children())
    x = torch.randn(3, 5)
    seq.set_depth(depth)
    ref = x
    for child in children[:depth]:
        ref = child(ref)
    assert_close(seq(x), ref, rtol=0, atol=0)
    plain = seq.export()
    assert type(plain) is nn.Sequential
    assert [name for name, _ in plain.named_children()] == ["fc1", "act", "fc2", "out"][:depth]
    assert set(plain.state_dict()) <= set(seq.state_dict())
    assert_close(plain(x), ref, rtol=0, atol=0)
    assert len(seq) == 4  # the dynamic Sequential itself is unchanged


def test_depth_none_and_full_run_everything() -> None:
    seq = make_dynamic(_seq())
    x = torch.randn(2, 5)
    ref = _seq()(x)
    seq.set_depth(4)
    assert seq.get_depth() is None and seq.active_depth() == 4
    assert_close(seq(x), ref, rtol=0, atol=0)
    seq.set_depth(None)
    assert_close(seq(x), ref, rtol=0, atol=0)
    assert seq.sides() == ()


@pytest.mark.parametrize("depth", [-1, 5, 2.0, True])
def test_bad_depth_raises(depth: object) -> None:
    seq = make_dynamic(_seq())
    with pytest.raises(NasPruneError, match=r"set_depth.*expected an int in \[0, 4\]"):
        seq.set_depth(depth)


def test_sequential_has_no_sides() -> None:
    seq = make_dynamic(_seq())
    with pytest.raises(NasPruneError, match=r"nn.Sequential: unknown side 'in' \(its sides: none\)"):
        seq.set_index("in", torch.tensor([0]))


def test_skipped_inner_children_are_left_out_of_forward_and_export() -> None:
    seq = make_dynamic(_seq())
    fc1, act, fc2, out = seq.children()
    x = torch.randn(3, 5)
    seq.set_skipped({1, 2})
    assert seq.skipped() == frozenset({1, 2}) and seq.get_depth() is None and seq.active_depth() == 2
    assert_close(seq(x), out(fc1(x)), rtol=0, atol=0)
    plain = seq.export()
    assert [name for name, _ in plain.named_children()] == ["fc1", "out"]
    assert_close(plain(x), out(fc1(x)), rtol=0, atol=0)
    seq.set_skipped({2, 3})
    assert seq.get_depth() == 2  # a trailing skip is a depth
    seq.set_skipped(None)
    assert_close(seq(x), _seq()(x), rtol=0, atol=0)


@pytest.mark.parametrize("positions", [{4}, {-1}, {True}, {1.0}])
def test_bad_skip_positions_raise(positions: set) -> None:
    seq = make_dynamic(_seq())
    with pytest.raises(NasPruneError, match=r"set_skipped.*expected positions in \[0, 4\)"):
        seq.set_skipped(positions)
