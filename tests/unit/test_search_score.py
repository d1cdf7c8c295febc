"""Scoring: BN recalibration, the default output-agreement score, checked score functions and data loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nasprune_cli.errors import SearchError
from nasprune_cli.inputs import call_model, random_batches
from nasprune_cli.metrics.score import (
    Evaluator,
    check_score,
    default_collect,
    load_batches,
    output_agreement,
    recalibrate_bn,
)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=0.3), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


def batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 6, 6, generator=gen) * 2 + 1, torch.zeros(4)) for _ in range(n)]


def test_recalibration_is_a_pure_function_of_weights_and_data() -> None:
    net = small_net()
    bn = net[1]
    recalibrate_bn(net, batches())
    first = (bn.running_mean.clone(), bn.running_var.clone())
    bn.running_mean.fill_(42.0)  # whatever the statistics were before
    recalibrate_bn(net, batches())
    assert torch.equal(bn.running_mean, first[0]) and torch.equal(bn.running_var, first[1])
    assert int(bn.num_batches_tracked) == 3
    # cumulative average over the batches, not an exponential one
    x = torch.cat([b[0] for b in batches()])
    pre = net[0](x)
    assert torch.allclose(bn.running_mean, pre.mean((0, 2, 3)), atol=1e-5)


def test_recalibration_restores_modes_and_momentum() -> None:
    net = small_net()
    net.train()
    net[3].eval()
    recalibrate_bn(net, batches())
    assert net[1].momentum == 0.3
    assert net.training and net[1].training and not net[3].training
    net.eval()
    recalibrate_bn(net, batches())
    assert not any(m.training for m in net.modules())


def test_output_agreement() -> None:
    ref = [torch.randn(4, 10), torch.randn(4, 10)]
    assert output_agreement(ref, ref) == 1.0
    assert output_agreement([r + 0.1 for r in ref], ref) < 1.0
    mean_only = [torch.full_like(r, float(r.mean())) for r in ref]
    assert output_agreement(mean_only, ref) == pytest.approx(0.0, abs=0.05)
    # tuple / dict outputs: every float tensor counts, int tensors are ignored
    out = [{"a": r, "ids": torch.arange(3)} for r in ref]
    assert output_agreement(out, out) == 1.0
    with pytest.raises(SearchError, match="do not have the shapes"):
        output_agreement([torch.zeros(4, 5)], [torch.zeros(4, 10)])


def test_default_collect_and_call_model() -> None:
    x = torch.ones(2)
    assert default_collect((x, 1)) is x
    assert default_collect([x, 1]) is x
    assert default_collect(x) is x
    assert call_model(lambda a, b=0: a + b, (x, {"b": 1})).tolist() == [2.0, 2.0]
    assert call_model(lambda a, b: a * b, (x, x)).tolist() == [1.0, 1.0]


def test_random_batches_are_seeded_and_large_enough_for_batchnorm() -> None:
    dummy = (torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, dtype=torch.long))
    a, b = random_batches(dummy, 2, seed=0), random_batches(dummy, 2, seed=0)
    assert len(a) == 2 and a[0][0].shape == (8, 3, 4, 4) and a[0][1].shape == (8, 5)
    assert torch.equal(a[1][0], b[1][0]) and not torch.equal(a[0][0], a[1][0])
    assert a[0][1].dtype == torch.long


def test_random_batches_of_a_list_input_are_lists_of_new_random_images_shaped_like_its_own() -> None:
    images = [torch.rand(3, 10, 12), torch.rand(3, 8, 8)]  # a detector's input: a list of images of any size
    a, b = random_batches((images,), 2, seed=0), random_batches((images,), 2, seed=0)
    assert len(a) == 2 and all(isinstance(batch, tuple) and isinstance(batch[0], list) for batch in a)
    shapes = [tuple(t.shape) for t in a[0][0]]
    assert shapes == [(3, 10, 12), (3, 8, 8)] * 4  # at least 8 images: BatchNorm needs more than one value
    assert all(torch.equal(x, y) for x, y in zip(a[1][0], b[1][0], strict=True))
    assert not torch.equal(a[0][0][0], a[1][0][0]) and not torch.equal(a[0][0][0], images[0])
    ids = random_batches(([torch.zeros(5, dtype=torch.long)],), 1, high=7)[0][0]
    assert len(ids) == 8 and all(t.dtype == torch.long and int(t.max()) < 7 for t in ids)


def test_default_score_is_one_for_the_original_and_lower_when_changed() -> None:
    net = small_net()
    ev = Evaluator(net, batches())
    ev.prepare()
    assert ev() == pytest.approx(1.0)
    with torch.no_grad():
        net[0].weight.mul_(0.5)
    assert ev() < 1.0


def test_every_evaluation_scores_with_freshly_recalibrated_bn() -> None:
    net = small_net().train()
    bn = net[1]
    recalibrate_bn(net, batches())
    expected = bn.running_mean.clone()
    seen = []

    def score(model: nn.Module) -> float:
        seen.append((bn.running_mean.clone(), model.training))
        return 1.0

    ev = Evaluator(net, batches(), score_fn=score)
    for _ in range(3):
        bn.running_mean.fill_(42.0)  # stale statistics, e.g. those of another subnet
        assert ev() == 1.0
    assert len(seen) == 3 and all(torch.equal(mean, expected) and not training for mean, training in seen)
    assert net.training and bn.momentum == 0.3  # modes and momentum are put back


def test_score_function_runs_in_eval_mode_and_errors_name_it() -> None:
    net = small_net().train()
    seen = []

    def acc(model: nn.Module) -> float:
        seen.append(model.training)
        return 0.5

    assert Evaluator(net, batches(), score_fn=acc, score_name="pkg.mod:acc")() == 0.5
    assert seen == [False] and net.training

    def boom(model: nn.Module) -> float:
        raise ValueError("bad labels")

    with pytest.raises(SearchError, match=r"score function 'pkg.mod:boom' raised ValueError: bad labels"):
        Evaluator(net, batches(), score_fn=boom, score_name="pkg.mod:boom")()
    with pytest.raises(SearchError, match=r"score function 'pkg.mod:nan' returned nan, expected a finite float"):
        Evaluator(net, batches(), score_fn=lambda m: float("nan"), score_name="pkg.mod:nan")()
    assert net.training


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), (1, 1.0), (torch.tensor(0.25), 0.25), (np.float32(0.75), 0.75), (torch.tensor([2.0]), 2.0)],
)
def test_check_score_accepts_numbers(value: object, expected: float) -> None:
    assert check_score(value, "f") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "returned nan"),
        (math.inf, "returned inf"),
        ("0.9", "returned str '0.9', expected a float"),
        (None, "returned NoneType"),
        (True, "returned bool"),
        (torch.zeros(3), "returned Tensor"),
    ],
)
def test_check_score_rejects_non_numbers(value: object, message: str) -> None:
    with pytest.raises(SearchError, match=f"score function 'pkg:f' {message}"):
        check_score(value, "pkg:f")


def test_load_batches() -> None:
    assert len(load_batches(lambda: iter(range(10)), 3, "d")) == 3
    assert load_batches([1, 2], 8, "d") == [1, 2]
    with pytest.raises(SearchError, match="data 'pkg:d' returned int, expected an iterable of batches"):
        load_batches(lambda: 3, 2, "pkg:d")
    with pytest.raises(SearchError, match="data 'pkg:d' yielded no batches"):
        load_batches(lambda: [], 2, "pkg:d")

    def fail() -> list:
        raise OSError("no such dir")

    with pytest.raises(SearchError, match="data function 'pkg:d' raised OSError: no such dir"):
        load_batches(fail, 2, "pkg:d")


def test_collect_and_model_errors_are_search_errors() -> None:
    net = small_net()
    ev = Evaluator(net, [{"x": 1}], collect=lambda b: b["missing"], collect_name="pkg:collect")
    with pytest.raises(SearchError, match="collect function 'pkg:collect' raised KeyError"):
        ev()
    ev = Evaluator(net, [torch.zeros(2, 5)])
    with pytest.raises(SearchError, match="check --data and --collect|check that --collect"):
        ev.prepare()
