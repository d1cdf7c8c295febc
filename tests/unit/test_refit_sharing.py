"""What lets the refit be shared out among ranks and run fewer passes without changing a bit of its result: the
per-batch BatchNorm recalibration (averaged in batch order, stoppable at a layer), the tree order of the batch sums,
the original outputs captured several layers per pass, and the recalibration done only as far as the next layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasprune_cli.searching.reconstruct as reconstruct
from nasprune_cli.distributed import World
from nasprune_cli.metrics.recalibrate import recalibrate_bn
from nasprune_cli.searching.normals import Normal, _subtree, _top, summed_batches, summed_folds
from tests.unit.test_reconstruct import half_config, toy_space

pytestmark = pytest.mark.usefixtures("one_thread")


def two_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
    ).eval()


def image_batches(count: int = 3) -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(5, 3, 8, 8, generator=gen) * (i + 1),) for i in range(count)]


def test_recalibration_sets_the_average_of_each_batchs_own_statistics() -> None:
    net, batches = two_bn_net(), image_batches()
    means, variances = [], []
    with torch.no_grad():
        for (x,) in batches:
            h = net[0](x)  # the first norm layer's input does not depend on any statistics
            means.append(h.mean((0, 2, 3)))
            variances.append(h.var((0, 2, 3), unbiased=True))
    recalibrate_bn(net, batches)
    bn = net[1]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack(variances).mean(0), rtol=1e-5)
    assert int(bn.num_batches_tracked) == len(batches)
    assert not net.training and bn.momentum == 0.1  # modes and momentum put back


def test_recalibration_stopped_at_a_layer_updates_only_the_norm_layers_before_it() -> None:
    net, batches = two_bn_net(), image_batches()
    full = copy.deepcopy(net)
    recalibrate_bn(full, batches)
    before = {k: v.clone() for k, v in net[4].state_dict().items()}
    recalibrate_bn(net, batches, stop=net[3])
    for key, value in net[1].state_dict().items():  # the same bits as a full pass
        assert torch.equal(value, full[1].state_dict()[key]), key
    for key, value in net[4].state_dict().items():  # did not run: kept as it was
        assert torch.equal(value, before[key]), key
    assert not torch.equal(net[4].running_mean, full[4].running_mean)


@pytest.mark.parametrize("count", [1, 3, 5, 8])
def test_batch_sums_are_the_same_bits_whatever_the_number_of_summing_ranks(count: int) -> None:
    gen = torch.Generator().manual_seed(count)
    scales = [10.0 ** float(e) for e in torch.randint(-6, 7, (count,), generator=gen)]  # the order matters here
    values = [(torch.randn(4, 4, generator=gen, dtype=torch.float64) * s, s * 0.37) for s in scales]

    def batch(i: int) -> tuple[Normal, Normal]:
        xtx, yty = values[i]
        return Normal(xtx.clone(), xtx[:, :2].clone(), yty, 3), Normal()

    alone, empty = summed_folds(World(), count, batch, "test", torch.device("cpu"))
    assert alone.rows == 3 * count and empty.xtx is None
    for ranks in (2, 4, 8):
        parts = [_subtree(batch, rank, ranks, count) for rank in range(ranks)]
        total = _top(parts, 0, 1, ranks)
        assert total is not None
        assert torch.equal(total[0].xtx, alone.xtx) and torch.equal(total[0].xty, alone.xty), ranks
        assert total[0].yty == alone.yty and total[0].rows == alone.rows
    naive = values[0][0].clone()
    for xtx, _ in values[1:]:
        naive = naive + xtx
    assert count < 3 or not torch.equal(naive, alone.xtx)  # a plain running sum would give other bits here


def test_the_summing_ranks_are_the_largest_power_of_two_and_share_every_batch_once() -> None:
    for size in range(1, 9):
        covered = sorted(i for rank in range(size) for i in summed_batches(World(rank, size), 11))
        assert covered == list(range(11)), size
    assert list(summed_batches(World(2, 3), 11)) == []  # with 3 ranks, 2 sum and the third only solves


def refitted_weights(toy: str) -> dict[str, torch.Tensor]:
    _, space, batches = toy_space(toy)
    space.select(half_config(space))
    with reconstruct.reconstructed(space, batches) as report:
        assert len(report.layers) >= 2
        return {k: v.clone() for k, v in space.export().state_dict().items()}


@pytest.mark.parametrize("toy", ["chain", "residual"])
def test_capturing_several_layers_per_pass_refits_the_same_weights(toy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    passes = []
    capture = reconstruct._Targets._capture

    def counted(self: reconstruct._Targets, name: str, index: int) -> None:
        passes.append(name)
        capture(self, name, index)

    monkeypatch.setattr(reconstruct._Targets, "_capture", counted)
    windows = refitted_weights(toy)
    few = len(passes)
    passes.clear()
    monkeypatch.setattr(reconstruct, "TARGET_BYTES", 1)  # one layer per pass, as before the windows
    single = refitted_weights(toy)
    assert few == 4 and len(passes) > few  # one pass per batch while the budget lasts
    assert windows.keys() == single.keys()
    for key, value in single.items():
        assert torch.equal(windows[key], value), key


@pytest.mark.parametrize("toy", ["chain", "residual"])
def test_recalibrating_up_to_the_next_layer_refits_what_a_full_recalibration_does(
    toy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lazy = refitted_weights(toy)
    refit = reconstruct._refit

    def after_full_recalibration(regimes: reconstruct._Regimes, *args: object) -> None:
        regimes.calibrate("work")  # every norm layer, before every layer's fit
        refit(regimes, *args)

    monkeypatch.setattr(reconstruct, "_refit", after_full_recalibration)
    full = refitted_weights(toy)
    for key, value in full.items():
        assert torch.equal(lazy[key], value), key
    norms = [k for k in full if k.endswith("running_mean")]
    assert norms and all(torch.equal(lazy[k], full[k]) for k in norms)
