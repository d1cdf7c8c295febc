"""Depth (AutoNAS) and kernel-size hparams, recipe rules that exclude layers, profile figures."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest
import torch
from torch import nn

from nasprune_cli import convert, profile
from nasprune_cli.errors import NasPruneError
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from nasprune_cli.recipe.load import recipe_from_dict
from tests.toys import TOYS


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, 64, 3, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.c2 = nn.Conv2d(64, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(torch.relu(self.bn(self.c1(x))))


class Staged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.stage = nn.Sequential(
            nn.Conv2d(64, 64, 3, stride=2, padding=1), Block(64), Block(64), nn.Conv2d(64, 64, 3, padding=1)
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


def _check_subnets(space, model: nn.Module, x: torch.Tensor, seeds: range) -> None:
    for seed in seeds:
        config = space.sample(random.Random(seed))
        with torch.no_grad():
            exported = space.export().eval()
            torch.testing.assert_close(exported(x), model(x))
        estimate = space.cost(config)
        assert estimate.flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
        assert estimate.params == count_params(exported)


def test_autonas_depth_skips_trailing_blocks_that_keep_the_shape() -> None:
    torch.manual_seed(0)
    model, x = Staged().eval(), torch.randn(2, 3, 16, 16)
    recipe = recipe_from_dict(
        {
            "mode": "autonas",
            "rules": {"nn.Conv2d": {}, "nn.BatchNorm2d": {}, "nn.Linear": {}, "nn.Sequential": {"min_depth": 1}},
        }
    )
    space = convert(model, recipe, x)
    # the strided first child changes the shape, so it always runs
    assert space.hparams["stage.depth"].choices == (1, 2, 3, 4)
    space.select({"stage.depth": 1})
    with torch.no_grad():
        exported = space.export()
    assert len(exported.stage) == 1
    _check_subnets(space, model, x, range(6))


def test_min_depth_from_the_recipe_is_respected() -> None:
    model, x = Staged().eval(), torch.randn(1, 3, 16, 16)
    recipe = recipe_from_dict(
        {"mode": "autonas", "rules": {"nn.Conv2d": {}, "nn.BatchNorm2d": {}, "nn.Sequential": {"min_depth": 3}}}
    )
    space = convert(model, recipe, x)
    assert space.hparams["stage.depth"].choices == (3, 4)


class Inner(nn.Module):
    """A stage whose shape-keeping blocks sit in the middle (before a width change) and at the end, in a Sequential
    with named children."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.stage = nn.Sequential(
            OrderedDict(
                [
                    ("down", nn.Conv2d(64, 64, 3, stride=2, padding=1)),
                    ("act", nn.ReLU()),  # keeps the shape, but a single layer is not a block: never skipped
                    ("a", Block(64)),
                    ("b", Block(64)),
                    ("narrow", nn.Conv2d(64, 32, 1)),
                    ("c", Block(32)),
                ]
            )
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


def _inner_space(skippable: str):
    torch.manual_seed(0)
    model, x = Inner().eval(), torch.randn(2, 3, 16, 16)
    rules = {"nn.Conv2d": {}, "nn.BatchNorm2d": {}, "nn.Linear": {}}
    rules["nn.Sequential"] = {"min_depth": 1, "skippable": skippable}
    return model, x, convert(model, recipe_from_dict({"mode": "autonas", "rules": rules}), x)


def test_skippable_blocks_adds_one_hparam_per_inner_run_of_shape_keeping_blocks() -> None:
    model, x, space = _inner_space("blocks")
    depth = {n: hp for n, hp in space.hparams.items() if hp.kind == "depth"}
    assert {n: hp.choices for n, hp in depth.items()} == {"stage.depth[2:4]": (0, 1, 2), "stage.depth": (5, 6)}
    assert depth["stage.depth[2:4]"].members == ("stage.a", "stage.b")
    assert depth["stage.depth"].members == ("stage.c",)
    space.select({"stage.depth[2:4]": 1, "stage.depth": 5})
    with torch.no_grad():
        exported = space.export().eval()
        torch.testing.assert_close(exported(x), model(x))
        # what the plain model computes without the skipped children
        y = model.stage.narrow(model.stage.a(model.stage.act(model.stage.down(model.stem(x)))))
        torch.testing.assert_close(exported(x), model.head(y.mean((2, 3))))
    assert [n for n, _ in exported.stage.named_children()] == ["down", "act", "a", "narrow"]
    _check_subnets(space, model, x, range(8))


