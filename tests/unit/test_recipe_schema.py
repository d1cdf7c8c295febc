"""Recipe models: defaults, rule normalization (unnested shorthand, patterns, null) and round trips."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from nasprune_cli.recipe import (
    MODULE_TYPES,
    AttentionRule,
    ConvRule,
    FeatureRule,
    GroupNormRule,
    Recipe,
    SequentialRule,
    recipe_from_dict,
    recipe_to_dict,
)
from nasprune_cli.recipe.schema import RULE_MODELS, default_rules

EXPECTED_RATIOS = [
    float(r)
    for r in "0.05 0.1 0.15 0.2 0.25 0.3 0.35 0.4 0.45 0.5 0.55 0.6 0.65 0.7 0.75 0.8 0.85 0.9 0.95 1.0".split()
]


@pytest.mark.parametrize("rule_cls", [ConvRule, FeatureRule, GroupNormRule])
def test_channel_rule_defaults_are_fastnas(rule_cls: type) -> None:
    rule = rule_cls()
    assert rule.ratios == EXPECTED_RATIOS  # 20 values, exactly 0.15 and not 0.15000000000000002
    assert len(rule.ratios) == 20
    assert rule.divisor == 32


def test_conv_rule_fields_and_uniform_properties() -> None:
    rule = ConvRule(channels_ratio=[0.5, 1.0], channel_divisor=8, kernel_size=[3, 5])
    assert (rule.ratios, rule.divisor, rule.kernel_size) == ([0.5, 1.0], 8, [3, 5])
    assert ConvRule().kernel_size == []
    feature = FeatureRule(features_ratio=[0.25], feature_divisor=16)
    assert (feature.ratios, feature.divisor) == ([0.25], 16)
    assert SequentialRule().min_depth == 0


def test_module_types_cover_the_convertible_layers() -> None:
    import torch.nn as nn

    assert MODULE_TYPES["nn.Conv2d"] is nn.Conv2d
    assert MODULE_TYPES["nn.SyncBatchNorm"] is nn.SyncBatchNorm
    assert MODULE_TYPES["nn.Sequential"] is nn.Sequential
    from nasprune_cli.dynamic import DYNAMIC_REGISTRY
    from nasprune_cli.dynamic.base import EXTERNAL_TYPE_NAMES, type_label
    from nasprune_cli.recipe.schema import TransformersAttention, TransformersLayers

    # every recipe type has a dynamic class and vice versa, and recipes name it as messages do; the transformers
    # attention classes (registered when a model uses them) share one recipe type that stands for all of them, and
    # transformers layer stacks (nn.ModuleList, found by dynamic/layer_stack.py) have a stand-in type too
    own = {name: cls for name, cls in MODULE_TYPES.items() if cls not in (TransformersAttention, TransformersLayers)}
    assert set(own.values()) == set(DYNAMIC_REGISTRY) - set(EXTERNAL_TYPE_NAMES)
    assert all(type_label(cls) == name for name, cls in own.items())
    assert all(MODULE_TYPES[name] is TransformersAttention for name in EXTERNAL_TYPE_NAMES.values())
    assert RULE_MODELS["torchvision.ShiftedWindowAttention"] is AttentionRule
    assert RULE_MODELS["nn.ConvTranspose3d"] is ConvRule
    assert RULE_MODELS["nn.LayerNorm"] is FeatureRule
    assert RULE_MODELS["nn.GroupNorm"] is GroupNormRule
    assert RULE_MODELS["nn.Sequential"] is SequentialRule


def test_default_recipe() -> None:
    recipe = Recipe()
    assert (recipe.version, recipe.mode, recipe.rules) == (1, "fastnas", None)
    assert recipe.search_settings().searcher == "binary"
    assert recipe.input.shape == [1, 3, 224, 224] and recipe.input.dtype == "float32"
    assert recipe.search.max_batches == 8 and recipe.search.constraints == {}
    table = recipe.rules_table()
    assert "nn.Sequential" not in table  # FastNAS never searches depth
    assert set(table) == set(MODULE_TYPES) - {"nn.Sequential", "transformers.Layers"}
    assert table["nn.Conv2d"] == {"*": ConvRule()}


def test_autonas_defaults_include_sequential_and_evolve() -> None:
    recipe = Recipe(mode="autonas")
    assert recipe.search_settings().searcher == "evolve"
    assert set(recipe.rules_table()) == set(MODULE_TYPES)
    assert default_rules("autonas")["nn.Sequential"] == {"*": SequentialRule()}


def test_explicit_searcher_wins_over_mode_default() -> None:
    assert (
        Recipe.model_validate({"mode": "autonas", "search": {"searcher": "random"}}).search_settings().searcher
        == "random"
    )


def test_unnested_config_is_short_for_star_pattern() -> None:
    recipe = Recipe.model_validate({"rules": {"nn.Conv2d": {"channels_ratio": [0.5, 1.0]}, "nn.Linear": {}}})
    assert recipe.rules == {
        "nn.Conv2d": {"*": ConvRule(channels_ratio=[0.5, 1.0])},
        "nn.Linear": {"*": FeatureRule()},
    }


def test_pattern_mapping_keeps_order_and_null() -> None:
    recipe = Recipe.model_validate(
        {"rules": {"nn.Conv2d": {"*": {"channel_divisor": 16}, "features.0": None, "head*": {}}, "nn.Linear": None}}
    )
    conv = recipe.rules["nn.Conv2d"]
    assert list(conv) == ["*", "features.0", "head*"]
    assert conv["*"] == ConvRule(channel_divisor=16) and conv["features.0"] is None and conv["head*"] == ConvRule()
    assert recipe.rules["nn.Linear"] is None


def test_sequential_unnested_min_depth() -> None:
    recipe = Recipe.model_validate({"rules": {"nn.Sequential": {"min_depth": 2}}})
    assert recipe.rules == {"nn.Sequential": {"*": SequentialRule(min_depth=2)}}


def test_rule_models_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        ConvRule.model_validate({"chanels_ratio": [0.5]})
    with pytest.raises(ValidationError):
        FeatureRule.model_validate({"features_ratio": [0.0]})
    with pytest.raises(ValidationError):
        ConvRule.model_validate({"kernel_size": [4]})
    with pytest.raises(ValidationError):
        SequentialRule.model_validate({"min_depth": -1})


def test_input_section_accepts_several_shapes() -> None:
    recipe = Recipe.model_validate({"input": {"shape": [[1, 3, 8, 8], [1, 4]], "dtype": "int64"}})
    assert recipe.input.shape == [[1, 3, 8, 8], [1, 4]] and recipe.input.dtype == "int64"
    assert Recipe().input.shape == [1, 3, 224, 224]


def test_recipe_dict_round_trip_is_json_able() -> None:
    recipe = Recipe.model_validate(
        {
            "mode": "autonas",
            "description": "round trip",
            "rules": {
                "nn.Conv2d": {"*": {"kernel_size": [3]}, "stem*": None},
                "nn.Sequential": {"min_depth": 1},
                "nn.BatchNorm2d": None,
            },
            "search": {"constraints": {"flops": "60%", "params": 5e6}, "seed": 3},
            "input": {"shape": [1, 3, 32, 32]},
        }
    )
    data = recipe_to_dict(recipe)
    assert json.loads(json.dumps(data)) == data
    assert data["rules"]["nn.Conv2d"]["stem*"] is None
    assert data["rules"]["nn.BatchNorm2d"] is None
    assert recipe_from_dict(data) == recipe
    assert recipe_from_dict(recipe_to_dict(Recipe())) == Recipe()


def test_shipped_recipes_load(tmp_path: object) -> None:
    from pathlib import Path

    from nasprune_cli.recipe import load_recipe

    root = Path(__file__).resolve().parents[2] / "recipes"
    fast = load_recipe(root / "fastnas.yaml")
    assert fast.mode == "fastnas" and fast.description and fast.search_settings().searcher == "binary"
    assert fast.rules == default_rules("fastnas")  # the FastNAS defaults, written out
    auto = load_recipe(root / "autonas.yaml")
    assert auto.mode == "autonas" and auto.description and auto.search_settings().searcher == "evolve"
    assert auto.rules["nn.Sequential"] == {"*": SequentialRule(min_depth=1)}
    assert auto.rules["nn.Conv2d"] == fast.rules["nn.Conv2d"]
    # a small population on the command line needs no candidate_size: it defaults to min(10, population_size)
    small = load_recipe(root / "autonas.yaml", {"search": {"population_size": 4}})
    assert small.search.population_size == 4 and small.search.candidate_size is None
