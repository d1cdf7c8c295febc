"""The tracer finds the right groups of coupled channels and freezes what it cannot prove safe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.errors import TraceError
from nasprune_cli.graph.groups import _one_copy, apply_block_constraints, build_groups
from nasprune_cli.graph.ops import _reshape_groups
from nasprune_cli.graph.trace import trace_model
from tests.toys import TOYS

OUTPUT = "model output (the channels of the model's outputs are never pruned)"
FORWARD = "at the model's forward()"  # where a reason points when the op runs in the top-level forward


def groups_of(name: str) -> dict[str, tuple[list[str], str | None]]:
    cls, shape = TOYS[name]
    torch.manual_seed(0)
    grouping = build_groups(trace_model(cls(), torch.randn(shape)))
    return {g.name: (sorted(g.sources), g.frozen_reason) for g in grouping.groups}


def prunable(name: str) -> dict[str, list[str]]:
    return {k: v[0] for k, v in groups_of(name).items() if v[1] is None}


def test_residual_adds_unite_the_stream() -> None:
    groups = prunable("residual")
    assert groups["stem.0.out_channels"] == ["a.1", "b.1", "stem.0"]
    assert set(groups) == {"stem.0.out_channels", "a.0.0.out_channels", "b.0.0.out_channels"}


def test_model_output_is_frozen() -> None:
    sources, reason = groups_of("chain")["head.out_channels"]
    assert reason == OUTPUT


def test_concat_keeps_each_input_prunable() -> None:
    assert set(prunable("concat")) == {
        "stem.0.out_channels",
        "left.0.out_channels",
        "right.0.out_channels",
        "fuse.0.out_channels",
    }


def test_chunk_on_channels_cuts_equal_segments_that_stay_prunable() -> None:
    cls, shape = TOYS["split"]
    grouping = build_groups(trace_model(cls(), torch.randn(shape)))
    stem = next(g for g in grouping.groups if g.name == "stem.0.out_channels")
    assert stem.frozen_reason is None and stem.blocks == 2  # each half keeps the same number of channels
    assert torch.equal(stem.block_of, torch.arange(128) // 64)
    assert {g.name: g.frozen_reason for g in grouping.groups}["branch.1.0.out_channels"] is None


def test_depthwise_follows_its_input() -> None:
    cls, shape = TOYS["depthwise"]
    grouping = build_groups(trace_model(cls(), torch.randn(shape)))
    group = next(g for g in grouping.groups if g.name == "expand.0.out_channels")
    assert group.frozen_reason is None
    assert {"dw.0.in", "dw.0.out", "dw.1.features", "project.0.in"} <= set(group.members)


def test_grouped_conv_constrains_both_sides_to_whole_blocks() -> None:
    cls, shape = TOYS["grouped"]
    trace = trace_model(cls(), torch.randn(shape))
    grouping = build_groups(trace)
    apply_block_constraints(trace, grouping)
    by_name = {g.name: g for g in grouping.groups}
    for name in ("stem.0.out_channels", "grouped.0.out_channels"):
        group = by_name[name]
        assert group.frozen_reason is None and group.blocks == 4
        assert torch.equal(torch.bincount(group.block_of), torch.full((4,), group.size // 4))


def test_depthwise_with_multiplier_ties_each_output_to_its_input() -> None:
    class Multiplier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 32, 1)
            self.dw = nn.Conv2d(32, 64, 3, groups=32)
            self.b = nn.Conv2d(64, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.dw(self.a(x)))

    trace = trace_model(Multiplier(), torch.randn(1, 3, 8, 8))
    grouping = build_groups(trace)
    group = next(g for g in grouping.groups if g.name == "a.out_channels")
    assert group.frozen_reason is None and {"dw.in", "dw.out", "b.in"} <= set(group.members)
    a_ids = trace.sides[("a", "out")].vec
    assert torch.equal(trace.sides[("dw", "out")].vec, a_ids.repeat_interleave(2))  # out j reads in j // 2


def test_a_layer_added_to_a_multiplied_depthwise_output_keeps_both_copies() -> None:
    trace = trace_model(TOYS["depthwise_multiplier"][0](), torch.randn(1, 3, 8, 8))
    grouping = build_groups(trace)
    group = next(g for g in grouping.groups if g.name == "stem.0.out_channels")
    assert group.frozen_reason is None and group.size == 64 and "mix.0.out" in group.members
    stem_ids = trace.book.roots()[trace.sides[("stem.0", "out")].vec]
    assert torch.equal(trace.book.roots()[trace.sides[("mix.0", "out")].vec], stem_ids.repeat_interleave(2))


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        ([4, 2, 7], [4, 2, 7]),
        ([4, 2, 7, 4, 2, 7], [4, 2, 7]),  # cat([x1, dw(x1)]): two equal copies
        ([4, 4, 2, 2, 7, 7], [4, 2, 7]),  # a depthwise conv with channel multiplier 2
        ([4, 4, 4, 4], None),  # one channel broadcast over four
        ([4, 2, 7, 2, 4, 7], None),
        ([4, 2, 4, 2, 7], None),
    ],
)
def test_a_source_may_repeat_its_channels_only_as_copies_or_multiples(roots: list[int], expected: list | None) -> None:
    assert _one_copy(roots) == expected


def test_transposed_depthwise_with_multiplier_is_frozen() -> None:
    class Multiplier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 32, 1)
            self.dw = nn.ConvTranspose2d(32, 64, 3, groups=32)
            self.b = nn.Conv2d(64, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.dw(self.a(x)))

    grouping = build_groups(trace_model(Multiplier(), torch.randn(1, 3, 8, 8)))
    reasons = {g.name: g.frozen_reason for g in grouping.groups}
    expected = "dw: depthwise convolution with channel multiplier 2 is kept whole"
    assert reasons["a.out_channels"] == reasons["dw.out_channels"] == expected


def test_shared_layer_unites_its_calls() -> None:
    assert prunable("shared")["stem.0.out_channels"] == ["shared", "stem.0"]


def test_squeeze_excite_scale_unites_with_the_stream() -> None:
    assert prunable("squeeze_excite")["stem.0.out_channels"] == ["fc2", "stem.0"]


def test_padding_the_channel_dim_freezes_only_the_padded_positions() -> None:
    groups = groups_of("pad_channels")
    assert groups["body.0.out_channels[32 of 64]"] == (["body.0"], f"'add' pairs them with fixed positions {FORWARD}")
    assert groups["stem.0.out_channels"] == (["body.0", "stem.0"], None)  # body's middle channels: stem's segment
    assert groups["inner.0.out_channels"][1] is None


def test_channel_shuffle_is_frozen() -> None:
    groups = groups_of("shuffle")
    assert (
        groups["stem.0.out_channels"][1]
        == f"the model computes with its channel count (read by shape.__get__ {FORWARD})"
    )
    assert groups["branch.0.0.out_channels"][1] is None


def test_attention_prunes_mlp_hidden_and_freezes_head_split() -> None:
    groups = groups_of("attention")
    assert groups["mlp.0.out_features"][1] is None
    assert groups["qkv.out_features"][1] == f"'reshape' splits the channel dim (2, 8, 64) -> (2, 8, 4, 16) {FORWARD}"
    # `b, t, d = x.shape` reads the stream width into Python: it must be frozen
    assert (
        groups["embed.out_features"][1]
        == f"the model computes with its channel count (read by shape.__get__ {FORWARD})"
    )


def test_flatten_into_linear_keeps_the_conv_prunable() -> None:
    assert "features.2.0.out_channels" in prunable("flatten_linear")


def test_unknown_op_freezes_its_inputs() -> None:
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 64, 3)
            self.b = nn.Conv2d(64, 10, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.fft.fft(self.a(x)).real)

    grouping = build_groups(trace_model(Weird(), torch.randn(1, 3, 8, 8)))
    reason = next(g.frozen_reason for g in grouping.groups if g.name == "a.out_channels")
    assert reason == (
        "Weird.forward() calls 'fft.fft', which nasprune has no channel rule for (the channels it reads are kept whole)"
    )


def test_plain_parameter_on_channels_freezes_them() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 64, 3)
            self.scale = nn.Parameter(torch.ones(64, 1, 1))
            self.spatial = nn.Parameter(torch.ones(1, 1, 6, 6))
            self.b = nn.Conv2d(64, 10, 1)
            self.c = nn.Conv2d(64, 64, 1)
            self.d = nn.Conv2d(64, 10, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y * self.scale) + self.d(self.c(y) * self.spatial)

    grouping = build_groups(trace_model(Scaled(), torch.randn(1, 3, 8, 8)))
    reasons = {g.name: g.frozen_reason for g in grouping.groups}
    # a (64, 1, 1) parameter meets the channels
    assert reasons["a.out_channels"] == f"'mul' pairs them with fixed positions {FORWARD}"
    assert reasons["c.out_channels"] is None  # a spatial-only parameter broadcasts over channels


def test_python_control_flow_is_traced() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 64, 3, padding=1)
            self.b = nn.Conv2d(64, 64, 3, padding=1)
            self.c = nn.Conv2d(64, 10, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.a(x))
            for _ in range(2):
                if y.shape[-1] > 2:
                    y = y + self.b(y)
            return self.c(y)

    grouping = build_groups(trace_model(Branchy(), torch.randn(1, 3, 8, 8)))
    group = next(g for g in grouping.groups if g.name == "a.out_channels")
    assert group.frozen_reason is None and sorted(group.sources) == ["a", "b"]


def test_model_failure_is_a_trace_error() -> None:
    with pytest.raises(TraceError, match="running the model on the dummy input failed"):
        trace_model(nn.Conv2d(3, 8, 3), torch.randn(1, 4, 8, 8))


def test_trace_leaves_hooks_and_modes_as_they_were() -> None:
    model = TOYS["residual"][0]().train()
    trace_model(model, torch.randn(2, 3, 16, 16))
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ([2, 64, 4, 4], [2, 1024], [([0], [0]), ([1, 2, 3], [1])]),
        ([2, 128, 4, 4], [2, 2, 64, 4, 4], [([0], [0]), ([1], [1, 2]), ([2], [3]), ([3], [4])]),
        ([1, 64, 1, 1], [1, 64], [([1], [1])]),
    ],
)
def test_reshape_groups(src: list[int], dst: list[int], expected: list) -> None:
    assert _reshape_groups(src, dst) == expected


STALE = "it would be stale once channels are removed (write -1 or flatten())"


class _Reshaper(nn.Module):
    """A conv whose output is reshaped with the given shape function (x -> shape args), then read by a linear."""

    def __init__(self, shape_of) -> None:  # noqa: ANN001
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 16, 10)
        self.shape_of = shape_of

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.fc(y.reshape(*self.shape_of(y)).flatten(1))


@pytest.mark.parametrize(
    ("shape_of", "reason"),
    [
        (lambda y: (y.shape[0], -1), None),  # channels merged into a -1 dim follow the pruned width
        (lambda y: (2, -1, 16), None),
        # a literal channel count would be stale once channels are removed
        (lambda y: (2, 64, 16), f"'reshape' gives the channel dim a fixed size (64) {FORWARD}; {STALE}"),
        (lambda y: (2, 64 * 16), f"'reshape' gives the channel dim a fixed size (1024) {FORWARD}; {STALE}"),  # VGG
        (lambda y: [2, 32, 32], f"'reshape' splits the channel dim (2, 64, 4, 4) -> (2, 32, 32) {FORWARD}"),
    ],
)
def test_reshape_with_a_literal_channel_size_freezes(shape_of, reason: str | None) -> None:  # noqa: ANN001
    grouping = build_groups(trace_model(_Reshaper(shape_of), torch.randn(2, 3, 4, 4)))
    group = next(g for g in grouping.groups if g.name == "a.out_channels")
    assert group.frozen_reason == reason


class _ShapeUser(nn.Module):
    """conv a -> fn(y) -> conv b: `fn` reads the channel count of y in some way."""

    def __init__(self, fn) -> None:  # noqa: ANN001
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 10, 1)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.fn(self.a(x)))


def _reshape_own_count(y: torch.Tensor) -> torch.Tensor:
    b, c, h, w = y.shape
    return F.relu(y.reshape(b, c, h * w)).reshape(b, c, h, w)


def _channels_last_unused_count(y: torch.Tensor) -> torch.Tensor:
    z = y.permute(0, 2, 3, 1)
    h, w, _ = z.shape[-3:]  # the channel entry is read but never used
    return z.reshape(-1, h, w, z.shape[-1]).permute(0, 3, 1, 2)


def _scale_by_count(y: torch.Tensor) -> torch.Tensor:
    return y * y.shape[1] ** -0.5


def _new_tensor_of_count(y: torch.Tensor) -> torch.Tensor:
    return y + torch.zeros(y.size(1), 1, 1)


def _split_by_count(y: torch.Tensor) -> torch.Tensor:
    b, c, h, w = y.shape
    return y.view(b, c // 2, 2, h, w).flatten(1, 2)


def _slice_by_count(y: torch.Tensor) -> torch.Tensor:
    return y[:, : y.size(1)]


def _count_of_another_tensor(y: torch.Tensor) -> torch.Tensor:
    c = y.shape[1]
    return (y + 1).reshape(y.shape[0], c, -1).view_as(y)


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (_reshape_own_count, None),
        (_channels_last_unused_count, None),
        (_count_of_another_tensor, None),  # y + 1 carries y's channels: the same count
        (_scale_by_count, f"the model computes with its channel count (read by shape.__get__ {FORWARD})"),
        (_new_tensor_of_count, None),  # zeros(C, 1, 1) of y's own count: y's channels, pruned with them
        (_split_by_count, f"the model computes with its channel count (read by shape.__get__ {FORWARD})"),
        (_slice_by_count, f"the model computes with its channel count (read by size {FORWARD})"),
    ],
)
def test_reading_the_channel_count_freezes_only_when_it_is_used(fn, reason: str | None) -> None:  # noqa: ANN001
    grouping = build_groups(trace_model(_ShapeUser(fn), torch.randn(2, 3, 4, 4)))
    group = next(g for g in grouping.groups if g.name == "a.out_channels")
    assert group.frozen_reason == reason


FIXED_SLICE = "fixed when the model was written, it would be stale once channels are removed"


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (lambda y: y[:, :64], None),  # [0:b] with b >= the size keeps every channel, and still does once they shrink
        (lambda y: y[:, 0:1000, :, :], None),
        (lambda y: y[:, :], None),
        (
            lambda y: torch.cat([y[:, :63], y[:, 63:]], 1),
            f"indexing slices the channel dim (1) with fixed bounds [:63] {FORWARD}; {FIXED_SLICE}",
        ),
        (
            lambda y: torch.cat([y[:, 0:64:2], y[:, 1::2]], 1),
            f"indexing slices the channel dim (1) with fixed bounds [0:64:2] {FORWARD}; {FIXED_SLICE}",
        ),
    ],
)
def test_a_channel_slice_passes_only_when_its_bound_covers_the_dim(fn, reason: str | None) -> None:  # noqa: ANN001
    grouping = build_groups(trace_model(_ShapeUser(fn), torch.randn(2, 3, 4, 4)))
    group = next(g for g in grouping.groups if g.name == "a.out_channels")
    assert group.frozen_reason == reason


def test_torch_split_along_a_spatial_dim_keeps_channels_prunable() -> None:
    def halves(y: torch.Tensor) -> torch.Tensor:
        top, bottom = torch.split(y, y.shape[2] // 2, dim=2)
        return torch.cat([bottom, top], dim=2)

    grouping = build_groups(trace_model(_ShapeUser(halves), torch.randn(2, 3, 4, 4)))
    assert next(g for g in grouping.groups if g.name == "a.out_channels").frozen_reason is None

    def channel_halves(y: torch.Tensor) -> torch.Tensor:
        return torch.cat(torch.split(y, 32, dim=1)[::-1], dim=1)

    grouping = build_groups(trace_model(_ShapeUser(channel_halves), torch.randn(2, 3, 4, 4)))
    reason = next(g for g in grouping.groups if g.name == "a.out_channels").frozen_reason
    assert reason == (
        f"'split' cuts the channel dim (1) into parts of a fixed size 32 {FORWARD}; fixed when the model was written, "
        "it would be stale once channels are removed"
    )


def test_convnext_stream_is_prunable_with_its_layer_scales() -> None:
    groups = {g.name: g for g in build_groups(trace_model(TOYS["convnext"][0](), torch.randn(2, 3, 16, 16))).groups}
    stream = groups["stem.0.out_channels"]
    assert stream.frozen_reason is None
    assert {"stem.1.features", "stage1.0.layer_scale", "stage1.1.layer_scale", "down.0.features"} <= set(stream.members)
    assert groups["down.1.out_channels"].frozen_reason is None
    assert "stage2.layer_scale" in groups["down.1.out_channels"].members


def test_a_parameter_of_another_size_stays_fixed() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 64, 1)
            self.b = nn.Conv2d(64, 8, 1)
            self.scale = nn.Parameter(torch.ones(64, 1, 1))  # a plain module's parameter: not sliceable

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x) * self.scale)

    grouping = build_groups(trace_model(Scaled(), torch.randn(1, 3, 4, 4)))
    reason = next(g for g in grouping.groups if g.name == "a.out_channels").frozen_reason
    assert reason == f"'mul' pairs them with fixed positions {FORWARD}"
