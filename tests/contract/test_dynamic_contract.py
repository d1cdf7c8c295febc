"""Contract of every registered dynamic type: no index == original, sliced == hand reference, export == dynamic."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.testing import assert_close
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention

from nasprune_cli.dynamic import DYNAMIC_REGISTRY, DynamicModule, is_dynamic, make_dynamic
from nasprune_cli.errors import NasPruneError

EXACT = {"rtol": 0.0, "atol": 0.0}


@dataclass(frozen=True)
class Case:
    """A small layer, its input shape and where its input channels live."""

    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    in_side: str | None = None  # the side that reads the input's channel dim
    in_dim: int = 1


def _seq() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh())


CASES: dict[str, Case] = {
    "Conv1d": Case(lambda: nn.Conv1d(6, 8, 3, padding=1), (2, 6, 10), "in"),
    "Conv1d-unbatched": Case(lambda: nn.Conv1d(6, 8, 3), (6, 10), "in", 0),
    "Conv2d": Case(lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1), (2, 6, 9, 9), "in"),
    "Conv2d-depthwise": Case(lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 6, 6), "in"),
    "Conv2d-grouped": Case(lambda: nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False), (2, 16, 5, 5), "in"),
    "Conv2d-multiplier": Case(lambda: nn.Conv2d(4, 12, 3, groups=4), (2, 4, 6, 6), "in"),
    "Conv2d-reflect": Case(lambda: nn.Conv2d(6, 8, 3, padding=1, padding_mode="reflect"), (2, 6, 7, 7), "in"),
    "Conv2d-same-dilated": Case(lambda: nn.Conv2d(6, 8, 5, padding="same", dilation=2), (2, 6, 9, 9), "in"),
    "Conv3d": Case(lambda: nn.Conv3d(4, 6, 3, padding=1), (1, 4, 4, 5, 5), "in"),
    "ConvTranspose1d": Case(lambda: nn.ConvTranspose1d(6, 8, 3, stride=2), (2, 6, 5), "in"),
    "ConvTranspose2d": Case(lambda: nn.ConvTranspose2d(6, 8, 3, 2, 1, output_padding=1), (2, 6, 4, 4), "in"),
    "ConvTranspose2d-depthwise": Case(lambda: nn.ConvTranspose2d(8, 8, 3, groups=8), (2, 8, 4, 4), "in"),
    "ConvTranspose2d-grouped": Case(lambda: nn.ConvTranspose2d(8, 12, 3, groups=4), (2, 8, 4, 4), "in"),
    "ConvTranspose3d": Case(lambda: nn.ConvTranspose3d(4, 6, 3), (1, 4, 3, 3, 3), "in"),
    "Linear": Case(lambda: nn.Linear(10, 12), (3, 10), "in", -1),
    "Linear-3d-nobias": Case(lambda: nn.Linear(10, 12, bias=False), (2, 3, 10), "in", -1),
    "BatchNorm1d": Case(lambda: nn.BatchNorm1d(8), (5, 8), "features"),
    "BatchNorm1d-3d": Case(lambda: nn.BatchNorm1d(8, momentum=None), (4, 8, 5), "features"),
    "BatchNorm2d": Case(lambda: nn.BatchNorm2d(8), (4, 8, 5, 5), "features"),
    "BatchNorm2d-noaffine": Case(lambda: nn.BatchNorm2d(8, affine=False), (4, 8, 3, 3), "features"),
    "BatchNorm2d-notrack": Case(lambda: nn.BatchNorm2d(8, track_running_stats=False), (4, 8, 3, 3), "features"),
    "BatchNorm3d": Case(lambda: nn.BatchNorm3d(6), (2, 6, 3, 3, 3), "features"),
    "SyncBatchNorm": Case(lambda: nn.SyncBatchNorm(8), (4, 8, 3, 3), "features"),
    "InstanceNorm1d": Case(lambda: nn.InstanceNorm1d(8, affine=True), (2, 8, 10), "features"),
    "InstanceNorm1d-unbatched": Case(lambda: nn.InstanceNorm1d(8, track_running_stats=True), (8, 10), "features", 0),
    "InstanceNorm2d": Case(
        lambda: nn.InstanceNorm2d(8, affine=True, track_running_stats=True), (2, 8, 5, 5), "features"
    ),
    "InstanceNorm3d": Case(lambda: nn.InstanceNorm3d(4), (2, 4, 3, 3, 3), "features"),
    "LayerNorm": Case(lambda: nn.LayerNorm(10), (2, 3, 10), "features", -1),
    "LayerNorm-nobias": Case(lambda: nn.LayerNorm(10, bias=False), (2, 10), "features", -1),
    "LayerNorm-noaffine": Case(lambda: nn.LayerNorm(10, elementwise_affine=False), (2, 10), "features", -1),
    "GroupNorm": Case(lambda: nn.GroupNorm(4, 12), (2, 12, 5, 5), "channels"),
    "GroupNorm-noaffine": Case(lambda: nn.GroupNorm(2, 8, affine=False), (2, 8, 3), "channels"),
    "Sequential": Case(_seq, (3, 6)),
    "ShiftedWindowAttention": Case(
        lambda: ShiftedWindowAttention(8, [3, 3], [1, 1], num_heads=4), (2, 5, 5, 8), "features", -1
    ),
    "ShiftedWindowAttention-noshift": Case(
        lambda: ShiftedWindowAttention(8, [3, 3], [0, 0], num_heads=2, proj_bias=False), (1, 3, 3, 8), "features", -1
    ),
    "LayerNorm2d": Case(lambda: LayerNorm2d(8, eps=1e-6), (2, 8, 3, 3), "features"),
    "RelativePositionalMultiHeadAttention": Case(
        lambda: RelativePositionalMultiHeadAttention(8, 2, 9), (2, 3, 9, 8), "features", -1
    ),
}
ATTENTION = (ShiftedWindowAttention, RelativePositionalMultiHeadAttention)
PER_CHANNEL = (nn.modules.batchnorm._NormBase,)  # BatchNorm, SyncBatchNorm, InstanceNorm: channels independent


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The case's layer with random parameters and running stats, and a random input."""
    case = CASES[name]
    torch.manual_seed(seed)
    module = case.make()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand(tensor.shape, generator=gen) + 0.5
                    if "var" in key
                    else torch.randn(tensor.shape, generator=gen)
                )
    return module, torch.randn(case.shape, generator=gen)


