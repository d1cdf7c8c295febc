"""make_dynamic / set_index validation shared by every dynamic module."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from nasprune_cli.dynamic import DYNAMIC_REGISTRY, DynamicLinear, is_dynamic, make_dynamic
from nasprune_cli.errors import NasPruneError


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return make_dynamic(nn.Linear(6, 4), name="head.fc")


@pytest.mark.parametrize(
    ("side", "index", "match"),
    [
        ("middle", torch.tensor([0]), r"nn.Linear 'head.fc': unknown side 'middle' \(its sides: 'in', 'out'\)"),
        (
            "in",
            torch.tensor([0, 6]),
            r"nn.Linear 'head.fc': set_index\('in'\): positions must be in \[0, 6\) \(got 6\)",
        ),
        ("out", torch.tensor([-1, 2]), r"set_index\('out'\): positions must be in \[0, 4\) \(got -1\)"),
        ("in", torch.tensor([2, 1]), r"set_index\('in'\): the index is not in ascending order"),
        ("in", torch.tensor([1, 1, 2]), r"set_index\('in'\): the index has duplicate positions \(e.g. 1\)"),
        ("in", torch.tensor([], dtype=torch.long), r"set_index\('in'\): the index is empty"),
        ("in", torch.tensor([0.0, 1.0]), r"expected an integer tensor of positions \(got dtype torch.float32\)"),
        ("in", torch.tensor([True, False]), "for a mask use torch.nonzero"),
        ("in", torch.tensor([[0, 1]]), r"expected a 1-D tensor \(got shape \(1, 2\)\)"),
        ("in", [0, 1], r"expected a 1-D integer tensor or None \(got list\)"),
    ],
)
def test_set_index_validation(side: str, index: object, match: str) -> None:
    layer = _linear()
    with pytest.raises(NasPruneError, match=match):
        layer.set_index(side, index)
    assert layer.get_index("in") is None and layer.get_index("out") is None


def test_set_and_get_index() -> None:
    layer = _linear()
    layer.set_index("in", torch.tensor([1, 3], dtype=torch.int32))
    index = layer.get_index("in")
    assert index.dtype == torch.long and index.tolist() == [1, 3]
    assert layer.active_size("in") == 2 and layer.side_size("in") == 6
    assert layer(torch.randn(2, 2)).shape == (2, 4)
    assert "active: in=2/6" in repr(layer)
    layer.set_index("in", None)
    assert layer.get_index("in") is None and layer(torch.randn(2, 6)).shape == (2, 4)


def test_make_dynamic_is_in_place_idempotent_and_keeps_state_dict() -> None:
    torch.manual_seed(0)
    plain = nn.Linear(3, 2)
    keys = plain.state_dict()
    layer = make_dynamic(plain)
    assert layer is plain and type(layer) is DynamicLinear and is_dynamic(layer)
    assert make_dynamic(layer) is layer
    assert_close(layer.state_dict(), keys, rtol=0, atol=0)
    assert set(DYNAMIC_REGISTRY) >= {nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.Sequential}


# torch's own subclasses (here MultiheadAttention's out_proj) are not converted: their users bypass their forward
@pytest.mark.parametrize(
    "module", [nn.ReLU(), nn.Embedding(3, 2), nn.modules.linear.NonDynamicallyQuantizableLinear(3, 4)]
)
def test_make_dynamic_rejects_unsupported_types(module: nn.Module) -> None:
    with pytest.raises(
        NasPruneError,
        match=r"make_dynamic: layer 'x' of type .* cannot be converted; supported "
        r"types: .*nn.Conv2d.*their subclasses.*register_layer",
    ):
        make_dynamic(module, name="x")
    assert not is_dynamic(module)


def test_deepcopy_keeps_the_index_and_the_copy_is_independent() -> None:
    layer = _linear()
    layer.set_index("out", torch.tensor([0, 2]))
    clone = copy.deepcopy(layer)
    assert is_dynamic(clone) and clone.get_index("out").tolist() == [0, 2]
    clone.set_index("out", None)
    assert layer.get_index("out").tolist() == [0, 2]
    x = torch.randn(1, 6)
    assert_close(clone(x)[:, [0, 2]], layer(x))
