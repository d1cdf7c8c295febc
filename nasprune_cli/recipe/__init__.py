"""Recipes: YAML files of layer rules and search settings, validated with pydantic."""

from __future__ import annotations

from nasprune_cli.recipe.load import load_recipe, recipe_from_dict, recipe_to_dict
from nasprune_cli.recipe.patterns import ResolvedRules, resolve_rules, width_choices
from nasprune_cli.recipe.schema import (
    MODULE_TYPES,
    AttentionRule,
    ConvRule,
    FeatureRule,
    GroupNormRule,
    InputSection,
    LayerRule,
    Recipe,
    SearchSettings,
    SequentialRule,
)

__all__ = [
    "MODULE_TYPES",
    "AttentionRule",
    "ConvRule",
    "FeatureRule",
    "GroupNormRule",
    "InputSection",
    "LayerRule",
    "Recipe",
    "ResolvedRules",
    "SearchSettings",
    "SequentialRule",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "resolve_rules",
    "width_choices",
]