def random_indices(module: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A random valid index on every side (grouped convs: same groups, uniform count per group); never all full."""

    def subset(n: int, k: int) -> torch.Tensor:
        return torch.sort(torch.randperm(n, generator=gen)[:k]).values

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    if isinstance(module, _ConvNd) and module.groups > 1:
        groups = module.groups
        kept = subset(groups, randint(1, groups)).tolist()
        result = {}
        for side in ("in", "out"):
            per = module.side_size(side) // groups
            k = randint(1, per)
            result[side] = torch.cat([g * per + subset(per, k) for g in kept])
        if all(len(v) == module.side_size(s) for s, v in result.items()) and groups > 1:
            return random_indices(module, gen)
        return result
    if isinstance(module, ATTENTION):  # whole heads, never all of them
        width = module.head_width()
        heads = subset(module.head_count(), randint(1, module.head_count() - 1))
        return {"features": (heads[:, None] * width + torch.arange(width)).flatten()}
    if isinstance(module, nn.GroupNorm):
        per = module.num_channels // module.num_groups
        return {"channels": subset(module.num_channels, module.num_groups * randint(1, per - 1))}
    return {side: subset(module.side_size(side), randint(1, module.side_size(side) - 1)) for side in module.sides()}


def sliced_input(name: str, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The input with only the kept channels of the side that reads it."""
    return x if index is None else x.index_select(CASES[name].in_dim, index)


def embed(name: str, x_sliced: torch.Tensor, index: torch.Tensor, full: int, fill: torch.Tensor | None) -> torch.Tensor:
    """A full-size input with x_sliced at the kept positions and `fill` (or zeros) elsewhere."""
    dim = CASES[name].in_dim % x_sliced.dim()
    shape = list(x_sliced.shape)
    shape[dim] = full
    base = torch.zeros(shape, dtype=x_sliced.dtype) if fill is None else fill.clone()
    return base.index_copy(dim, index, x_sliced)


def out_dim(name: str, module: nn.Module) -> int:
    dims = len(CASES[name].shape)
    if isinstance(module, nn.Linear):
        return dims - 1
    return CASES[name].in_dim % dims


def apply_indices(module: DynamicModule, indices: dict[str, torch.Tensor]) -> None:
    for side, index in indices.items():
        module.set_index(side, index)


# blocks whose sides only make sense inside a model (the stream around them is sliced by other layers): their
# contract is tested on a converted model (tests/toys.py: "convnext")
IN_MODEL_ONLY = {CNBlock}


def test_every_registered_type_has_a_case() -> None:
    from nasprune_cli.dynamic.base import EXTERNAL_TYPE_NAMES

    # transformers attention (registered once a transformers model is converted) is tested in its models:
    # tests/unit/test_hf_attention.py and tests/zoo/test_zoo_hf.py
    covered = {type(CASES[name].make()) for name in CASES} | IN_MODEL_ONLY | set(EXTERNAL_TYPE_NAMES)
    missing = sorted(t.__name__ for t in DYNAMIC_REGISTRY if t not in covered)
    assert not missing, f"add a Case for {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_index_equals_original(name: str) -> None:
    original, x = build(name)
    dynamic = make_dynamic(copy.deepcopy(original))
    assert is_dynamic(dynamic) and not is_dynamic(original)
    assert type(dynamic) is DYNAMIC_REGISTRY[type(original)]
    for training in (True, False, True):
        original.train(training)
        dynamic.train(training)
        assert_close(dynamic(x), original(x), **EXACT)
        # running stats (and num_batches_tracked) update identically
        for (key, a), (key_b, b) in zip(dynamic.state_dict().items(), original.state_dict().items(), strict=True):
            assert key == key_b
            assert_close(a, b, **EXACT)


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_index_equals_original(name: str) -> None:
    original, x = build(name)
    dynamic = make_dynamic(copy.deepcopy(original))
    for side in dynamic.sides():
        dynamic.set_index(side, torch.arange(dynamic.side_size(side)))
    assert_close(dynamic(x), original(x), **EXACT)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_export_equals_dynamic(name: str, seed: int) -> None:
    original, x = build(name, seed)
    dynamic = make_dynamic(copy.deepcopy(original))
    indices = random_indices(dynamic, torch.Generator().manual_seed(seed))
    apply_indices(dynamic, indices)
    if isinstance(dynamic, nn.Sequential):
        dynamic.set_depth(2)
    xs = sliced_input(name, x, indices.get(CASES[name].in_side))
    for training in (False, True):
        dynamic.train(training)
        before = copy.deepcopy(dynamic.state_dict())
        plain = dynamic.export()
        assert_close(dynamic.state_dict(), before, **EXACT)  # export does not touch the dynamic layer
        assert type(plain) is type(original) and not any(is_dynamic(m) for m in plain.modules())
        assert plain.training == training
        expected_keys = set(original.state_dict())
        if isinstance(original, nn.Sequential):  # children 0 and 1 kept, with their names
            expected_keys = {k for k in expected_keys if int(k.split(".")[0]) < 2}
        assert set(plain.state_dict()) == expected_keys
        for side, index in indices.items():
            assert make_dynamic(copy.deepcopy(plain)).side_size(side) == len(index)
        y = dynamic(xs)
        assert_close(plain(xs), y)
        if training:  # the exported layer's running stats moved like the kept part of the dynamic one
            full = dynamic.state_dict()
            for key, value in plain.state_dict().items():
                if key.startswith("running_"):
                    assert_close(value, full[key][indices[CASES[name].in_side]])


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n != "Sequential"])
def test_sliced_equals_hand_reference(name: str) -> None:
    original, x = build(name, seed=3)
    dynamic = make_dynamic(copy.deepcopy(original))
    indices = random_indices(dynamic, torch.Generator().manual_seed(3))
    apply_indices(dynamic, indices)
    in_side = CASES[name].in_side
    xs = sliced_input(name, x, indices[in_side])
    initial = copy.deepcopy(dynamic.state_dict())
    for training in (True, False):
        original.train(training)
        dynamic.train(training)
        if isinstance(original, LayerNorm2d):
            ref = _layer_norm_reference(original, xs.permute(0, 2, 3, 1), indices["features"]).permute(0, 3, 1, 2)
        elif isinstance(original, nn.LayerNorm):
            ref = _layer_norm_reference(original, xs, indices["features"])
        elif isinstance(original, ATTENTION):
            ref = _attention_reference(original, x, indices["features"])
        elif isinstance(original, nn.GroupNorm):
            ref = _group_norm_reference(original, xs, indices["channels"])
        else:  # zeros (weights) or anything (per-channel norms) at pruned inputs, then keep the kept outputs
            fill = x if isinstance(original, PER_CHANNEL) else None
            full_in = embed(name, xs, indices[in_side], dynamic.side_size(in_side), fill)
            out_side = "features" if isinstance(original, PER_CHANNEL) else "out"
            ref = original(full_in).index_select(out_dim(name, original), indices[out_side])
        assert_close(dynamic(xs), ref)
    for key, value in original.state_dict().items():  # running stats: kept positions agree, others untouched
        if key.startswith("running_"):
            kept = indices["features"]
            dropped = torch.ones(len(value), dtype=torch.bool)
            dropped[kept] = False
            assert_close(dynamic.state_dict()[key][kept], value[kept])
            assert_close(dynamic.state_dict()[key][dropped], initial[key][dropped], **EXACT)