def test_skippable_trailing_is_the_default_and_keeps_inner_children() -> None:
    _, _, space = _inner_space("trailing")
    assert {n: hp.choices for n, hp in space.hparams.items() if hp.kind == "depth"} == {"stage.depth": (5, 6)}


def test_kernel_size_choices_crop_the_kernel() -> None:
    cls, shape = TOYS["chain"]
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(shape)
    recipe = recipe_from_dict({"rules": {"nn.Conv2d": {"kernel_size": [1, 3]}, "nn.BatchNorm2d": {}}})
    space = convert(model, recipe, x)
    assert space.hparams["body.0.0.kernel_size"].choices == (1, 3)
    space.select({"body.0.0.kernel_size": 1})
    assert space.export().body[0][0].kernel_size == (1, 1)
    _check_subnets(space, model, x, range(4))


def test_glob_null_excludes_a_layer_and_freezes_its_group() -> None:
    cls, shape = TOYS["chain"]
    model, x = cls().eval(), torch.randn(shape)
    recipe = recipe_from_dict({"rules": {"nn.Conv2d": {"*": {}, "body.1.*": None}, "nn.BatchNorm2d": {}}})
    space = convert(model, recipe, x)
    assert "body.1.0.out_channels" not in space.hparams  # its own outputs: not converted
    assert "body.0.0.out_channels" not in space.hparams  # it reads these channels, so they freeze too
    assert "body.2.0.out_channels" in space.hparams
    reasons = {f.name: f.reason for f in space.frozen}
    assert "not converted by the recipe" in reasons["body.0.0"]


def test_type_absent_from_rules_is_not_converted() -> None:
    cls, shape = TOYS["chain"]
    model, x = cls().eval(), torch.randn(shape)
    space = convert(model, recipe_from_dict({"rules": {"nn.Conv2d": {}}}), x)
    assert space.hparams == {}  # every group reads a BatchNorm2d, which is not converted
    assert all("nn.BatchNorm2d" in f.reason or "model output" in f.reason for f in space.frozen)


def test_channel_divisor_and_ratios_shape_the_choices() -> None:
    cls, shape = TOYS["chain"]
    model, x = cls().eval(), torch.randn(shape)
    recipe = recipe_from_dict(
        {"rules": {"nn.Conv2d": {"channels_ratio": [0.25, 0.5, 1.0], "channel_divisor": 8}, "nn.BatchNorm2d": {}}}
    )
    space = convert(model, recipe, x)
    assert space.hparams["body.1.0.out_channels"].choices == (24, 48, 96)


def test_select_rejects_unknown_names_and_values() -> None:
    cls, shape = TOYS["chain"]
    space = convert(cls().eval(), None, torch.randn(shape))
    with pytest.raises(NasPruneError, match="unknown hparam 'nope'"):
        space.select({"nope": 3})
    with pytest.raises(NasPruneError, match=r"body.1.0.out_channels=40 is not a choice"):
        space.select({"body.1.0.out_channels": 40})


def test_profile_reports_min_centroid_max_and_constraints() -> None:
    cls, shape = TOYS["residual"]
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(shape)
    full = fvcore_flops(model, x)
    report = profile(model, recipe_from_dict({}), x, {"flops": "60%", "params": 10})
    assert report.converted and report.num_hparams == 3
    assert report.flops["max"] == pytest.approx(full)
    assert report.flops["min"] < report.flops["centroid"] < report.flops["max"]
    assert report.flops_ratio == pytest.approx(report.flops["max"] / report.flops["min"])
    by_name = {c.name: c for c in report.constraints}
    assert by_name["flops"].limit == pytest.approx(0.6 * full)
    assert by_name["flops"].satisfiable == (report.flops["min"] <= 0.6 * full)
    assert not by_name["params"].satisfiable and not report.all_satisfiable


