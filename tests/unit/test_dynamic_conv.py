"""Dynamic convolutions: grouped and depthwise slicing, kernel-size crop, transposed output_size, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from nasprune_cli.dynamic import make_dynamic
from nasprune_cli.errors import NasPruneError


def _t(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def _conv(*args: object, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return make_dynamic(nn.Conv2d(*args, **kwargs))


def test_grouped_conv_uniform_per_group_matches_per_group_reference() -> None:
    conv = _conv(16, 32, 3, padding=1, groups=4)  # 4 inputs and 8 outputs per group
    in_idx = _t(0, 2, 5, 6, 8, 9, 13, 15)  # 2 kept inputs in every group
    out_idx = torch.cat([g * 8 + _t(1, 4, 7) for g in range(4)])  # 3 kept outputs in every group
    conv.set_index("in", in_idx)
    conv.set_index("out", out_idx)
    x = torch.randn(2, 8, 6, 6)
    rows = []
    for g in range(4):  # weight of group g: its kept outputs x its kept local inputs
        local = in_idx[(in_idx // 4) == g] - g * 4
        rows.append(conv.weight[out_idx[(out_idx // 8) == g]][:, local])
    ref = F.conv2d(x, torch.cat(rows), conv.bias[out_idx], padding=1, groups=4)
    assert_close(conv(x), ref)
    plain = conv.export()
    assert (plain.in_channels, plain.out_channels, plain.groups) == (8, 12, 4)
    assert_close(plain(x), ref)


def test_grouped_conv_may_drop_whole_groups() -> None:
    conv = _conv(16, 32, 3, padding=1, groups=4)
    conv.set_index("in", _t(4, 5, 6, 7, 12, 13, 14, 15))  # groups 1 and 3
    conv.set_index("out", torch.cat([torch.arange(8, 16), torch.arange(24, 32)]))
    x = torch.randn(1, 8, 5, 5)
    weight = conv.weight[torch.cat([torch.arange(8, 16), torch.arange(24, 32)])]
    ref = F.conv2d(x, weight, conv.bias[torch.cat([torch.arange(8, 16), torch.arange(24, 32)])], padding=1, groups=2)
    assert_close(conv(x), ref)
    assert conv.export().groups == 2


def test_grouped_conv_rejects_uneven_and_mismatched_groups() -> None:
    conv = _conv(16, 32, 3, groups=4)
    with pytest.raises(NasPruneError, match=r"nn.Conv2d.*'in'.*same number of channels in every group.*\[2, 1, 2, 2\]"):
        conv.set_index("in", _t(0, 1, 4, 8, 9, 12, 13))
    conv.set_index("in", _t(0, 1, 4, 5))  # groups 0 and 1 only
    with pytest.raises(NasPruneError, match=r"keeps groups \[0, 1, 2, 3\] but side 'in' keeps groups \[0, 1\]"):
        conv(torch.randn(1, 4, 5, 5))
    with pytest.raises(NasPruneError, match="same groups"):
        conv.export()
    conv.set_index("out", torch.arange(16))  # groups 0 and 1 of the outputs
    assert conv(torch.randn(1, 4, 5, 5)).shape == (1, 16, 3, 3)


def test_depthwise_needs_the_same_index_on_both_sides() -> None:
    conv = _conv(8, 8, 3, padding=1, groups=8)
    make_dynamic(conv, name="features.3")
    idx = _t(1, 2, 6)
    conv.set_index("in", idx)
    with pytest.raises(NasPruneError, match=r"nn.Conv2d 'features.3'.*depthwise conv needs the same index"):
        conv(torch.randn(1, 3, 4, 4))
    conv.set_index("out", _t(1, 3, 6))
    with pytest.raises(NasPruneError, match="same index"):
        conv.export()
    conv.set_index("out", idx.clone())
    x = torch.randn(2, 3, 4, 4)
    ref = F.conv2d(x, conv.weight[idx], conv.bias[idx], padding=1, groups=3)
    assert_close(conv(x), ref)
    plain = conv.export()
    assert (plain.in_channels, plain.out_channels, plain.groups) == (3, 3, 3)
    assert_close(plain(x), ref)


def test_depthwise_multiplier_keeps_the_outputs_of_kept_inputs() -> None:
    conv = _conv(4, 12, 3, groups=4)  # 3 outputs per input channel
    conv.set_index("in", _t(0, 2))
    conv.set_index("out", _t(0, 1, 2, 6, 7, 8))
    x = torch.randn(1, 2, 5, 5)
    out_idx = _t(0, 1, 2, 6, 7, 8)
    assert_close(conv(x), F.conv2d(x, conv.weight[out_idx], conv.bias[out_idx], groups=2))
    plain = conv.export()
    assert (plain.in_channels, plain.out_channels, plain.groups) == (2, 6, 2)
    conv.set_index("out", _t(0, 1, 2, 3, 4, 5))  # outputs of input 1, which is dropped
    with pytest.raises(NasPruneError, match="both sides must keep the same groups"):
        conv(x)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_kernel_crop_keeps_the_output_size_and_equals_a_cropped_conv(mode: str) -> None:
    conv = _conv(6, 8, 5, stride=2, padding=2, dilation=1, padding_mode=mode)
    x = torch.randn(2, 6, 9, 9)
    full_shape = conv(x).shape
    conv.set_kernel_size(3)
    assert conv.get_kernel_size() == 3
    cropped = conv.weight[:, :, 1:4, 1:4]
    if mode == "zeros":
        ref = F.conv2d(x, cropped, conv.bias, stride=2, padding=1)
    else:
        ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), cropped, conv.bias, stride=2)
    y = conv(x)
    assert y.shape == full_shape
    assert_close(y, ref)
    plain = conv.export()
    assert plain.kernel_size == (3, 3) and plain.padding == (1, 1) and plain.padding_mode == mode
    assert_close(plain(x), ref)
    conv.set_kernel_size(None)
    assert conv(x).shape == full_shape and conv.export().kernel_size == (5, 5)


def test_kernel_crop_with_dilation_same_padding_and_channel_slicing() -> None:
    conv = _conv(6, 8, 5, padding=4, dilation=2)
    conv.set_kernel_size(1)
    x = torch.randn(1, 6, 7, 7)
    assert_close(conv(x), F.conv2d(x, conv.weight[:, :, 2:3, 2:3], conv.bias, dilation=2))
    assert conv.export().padding == (0, 0)

    same = _conv(6, 8, 5, padding="same", dilation=2, padding_mode="replicate")
    same.set_kernel_size(3)
    same.set_index("in", _t(0, 3, 5))
    same.set_index("out", _t(1, 2))
    xs = x[:, [0, 3, 5]]
    ref = F.conv2d(
        F.pad(xs, (2, 2, 2, 2), mode="replicate"),
        same.weight[[1, 2]][:, [0, 3, 5], 1:4, 1:4],
        same.bias[[1, 2]],
        dilation=2,
    )
    assert_close(same(xs), ref)
    plain = same.export()
    assert plain.padding == "same" and plain.kernel_size == (3, 3)
    assert_close(plain(xs), ref)


def test_kernel_size_equal_to_original_is_no_crop() -> None:
    conv = _conv(3, 4, 3, padding=1)
    conv.set_kernel_size(3)
    assert conv.get_kernel_size() is None


@pytest.mark.parametrize(
    ("layer", "k", "match"),
    [
        (lambda: nn.Conv2d(3, 4, 5, padding=2), 4, r"expected an odd int in \[1, 5\]"),
        (lambda: nn.Conv2d(3, 4, 3, padding=1), 5, r"expected an odd int in \[1, 3\]"),
        (lambda: nn.Conv2d(3, 4, 3, padding=1), True, "expected an odd int"),
        (lambda: nn.Conv2d(3, 4, (3, 5), padding=1), 1, "square with an odd size"),
        (lambda: nn.Conv2d(3, 4, 4, padding=1), 1, "square with an odd size"),
        (lambda: nn.Conv2d(3, 4, 5, padding="valid"), 3, "padding='valid'"),
        (lambda: nn.Conv2d(3, 4, 5, padding=(2, 0)), 3, r"padding \(2, 0\) is too small.*\(1, -1\)"),
        (lambda: nn.ConvTranspose2d(3, 4, 3), 1, "not supported for transposed"),
    ],
)
def test_kernel_size_errors(layer: object, k: int, match: str) -> None:
    conv = make_dynamic(layer())
    with pytest.raises(NasPruneError, match=match):
        conv.set_kernel_size(k)


def test_conv_transpose_output_size() -> None:
    torch.manual_seed(0)
    original = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1)
    x = torch.randn(1, 6, 5, 5)
    ref = original(x, output_size=[10, 10])
    conv = make_dynamic(original)
    assert_close(conv(x, output_size=[10, 10]), ref, rtol=0, atol=0)
    conv.set_index("in", _t(0, 4, 5))
    conv.set_index("out", _t(1, 3))
    xs = x[:, [0, 4, 5]]
    y = conv(xs, output_size=[1, 2, 10, 10])
    assert y.shape == (1, 2, 10, 10)
    assert_close(conv.export()(xs, output_size=[10, 10]), y)
    with pytest.raises(ValueError, match="requested an output size"):
        conv(xs, output_size=[20, 20])


def test_export_keeps_dtype_requires_grad_and_flags() -> None:
    conv = _conv(4, 6, 3, padding=1).double()
    conv.bias.requires_grad_(False)
    conv.my_flag = True
    conv.eval()
    conv.set_index("out", _t(0, 5))
    plain = conv.export()
    assert plain.weight.dtype == torch.float64 and plain.weight.requires_grad and not plain.bias.requires_grad
    assert plain.my_flag is True and not plain.training
    assert plain.weight.data_ptr() != conv.weight.data_ptr()


def test_training_the_dynamic_conv_trains_the_original_parameters() -> None:
    torch.manual_seed(0)
    original = nn.Conv2d(4, 6, 3)
    weight = original.weight
    before = weight.detach().clone()
    conv = make_dynamic(original)
    assert conv is original and conv.weight is weight
    conv.set_index("in", _t(1, 2))
    conv.set_index("out", _t(0, 3, 4))
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 2, 5, 5)).sum().backward()
    opt.step()
    changed = (weight.detach() != before).flatten(1).any(1)
    assert changed.tolist() == [True, False, False, True, True, False]
    assert not bool((weight.detach() != before)[:, [0, 3]].any())


@settings(max_examples=30, deadline=None)
@given(
    groups=st.integers(1, 4),
    in_per=st.integers(1, 3),
    out_per=st.integers(1, 3),
    transposed=st.booleans(),
    data=st.data(),
)
def test_any_valid_grouped_index_equals_the_zero_embedded_reference(
    groups: int, in_per: int, out_per: int, transposed: bool, data: st.DataObject
) -> None:
    torch.manual_seed(0)
    cls = nn.ConvTranspose1d if transposed else nn.Conv1d
    conv = make_dynamic(cls(groups * in_per, groups * out_per, 3, groups=groups))
    kept = sorted(data.draw(st.sets(st.integers(0, groups - 1), min_size=1), label="groups"))
    indices = {}
    for side, per in (("in", in_per), ("out", out_per)):
        k = data.draw(st.integers(1, per), label=f"{side} per group")
        local = [sorted(data.draw(st.sets(st.integers(0, per - 1), min_size=k, max_size=k))) for _ in kept]
        indices[side] = torch.tensor([g * per + p for g, ps in zip(kept, local, strict=True) for p in ps])
        conv.set_index(side, indices[side])
    xs = torch.randn(2, len(indices["in"]), 6)
    full = torch.zeros(2, groups * in_per, 6).index_copy(1, indices["in"], xs)
    functional = F.conv_transpose1d if transposed else F.conv1d
    ref = functional(full, conv.weight, conv.bias, groups=groups)
    assert_close(conv(xs), ref[:, indices["out"]])
    assert_close(conv.export()(xs), ref[:, indices["out"]])