def _layer_norm_reference(ln: nn.LayerNorm, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + ln.eps)
    if ln.weight is not None:
        y = y * ln.weight[index]
    return y + ln.bias[index] if ln.bias is not None else y


def _attention_reference(attn: nn.Module, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The original block with the removed heads' q/k/v rows and output columns zeroed, on a zero-embedded input."""
    ref = copy.deepcopy(attn)
    qkv, out = (ref.qkv, ref.proj) if isinstance(ref, ShiftedWindowAttention) else (ref.to_qkv, ref.merge)
    size = out.in_features
    dropped = torch.ones(size, dtype=torch.bool)
    dropped[index] = False
    with torch.no_grad():
        qkv.weight[dropped.repeat(3)] = 0
        if qkv.bias is not None:
            qkv.bias[dropped.repeat(3)] = 0
        out.weight[:, dropped] = 0
    full_in = torch.zeros_like(x).index_copy(-1, index, x.index_select(-1, index))
    return ref(full_in).index_select(-1, index)


def _group_norm_reference(gn: nn.GroupNorm, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    g = x.reshape(n, gn.num_groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + gn.eps)
    y = g.reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if gn.weight is not None:
        y = y * gn.weight[index].view(shape) + gn.bias[index].view(shape)
    return y


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n != "Sequential" and "Attention" not in n])
def test_gradients_reach_only_kept_positions(name: str) -> None:
    original, x = build(name, seed=5)
    if not list(original.parameters()):
        pytest.skip("no parameters")
    original, x = original.double(), x.double()  # float64: the two summation orders agree tightly
    dynamic = make_dynamic(copy.deepcopy(original))
    indices = random_indices(dynamic, torch.Generator().manual_seed(5))
    apply_indices(dynamic, indices)
    in_side = CASES[name].in_side
    xs = sliced_input(name, x, indices[in_side])
    dynamic(xs).square().sum().backward()
    for param in dynamic.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    if isinstance(original, (nn.LayerNorm, nn.GroupNorm, *PER_CHANNEL)):
        kept = torch.zeros(dynamic.side_size(in_side), dtype=torch.bool)
        kept[indices[in_side]] = True
        for param in dynamic.parameters():
            assert bool((param.grad[~kept] == 0).all()) and bool((param.grad[kept] != 0).any())
        return
    # the same loss through the original layer on a zero-embedded input gives the same gradients
    full_in = embed(name, xs, indices[in_side], dynamic.side_size(in_side), None)
    original(full_in).index_select(out_dim(name, original), indices["out"]).square().sum().backward()
    for p_dyn, p_ref in zip(dynamic.parameters(), original.parameters(), strict=True):
        assert_close(p_dyn.grad, p_ref.grad)
    if dynamic.bias is not None:
        dropped = torch.ones(dynamic.side_size("out"), dtype=torch.bool)
        dropped[indices["out"]] = False
        assert bool((dynamic.bias.grad[dropped] == 0).all())
        assert bool((dynamic.bias.grad[~dropped] != 0).all())


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if "Attention" in n])
def test_attention_gradients_reach_only_kept_heads(name: str) -> None:
    original, x = build(name, seed=5)
    dynamic = make_dynamic(copy.deepcopy(original))
    indices = random_indices(dynamic, torch.Generator().manual_seed(5))
    apply_indices(dynamic, indices)
    dynamic(sliced_input(name, x, indices["features"])).square().sum().backward()
    kept = torch.zeros(dynamic.side_size("features"), dtype=torch.bool)
    kept[indices["features"]] = True
    qkv = dynamic.qkv if isinstance(dynamic, ShiftedWindowAttention) else dynamic.to_qkv
    assert bool((qkv.weight.grad[~kept.repeat(3)] == 0).all()) and bool((qkv.weight.grad[:, ~kept] == 0).all())
    assert bool(qkv.weight.grad[kept.repeat(3)][:, kept].abs().sum() > 0)
    heads = torch.unique(indices["features"] // dynamic.head_width())
    table_grad = dynamic.relative_position_bias_table.grad
    dropped_heads = torch.ones(dynamic.head_count(), dtype=torch.bool)
    dropped_heads[heads] = False
    assert bool((table_grad[:, dropped_heads] == 0).all()) and bool(table_grad[:, heads].abs().sum() > 0)


def test_attention_index_must_keep_whole_heads() -> None:
    dynamic = make_dynamic(ShiftedWindowAttention(8, [3, 3], [1, 1], num_heads=4))
    with pytest.raises(NasPruneError, match=r"ShiftedWindowAttention.*whole heads of 2 features"):
        dynamic.set_index("features", torch.tensor([0, 1, 2]))
