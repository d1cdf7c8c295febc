"""Channel segments: concat outputs made of their inputs' segments, equal cuts (chunk, split(C // k), tensor_split)
tied to equal widths, a layer meeting a concat elementwise covering several hparams, and fixed-size cuts frozen
with a reason naming the literal. Contract checks on every segment toy: max subnet == original, the exported
model (run by the model's own forward) == the dynamic subnet at random subnets, fvcore FLOPs == the cost model."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli import convert
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.graph.groups import build_groups
from nasprune_cli.graph.trace import trace_model
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from tests.contract.test_space_toys import _randomize_bn
from tests.toys import SEGMENT_TOYS, C2f, ConvBnSiLU, cbr

MODEL_OUTPUT = "model output"
STALE = "fixed when the model was written, it would be stale once channels are removed"
# the detector's contract checks take ~30 s on two cores: with the zoo tests
NAMES = [pytest.param(n, marks=pytest.mark.zoo) if n == "tiny_yolo" else n for n in SEGMENT_TOYS]


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    cls, shape = SEGMENT_TOYS[name]
    torch.manual_seed(0)
    model = cls().eval()
    _randomize_bn(model, 0)
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _outputs(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("name", NAMES)
def test_max_subnet_of_a_segment_toy_is_the_original(name: str) -> None:
    model, x = _build(name)
    original = copy.deepcopy(model)
    space = convert(model, None, x)
    space.select(space.max())
    with torch.no_grad():
        for got, want in zip(_outputs(model(x)), _outputs(original(x)), strict=True):
            torch.testing.assert_close(got, want)
    assert space.cost(space.max()).flops == pytest.approx(fvcore_flops(original, x), abs=0.5)
    assert space.cost(space.max()).params == count_params(original)


@pytest.mark.parametrize("name", NAMES)
def test_segment_toy_exports_equal_the_dynamic_subnet(name: str) -> None:
    model, x = _build(name)
    space = convert(model, None, x)
    space.sort_parameters()  # each segment in its own importance order
    configs = [space.sample(random.Random(3)), space.min()]
    for config in configs:
        space.select(config)
        with torch.no_grad():
            dynamic_out = _outputs(model(x))
            exported = space.export().eval()
            exported_out = _outputs(exported(x))
        assert not any(is_dynamic(m) for m in exported.modules())
        for got, want in zip(exported_out, dynamic_out, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        cost = space.cost(config)
        assert cost.flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
        assert cost.params == count_params(exported)
    assert space.cost(space.min()).flops < space.cost(space.max()).flops


def test_c2f_chunk_halves_keep_equal_widths() -> None:
    model, x = _build("c2f")
    space = convert(model, None, x)
    assert [f.name for f in space.frozen] == ["fc"]
    group = next(g for g in space.grouping.groups if g.name == "c2f.cv1.conv.out_channels")
    assert group.blocks == 2 and group.cut_by == "'chunk' at c2f (C2f)"
    assert sorted(group.sources) == ["c2f.cv1.conv", "c2f.m.0.cv2.conv", "c2f.m.1.cv2.conv"]
    hp = space.hparams[group.name]
    assert all(c % 2 == 0 for c in hp.choices)
    space.select({hp.name: hp.choices[0]})
    half = hp.choices[0] // 2
    exported = space.export()
    assert exported.c2f.cv1.conv.out_channels == 2 * half
    assert exported.c2f.m[0].cv2.conv.out_channels == exported.c2f.m[1].cv1.conv.in_channels == half
    assert exported.c2f.cv2.conv.in_channels == 4 * half  # two halves + two bottleneck outputs, each `half`
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)


def test_each_half_keeps_its_own_most_important_channels() -> None:
    model, x = _build("c2f")
    space = convert(model, None, x)
    hp = space.hparams["c2f.cv1.conv.out_channels"]
    with torch.no_grad():  # the last channels of each half matter most (by magnitude)
        w = model.c2f.cv1.conv.weight
        w.mul_(0.01)
        w[48:64].mul_(1000)
        w[112:128].mul_(1000)
    space.sort_parameters()
    space.select({hp.name: 32})
    kept = space.export().c2f.cv1.conv.weight
    torch.testing.assert_close(kept, torch.cat([w[48:64], w[112:128]]))


def test_a_gate_after_a_concat_covers_both_segments() -> None:
    model, x = _build("concat_se")
    space = convert(model, None, x)
    b1, b2 = space.hparams["b1.0.out_channels"], space.hparams["b2.0.out_channels"]
    assert "fc2.out" in b1.members and "fc2.out" in b2.members  # fc2's channels: b1's segment then b2's
    space.select({b1.name: b1.choices[0], b2.name: b2.choices[-1]})
    exported = space.export()
    assert exported.fc2.out_channels == b1.choices[0] + b2.choices[-1] == exported.out[0].in_channels


def test_equal_split_computed_from_the_tensor_ties_both_parts() -> None:
    model, x = _build("equal_split")
    space = convert(model, None, x)
    stem = next(g for g in space.grouping.groups if g.name == "stem.0.out_channels")
    assert stem.frozen_reason is None and stem.blocks == 2
    assert "right.2.features" in stem.members  # the residual on the second part is in the stem's group
    mix = next(g for g in space.grouping.groups if g.name == "mix.0.out_channels")
    assert mix.frozen_reason is None and mix.blocks == 2


def test_concat_sliced_with_a_fixed_bound_stays_frozen() -> None:
    model, x = _build("ghost")
    space = convert(model, None, x)
    reasons = {f.name: f.reason for f in space.frozen}
    assert (
        reasons["ghost.primary.0"]
        == f"indexing slices the channel dim (1) with fixed bounds [:127] at ghost (GhostModule); {STALE}"
    )
    assert "ghost.primary.0.out_channels" not in space.hparams


def test_concat_sliced_to_its_whole_size_is_pruned() -> None:
    model, x = _build("ghost_full")  # cat([x1, x2])[:, :128] of 128 channels: the slice keeps them all
    space = convert(model, None, x)
    assert [f.name for f in space.frozen] == ["fc"]
    hp = space.hparams["ghost.primary.0.out_channels"]
    assert "short.0.out" in hp.members  # the shortcut's channel i and i + 64 are both the primary conv's channel i
    space.sort_parameters()
    space.select({hp.name: hp.choices[0]})
    exported = space.export()
    assert exported.ghost.oup == 128 and exported.mid[0].in_channels == 2 * hp.choices[0]  # the bound clamps
    assert exported.short[0].out_channels == 2 * hp.choices[0]
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(exported)(x), model(x), rtol=1e-4, atol=1e-5)


def test_yolo_style_detector_keeps_only_the_heads_output_convs() -> None:
    model, x = _build("tiny_yolo")
    space = convert(model, None, x)
    frozen = {f.name: f.reason for f in space.frozen}
    assert sorted(frozen) == sorted(f"detect.{branch}.{level}.2" for branch in ("cv2", "cv3") for level in range(3))
    assert all(MODEL_OUTPUT in reason for reason in frozen.values())
    chunked = [g for g in space.grouping.groups if g.blocks == 2]
    assert len(chunked) == sum(isinstance(m, C2f) for m in model.modules())  # every C2f's cv1
    assert space.cost(space.min()).flops < 0.3 * space.original_cost.flops


class _Cuts(nn.Module):
    """One cut of a 64-channel conv output, chosen by `how`."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = cbr(3, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if self.how == "split_list":
            p, q = torch.split(y, [16, 48], dim=1)
        elif self.how == "split_int":
            p, q = y.split(32, 1)
        elif self.how == "narrow":
            p, q = y.narrow(1, 0, 32), y.narrow(1, 32, 32)
        else:
            p, q, r = y.chunk(3, 1)
            q = torch.cat([q, r], 1)
        return torch.cat([p, q], 1).mean((2, 3))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("split_list", f"'split' cuts the channel dim (1) into fixed sizes [16, 48] at the model's forward(); {STALE}"),
        (
            "split_int",
            f"'split' cuts the channel dim (1) into parts of a fixed size 32 at the model's forward(); {STALE}",
        ),
        (
            "narrow",
            "'narrow' takes a fixed range of the channel dim (1): start 0, length 32 at the model's forward(); "
            + STALE,
        ),
        (
            "chunk",
            "'chunk' cuts the channel dim (1) into 3 parts of unequal sizes [22, 22, 20] at the model's forward(); "
            + STALE,
        ),
    ],
)
def test_cuts_with_sizes_fixed_at_construction_freeze_with_the_literal(how: str, reason: str) -> None:
    torch.manual_seed(0)
    grouping = build_groups(trace_model(_Cuts(how), torch.randn(2, 3, 8, 8)))
    assert next(g for g in grouping.groups if g.name == "a.0.out_channels").frozen_reason == reason


