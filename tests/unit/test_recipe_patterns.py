"""resolve_rules (exact types, glob precedence, null, absent types) and width_choices."""

from __future__ import annotations

import pytest
from torch import nn

from nasprune_cli.recipe import ConvRule, FeatureRule, Recipe, SequentialRule, resolve_rules, width_choices


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3))
        self.head = nn.Conv2d(32, 8, 1)
        self.fc = nn.Linear(8, 4)


class MyConv(nn.Conv2d):
    """A subclass: converted like its parent unless a rule names its class."""


def recipe(rules: dict | None, **kwargs: object) -> Recipe:
    return Recipe.model_validate({"rules": rules, **kwargs})


def test_no_recipe_means_fastnas_defaults_for_every_exact_type() -> None:
    resolved = resolve_rules(None, Net())
    assert resolved.by_module == {
        "features": None,  # nn.Sequential is listed (a convertible type) but FastNAS does not convert it
        "features.0": ConvRule(),
        "features.1": FeatureRule(),
        "features.3": ConvRule(),
        "head": ConvRule(),
        "fc": FeatureRule(),
    }  # nn.ReLU and Net are not convertible types: absent
    assert resolved.unused_patterns == []


def test_autonas_defaults_cover_sequential() -> None:
    resolved = resolve_rules(Recipe(mode="autonas"), Net())
    assert resolved.by_module["features"] == SequentialRule()


def test_subclass_follows_its_parents_rules_unless_a_rule_names_its_class() -> None:
    model = nn.Sequential(MyConv(3, 8, 1), nn.Conv2d(8, 8, 1))
    resolved = resolve_rules(recipe({"nn.Conv2d": {"channel_divisor": 4}}), model)
    assert resolved.by_module["0"] == resolved.by_module["1"] == ConvRule(channel_divisor=4)
    named = {"nn.Conv2d": {}, f"{__name__}.MyConv": {"channel_divisor": 2}}
    resolved = resolve_rules(recipe(named), model)
    assert resolved.by_module["0"] == ConvRule(channel_divisor=2) and resolved.by_module["1"] == ConvRule()
    resolved = resolve_rules(recipe({"nn.Conv2d": {}, f"{__name__}.MyConv": None}), model)
    assert resolved.by_module["0"] is None


def test_later_patterns_win_and_null_excludes() -> None:
    rules = {"nn.Conv2d": {"*": {"channel_divisor": 8}, "features.*": {"channel_divisor": 16}, "features.3": None}}
    resolved = resolve_rules(recipe(rules), Net())
    assert resolved.by_module["head"] == ConvRule(channel_divisor=8)
    assert resolved.by_module["features.0"] == ConvRule(channel_divisor=16)
    assert resolved.by_module["features.3"] is None


def test_order_matters_earlier_specific_pattern_is_overridden() -> None:
    rules = {"nn.Conv2d": {"head": None, "*": {}}}
    assert resolve_rules(recipe(rules), Net()).by_module["head"] == ConvRule()


def test_unmatched_module_is_not_converted() -> None:
    resolved = resolve_rules(recipe({"nn.Conv2d": {"features.*": {}}}), Net())
    assert resolved.by_module["head"] is None
    assert resolved.by_module["features.0"] == ConvRule()


def test_type_absent_or_null_is_not_converted() -> None:
    resolved = resolve_rules(recipe({"nn.Conv2d": {}, "nn.Linear": None}), Net())
    assert resolved.by_module["head"] == ConvRule()
    assert resolved.by_module["fc"] is None  # null
    assert resolved.by_module["features.1"] is None  # nn.BatchNorm2d absent from the rules


def test_unnested_config_applies_to_every_layer_of_the_type() -> None:
    resolved = resolve_rules(recipe({"nn.Linear": {"features_ratio": [0.5, 1.0]}}), Net())
    assert resolved.by_module["fc"] == FeatureRule(features_ratio=[0.5, 1.0])


def test_unused_patterns_are_reported_except_bare_star() -> None:
    rules = {"nn.Conv2d": {"*": {}, "backbone.*": None}, "nn.Conv3d": {}, "nn.Linear": {"fc": {}}}
    resolved = resolve_rules(recipe(rules), Net())
    assert resolved.unused_patterns == ["nn.Conv2d: backbone.*"]


def test_root_module_is_matched_by_its_empty_name() -> None:
    resolved = resolve_rules(Recipe(mode="autonas"), nn.Sequential(nn.Linear(4, 4)))
    assert resolved.by_module[""] == SequentialRule()


DEFAULT_RATIOS = [round(0.05 * i, 2) for i in range(1, 21)]


@pytest.mark.parametrize(
    ("size", "ratios", "divisor", "expected"),
    [
        (64, DEFAULT_RATIOS, 32, [32, 64]),
        (20, DEFAULT_RATIOS, 32, [20]),  # narrower than the divisor: the layer keeps its width
        (256, DEFAULT_RATIOS, 32, [32, 64, 96, 128, 160, 192, 224, 256]),
        (100, [0.5], 1, [50, 100]),
        (101, [0.5], 1, [51, 101]),  # 50.5 rounds half up
        (96, [0.5], 32, [64, 96]),  # 48 / 32 = 1.5 -> 2 * 32
        (320, [0.35], 32, [128, 320]),  # 0.35 * 320 / 32 = 3.5 exactly, despite float noise -> 4
        (48, [0.1], 32, [32, 48]),  # at least the divisor
        (64, [1.0, 1.0, 0.99], 32, [64]),  # deduplicated, never above size
    ],
)
def test_width_choices(size: int, ratios: list[float], divisor: int, expected: list[int]) -> None:
    assert width_choices(size, ratios, divisor) == expected


def test_width_choices_always_ascending_and_include_size() -> None:
    for size in range(1, 300, 7):
        for divisor in (1, 8, 32):
            choices = width_choices(size, DEFAULT_RATIOS, divisor)
            assert choices == sorted(set(choices)) and choices[-1] == size and choices[0] >= min(divisor, size)
