"""Contract of the layers converted by running their own forward on sliced tensors: subclasses of the supported
types (timm, HF) and registered layers (HF Conv1D, timm LayerScale / GRN, register_layer): no index == original,
export (the same class) == dynamic at random subnets, and the kept channels match a reference computed without
nasprune."""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from nasprune_cli import convert
from nasprune_cli.dynamic import DynamicModule, is_dynamic, make_dynamic, register_layer
from nasprune_cli.dynamic.probe import _probe_indices
from nasprune_cli.metrics.flops import count_params, fvcore_flops

timm_layers = pytest.importorskip("timm.layers")
hf_utils = pytest.importorskip("transformers.pytorch_utils")
from timm.layers.grn import GlobalResponseNorm  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402
from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm  # noqa: E402

Reference = Callable[[nn.Module, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


class ChannelShift(nn.Module):
    """A user's channelwise layer: x + shift, registered with register_layer (channels last)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.shift = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


register_layer(
    ChannelShift, kind="channelwise", tensors={"shift": {"features": 0}}, sizes={"features": ["dim"]}, channel_dim=-1
)


def _frozen_bn(channels: int) -> FrozenBatchNorm2d:
    """torchvision's FrozenBatchNorm2d with random statistics and affine (all four are buffers)."""
    layer = FrozenBatchNorm2d(channels)
    gen = torch.Generator().manual_seed(channels)
    for name in ("weight", "bias", "running_mean"):
        getattr(layer, name).copy_(torch.randn(channels, generator=gen))
    layer.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return layer


def _per_channel(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """Layers that act on every channel alone: the original's output at the kept channels."""
    side = next(iter(idx))
    dim = 1 if x.dim() == 4 and not isinstance(module, ChannelShift) else -1
    return module(x).index_select(dim, idx[side])


def _conv(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """A convolution / linear layer: the original on an input whose removed channels are zero, kept outputs."""
    dim = 1 if x.dim() == 4 else -1
    mask = torch.zeros(x.shape[dim])
    mask[idx["in"]] = 1
    shape = [1] * x.dim()
    shape[dim] = -1
    return module(x * mask.view(shape)).index_select(dim, idx["out"])


def _layer_norm_nchw(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """A LayerNorm over the channels of NCHW: statistics over the kept channels, then the layer's activation."""
    i = idx["features"]
    xs = x.index_select(1, i).permute(0, 2, 3, 1)
    out = F.layer_norm(xs, (i.numel(),), module.weight[i], module.bias[i], module.eps).permute(0, 3, 1, 2)
    act = getattr(module, "act", nn.Identity())
    return act(out)


def _group_norm(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    i = idx["features" if "features" in idx else "channels"]
    out = F.group_norm(x.index_select(1, i), module.num_groups, module.weight[i], module.bias[i], module.eps)
    return module.act(out)


def _grn(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """GRN (channels last): the spatial L2 norm divided by its mean over the kept channels."""
    i = idx["features"]
    xs = x.index_select(-1, i)
    g = xs.norm(p=2, dim=(1, 2), keepdim=True)
    return xs + module.bias[i] + module.weight[i] * xs * (g / (g.mean(dim=-1, keepdim=True) + module.eps))


def _rms_nchw(module: nn.Module, x: torch.Tensor, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """RMSNorm over the channels of NCHW: the root mean square over the kept channels."""
    i = idx["features"]
    xs = x.index_select(1, i)
    return xs * torch.rsqrt(xs.pow(2).mean(1, keepdim=True) + module.eps) * module.weight[i].view(1, -1, 1, 1)


@dataclass(frozen=True)
class Case:
    """A small layer, its input shape, the dim its input channels are on, and a reference of the kept output."""

    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    dim: int
    reference: Reference | None


CASES: dict[str, Case] = {
    "timm.BatchNormAct2d": Case(
        lambda: timm_layers.BatchNormAct2d(8, act_layer=nn.SiLU), (2, 8, 5, 5), 1, _per_channel
    ),
    "torchvision.FrozenBatchNorm2d": Case(lambda: _frozen_bn(8), (2, 8, 5, 5), 1, _per_channel),
    "timm.GroupNormAct": Case(lambda: timm_layers.GroupNormAct(8, num_groups=2), (2, 8, 5, 5), 1, _group_norm),
    "timm.LayerNorm2d": Case(lambda: timm_layers.LayerNorm2d(8), (2, 8, 5, 5), 1, _layer_norm_nchw),
    "timm.LayerNormAct2d": Case(lambda: timm_layers.LayerNormAct2d(8), (2, 8, 5, 5), 1, _layer_norm_nchw),
    "timm.LayerNorm": Case(lambda: timm_layers.LayerNorm(8), (2, 5, 8), -1, None),
    "timm.Conv2dSame": Case(lambda: timm_layers.Conv2dSame(6, 8, 3, stride=2), (2, 6, 9, 9), 1, _conv),
    "timm.Conv2dSame-depthwise": Case(lambda: timm_layers.Conv2dSame(8, 8, 3, groups=8), (2, 8, 7, 7), 1, _conv),
    "timm.StdConv2d": Case(lambda: timm_layers.StdConv2d(6, 8, 3, padding=1), (2, 6, 7, 7), 1, None),
    "timm.ScaledStdConv2d": Case(lambda: timm_layers.ScaledStdConv2d(6, 8, 3, padding=1), (2, 6, 7, 7), 1, None),
    "nn.RMSNorm": Case(lambda: nn.RMSNorm(8), (2, 5, 8), -1, None),
    "timm.RmsNorm2d": Case(lambda: timm_layers.RmsNorm2d(8), (2, 8, 5, 5), 1, _rms_nchw),
    "timm.LayerScale2d": Case(lambda: timm_layers.LayerScale2d(8, 0.5), (2, 8, 5, 5), 1, _per_channel),
    "timm.GlobalResponseNorm": Case(lambda: GlobalResponseNorm(8), (2, 5, 5, 8), -1, _grn),
    "hf.ConvNextLayerNorm-first": Case(
        lambda: ConvNextLayerNorm(8, data_format="channels_first"), (2, 8, 5, 5), 1, _layer_norm_nchw
    ),
    "hf.ConvNextLayerNorm-last": Case(lambda: ConvNextLayerNorm(8), (2, 5, 5, 8), -1, None),
    "hf.Conv1D": Case(lambda: hf_utils.Conv1D(12, 10), (2, 3, 10), -1, _conv),
    "user.ChannelShift": Case(lambda: ChannelShift(8), (2, 3, 8), -1, _per_channel),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    module = CASES[name].make().eval()
    with torch.no_grad():
        for p in module.parameters():  # not the init values (ones / zeros): every channel differs
            p.copy_(torch.randn_like(p))
    return module, torch.randn(CASES[name].shape, generator=torch.Generator().manual_seed(seed))


def _input_index(module: DynamicModule, indices: dict[str, torch.Tensor]) -> torch.Tensor:
    return indices["in"] if "in" in indices else next(iter(indices.values()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_index_equals_original(name: str) -> None:
    original, x = build(name)
    dynamic = make_dynamic(copy.deepcopy(original), name="layer")
    assert is_dynamic(dynamic) and isinstance(dynamic, type(original))
    with torch.no_grad():
        assert_close(dynamic(x), original(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_export_equals_dynamic_and_the_reference(name: str, seed: int) -> None:
    original, x = build(name, seed)
    dynamic = make_dynamic(copy.deepcopy(original), name="layer")
    indices = _probe_indices(dynamic)
    for side, index in indices.items():
        dynamic.set_index(side, index)
    xs = x.index_select(CASES[name].dim, _input_index(dynamic, indices))
    exported = dynamic.export()
    assert type(exported) is type(original) and not any(is_dynamic(m) for m in exported.modules())
    with torch.no_grad():
        out = dynamic(xs)
        assert_close(exported(xs), out, rtol=0, atol=0)
        reference = CASES[name].reference
        if reference is not None:
            assert_close(out, reference(original, x, indices), rtol=1e-5, atol=1e-5)
    kept = sum(t.numel() for t in [*exported.parameters(), *exported.buffers()])
    assert kept < sum(t.numel() for t in [*original.parameters(), *original.buffers()])
    assert repr(exported)  # the size attributes make sense to the class's own extra_repr


def test_batch_norm_subclass_trains_the_kept_running_stats_only() -> None:
    original, x = build("timm.BatchNormAct2d")
    dynamic = make_dynamic(copy.deepcopy(original), name="bn").train()
    index = torch.tensor([1, 4, 6])
    dynamic.set_index("features", index)
    before = dynamic.running_mean.clone()
    dynamic(x.index_select(1, index))
    changed = (dynamic.running_mean != before).nonzero().flatten()
    assert changed.tolist() == index.tolist() and int(dynamic.num_batches_tracked) == 1


class _Stash(nn.BatchNorm2d):
    """A BatchNorm2d subclass holding a per-channel tensor nasprune does not know about."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.register_buffer("scale", torch.rand(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale.view(1, -1, 1, 1)


class _Fixed(nn.Conv2d):
    """A Conv2d subclass whose forward uses its original channel count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).reshape(x.shape[0], 16, -1).reshape(x.shape[0], 16, *x.shape[2:])


def _chain(middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), middle, nn.ReLU(), nn.Conv2d(16, 4, 1))


@pytest.mark.parametrize(
    ("middle", "reason"),
    [
        (_Stash(16), r"_Stash '1' holds buffer 'scale' \(16,\), which nasprune does not slice"),
        (timm_layers.ScaledStdConv2d(16, 16, 3, padding=1, groups=2), r"ScaledStdConv2d '1': its forward fails"),
        (_Fixed(16, 16, 1), r"_Fixed '1': its forward fails on a subset of its channels"),
    ],
)
def test_subclass_that_hides_its_channels_is_frozen_with_its_class(middle: nn.Module, reason: str) -> None:
    space = convert(_chain(middle), None, torch.randn(1, 3, 8, 8))
    frozen = {f.name: f.reason for f in space.frozen}
    assert re.search(reason, frozen["0"]), frozen  # the conv before it: its channels reach the frozen layer
    assert not is_dynamic(space.model[1])


def test_weight_standardization_flops_are_counted() -> None:
    """Std / ScaledStdConv2d: fvcore counts the batch_norm over the weight; the cost model scales it with the kept
    channels."""
    model = nn.Sequential(
        timm_layers.StdConv2d(3, 64, 3, padding=1),
        timm_layers.BatchNormAct2d(64),
        timm_layers.ScaledStdConv2d(64, 64, 3, padding=1),  # a registered layer: its gain is sliced too
        timm_layers.BatchNormAct2d(64),
        timm_layers.StdConv2d(64, 4, 1),
    ).eval()
    x = torch.randn(1, 3, 8, 8)
    space = convert(model, None, x)
    assert len(space.hparams) == 2 and not [f for f in space.frozen if "model output" not in f.reason]
    rng = random.Random(0)
    for _ in range(3):
        config = space.sample(rng)
        exported = space.export()
        with torch.no_grad():
            assert_close(exported(x), space.model(x), rtol=1e-5, atol=1e-5)
        assert fvcore_flops(exported, x) == pytest.approx(space.cost(config).flops)
        assert count_params(exported) == pytest.approx(space.cost(config).params)


def test_frozen_batch_norm_backbone_prunes_like_batch_norm() -> None:
    """A resnet built with FrozenBatchNorm2d (torchvision detectors' pretrained backbones): every group prunable, the
    max subnet == the original, export == dynamic at random subnets, FLOPs == fvcore."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10, norm_layer=_frozen_bn).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    space = convert(model, None, x)
    assert [f.name for f in space.frozen] == ["fc"] and len(space.hparams) == 12
    assert all(is_dynamic(m) for m in space.model.modules() if isinstance(m, FrozenBatchNorm2d))
    space.select(space.max())
    with torch.no_grad():
        assert_close(space.model(x), reference(x), rtol=0, atol=0)
    rng = random.Random(0)
    for _ in range(2):
        config = space.sample(rng)
        exported = space.export()
        assert all(type(m) is FrozenBatchNorm2d for m in exported.modules() if isinstance(m, FrozenBatchNorm2d))
        with torch.no_grad():
            assert_close(exported(x), space.model(x), rtol=1e-5, atol=1e-5)
        assert fvcore_flops(exported, x) == pytest.approx(space.cost(config).flops)
        assert count_params(exported) == space.cost(config).params
