"""Contract tests over the toy topologies and three torchvision models: max == original, export == dynamic,
the cost model == fvcore on the exported subnet."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torchvision
from torch import nn

from nasprune_cli import convert
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from tests.toys import TOYS

ZOO = {
    "resnet18": (torchvision.models.resnet18, (1, 3, 64, 64)),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, (1, 3, 64, 64)),
    "densenet121": (torchvision.models.densenet121, (1, 3, 64, 64)),
}
MODELS = {**TOYS, **ZOO}


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics so that a wrong channel slice shows up in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        if getattr(m, "weight", None) is not None and isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    _randomize_bn(model, 0)
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(MODELS))
def test_max_subnet_equals_original(name: str) -> None:
    model, x = _build(name)
    original = copy.deepcopy(model)
    space = convert(model, None, x)
    space.select(space.max())
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))
    assert space.cost(space.max()).flops == pytest.approx(fvcore_flops(original, x), abs=0.5)
    assert space.cost(space.max()).params == count_params(original)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("pick", ["random", "min"])
def test_exported_subnet_matches_dynamic_and_fvcore(name: str, pick: str) -> None:
    model, x = _build(name)
    space = convert(model, None, x)
    config = space.sample(random.Random(3)) if pick == "random" else space.min()
    space.select(config)
    space.sort_parameters()  # importance order must keep export and dynamic model consistent too
    with torch.no_grad():
        dynamic_out = model(x)
        exported = space.export()
        exported_out = exported.eval()(x)
    assert not any(is_dynamic(m) for m in exported.modules())
    assert exported_out.shape == dynamic_out.shape
    torch.testing.assert_close(exported_out, dynamic_out, rtol=1e-4, atol=1e-5)
    estimate = space.cost(config)
    assert estimate.flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
    assert estimate.params == count_params(exported)
    if space.hparams and config != space.max():
        assert estimate.flops < space.cost(space.max()).flops


def test_export_leaves_the_space_usable() -> None:
    model, x = _build("residual")
    space = convert(model, None, x)
    config = space.sample(random.Random(0))
    space.export()
    assert space.config() == config
    assert any(is_dynamic(m) for m in model.modules())


def test_size_and_hparams_of_resnet18() -> None:
    model, x = _build("resnet18")
    space = convert(model, None, x)
    # 12 prunable groups; the fc output (model output) is frozen
    assert len(space.hparams) == 12
    assert space.size() == pytest.approx(__import__("math").prod(len(h.choices) for h in space.hparams.values()))
    assert any("model output" in f.reason for f in space.frozen)
    assert space.hparams["layer1.0.conv1.out_channels"].choices == (32, 64)