def test_a_chunk_part_split_further_freezes_the_cut() -> None:
    class Uneven(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = ConvBnSiLU(3, 64)
            self.b = ConvBnSiLU(3, 16)
            self.c = ConvBnSiLU(3, 16)
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p, q = self.a(x).chunk(2, 1)
            return self.fc(torch.cat([p, q + torch.cat([self.b(x), self.c(x)], 1)], 1).mean((2, 3)))

    grouping = build_groups(trace_model(Uneven(), torch.randn(2, 3, 8, 8)))
    reason = next(g for g in grouping.groups if g.name.startswith("a.conv.out_channels")).frozen_reason
    assert reason == (
        "'chunk' at the model's forward() cuts these channels into 2 equal parts, but other layers split or pair the "
        "parts unevenly (each part must be pruned as one segment)"
    )


def test_c2f_without_shortcut_prunes_the_bottleneck_outputs_on_their_own() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(ConvBnSiLU(3, 64), C2f(64, 128, n=1), ConvBnSiLU(128, 8)).eval(), torch.randn(2, 3, 8, 8)
    space = convert(model, None, x)
    assert {"1.cv1.conv.out_channels", "1.m.0.cv2.conv.out_channels"} <= set(space.hparams)


class _PooledByCopy(nn.Module):
    """MultiScaleRoIAlign's pattern: a zeros tensor of the features' channel count, filled by index."""

    def __init__(self, write: str) -> None:
        super().__init__()
        self.write = write
        self.a = cbr(3, 64)
        self.fc = nn.Linear(64 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(self.a(x), 2)
        result = torch.zeros((4, y.shape[1], 2, 2))
        if self.write == "rows":
            result[torch.tensor([0, 2])] = y
        else:  # a tuple index: nasprune does not follow which dims it reaches
            result[0:2, ...] = y
        return self.fc(result.flatten(1))


def test_a_zeros_tensor_of_the_channel_count_filled_by_rows_stays_prunable() -> None:
    torch.manual_seed(0)
    model, x = _PooledByCopy("rows").eval(), torch.randn(2, 3, 8, 8)
    space = convert(model, None, x)
    assert "a.0.out_channels" in space.hparams and "fc.in" in space.hparams["a.0.out_channels"].members
    config = space.sample(random.Random(1))
    with torch.no_grad():
        exported = space.export().eval()
        torch.testing.assert_close(exported(x), model(x))
    assert space.cost(config).flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
    frozen = {f.name: f.reason for f in convert(_PooledByCopy("tuple").eval(), None, x).frozen}
    assert frozen["a.0"].startswith("'__setitem__' writes channels into a tensor at the model's forward()")
