"""Model inputs: dummy inputs, the walk over nested tensors, the input spec, and eval_mode (every module in eval mode
inside the block, each module's own flag back afterwards)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasprune_cli.inputs import (
    batched_input,
    dummy_input_for,
    eval_mode,
    input_spec,
    input_tensors,
    make_dummy_input,
    tensors_in,
)


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


def test_dummy_input_is_seeded_randn_for_floats_and_zeros_for_ids() -> None:
    x = make_dummy_input([2, 3])
    assert torch.equal(x, torch.randn(2, 3, generator=torch.Generator().manual_seed(0)))
    a, ids = make_dummy_input([[1, 3], [1, 4]], "int64")
    assert ids.dtype == torch.int64 and not ids.any() and a.shape == (1, 3)
    assert make_dummy_input([1, 2], "float16").dtype == torch.float16
    assert torch.equal(dummy_input_for(None), make_dummy_input([1, 3, 224, 224]))


def test_tensors_in_walks_tuples_lists_and_dicts_in_order() -> None:
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    nested = (a, [b, {"z": c, "y": d}], 3, "text")
    assert [float(t) for t in tensors_in(nested)] == [0.0, 1.0, 2.0, 3.0]
    assert [float(t) for t in tensors_in(nested, sort_keys=True)] == [0.0, 1.0, 3.0, 2.0]
    assert tensors_in(5) == [] and tensors_in(a)[0] is a


def test_input_spec_and_input_tensors_read_the_top_level() -> None:
    x, ids = torch.zeros(1, 3, 8, 8), torch.zeros(1, 5, dtype=torch.long)
    assert input_spec(x) == {"shape": [1, 3, 8, 8], "dtype": "float32"}
    assert input_spec((ids, x)) == {"shape": [[1, 5], [1, 3, 8, 8]], "dtype": "int64"}
    assert input_spec(None) == {"shape": [], "dtype": "float32"}
    assert [t.shape for t in input_tensors([x, (ids,)])] == [x.shape]


def test_batched_input_sets_the_batch_dim() -> None:
    x, ids = torch.zeros(1, 3), torch.arange(4).view(1, 4)
    grown, grown_ids = batched_input((x, ids), 5)
    assert grown.shape == (5, 3) and torch.equal(grown_ids, ids.expand(5, 4))
    assert torch.equal(grown, torch.randn((5, 3), generator=torch.Generator().manual_seed(0)))