def test_profile_of_a_plain_model() -> None:
    model, x = TOYS["chain"][0]().eval(), torch.randn(TOYS["chain"][1])
    report = profile(model, None, x)
    assert not report.converted
    assert report.flops["min"] == report.flops["max"] == fvcore_flops(model, x)
    assert report.params["max"] == count_params(model)


def test_explain_names_the_group_its_coupled_layers_and_the_reason() -> None:
    from nasprune_cli.explain import explain

    cls, shape = TOYS["residual"]
    space = convert(cls().eval(), None, torch.randn(shape))
    info = explain(space, "a.1")
    created = next(g for g in info.groups if g.role == "creates")
    assert created.group == "stem.0.out_channels" and created.status == "prunable"
    assert sorted(created.sources) == ["a.1", "b.1", "stem.0"]
    assert "fc.in" in created.coupled
    fc = explain(space, "fc")
    assert {g.status for g in fc.groups} == {"prunable", "frozen"}
    assert "model output" in next(g.reason for g in fc.groups if g.status == "frozen")
    with pytest.raises(NasPruneError, match="no layer named 'a.9'; did you mean"):
        explain(space, "a.9")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # a flat `features` list: its inner runs of residual blocks, and each block's squeeze-excitation
        ("mobilenet_v3_small", {"features.depth[3:4]", "features.depth[5:7]", "features.depth[10:12]"}),
        # RegNet's stages are AnyStage (an nn.Sequential subclass that keeps its forward)
        ("regnet_y_400mf", {"trunk_output.block2.depth", "trunk_output.block2.block2-0.f.depth[2:3]"}),
    ],
)
def test_skippable_blocks_on_torchvision_models_export_what_the_subnet_computes(name: str, expected: set) -> None:
    import torchvision

    torch.manual_seed(0)
    model, x = getattr(torchvision.models, name)().eval(), torch.randn(2, 3, 64, 64)
    rules = {t: {} for t in ("nn.Conv2d", "nn.BatchNorm2d", "nn.Linear")}
    deep = {**rules, "nn.Sequential": {"min_depth": 1, "skippable": "blocks"}}
    space = convert(model, recipe_from_dict({"mode": "autonas", "rules": deep}), x)
    depth = {n for n, hp in space.hparams.items() if hp.kind == "depth"}
    assert expected <= depth
    # skippable blocks pass their channels through: the width hparams are those of a width-only space
    widths = {n: hp.choices for n, hp in space.hparams.items() if hp.kind == "width"}
    torch.manual_seed(0)
    plain = convert(getattr(torchvision.models, name)().eval(), recipe_from_dict({"rules": rules}), x)
    assert widths and widths == {n: hp.choices for n, hp in plain.hparams.items()}
    # only blocks are skipped: never a single layer
    modules = dict(model.named_modules())
    assert all(any(True for _ in modules[m].children()) for n in depth for m in space.hparams[n].members)
    space.select({n: space.hparams[n].choices[0] for n in depth})
    with torch.no_grad():
        exported = space.export().eval()
        torch.testing.assert_close(exported(x), model(x))
    assert space.cost().flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
    assert space.cost().params == count_params(exported)
    _check_subnets(space, model, x, range(3))


def test_grouped_conv_whose_group_count_shares_no_multiple_with_the_divisor_prunes_per_group() -> None:
    """104 channels in 13 groups (RegNet): no multiple of 32 is a multiple of 13, so the widths step by 13 (each group
    keeps the same number of channels) instead of leaving the layer whole."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 104, 1),
        nn.BatchNorm2d(104),
        nn.ReLU(),
        nn.Conv2d(104, 104, 3, padding=1, groups=13),
        nn.BatchNorm2d(104),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(104, 10),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    space = convert(model, recipe_from_dict({"rules": {"nn.Conv2d": {}, "nn.BatchNorm2d": {}, "nn.Linear": {}}}), x)
    widths = [hp.choices for hp in space.hparams.values()]
    assert widths and all(c % 13 == 0 for choices in widths for c in choices)
    assert all(len(choices) > 1 for choices in widths)
    _check_subnets(space, model, x, range(6))
