"""Apply a recipe's glob rules to a model's modules, and turn ratios into channel-width choices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn

from nasprune_cli.dynamic.base import EXTERNAL_TYPE_NAMES, is_sequential_like
from nasprune_cli.dynamic.custom import layer_spec
from nasprune_cli.dynamic.layer_stack import RECIPE_TYPE as LAYERS_TYPE
from nasprune_cli.dynamic.layer_stack import is_layer_stack
from nasprune_cli.dynamic.subclass import registered_parent
from nasprune_cli.recipe.schema import MODULE_TYPES, FeatureRule, LayerRule, Recipe, layer_class, type_defaults

_TYPE_NAMES: dict[type[nn.Module], str] = {cls: name for name, cls in MODULE_TYPES.items()}


@dataclass
class ResolvedRules:
    """The rule of every convertible module (None = not converted) and the glob patterns that matched nothing."""

    by_module: dict[str, LayerRule | None] = field(default_factory=dict)
    unused_patterns: list[str] = field(default_factory=list)  # "nn.Conv2d: features.*"


def resolve_rules(recipe: Recipe | None, model: nn.Module) -> ResolvedRules:
    """Rule of every module whose type is convertible: an exact type, a subclass of one (the rules keyed by its
    qualified class name, else its parent's) or a registered layer (its qualified name's rules, else the recipe's
    defaults), and nn.Sequential subclasses that keep its forward where their rule has `skippable: blocks`; later
    matching patterns win, unmatched = None."""
    recipe = recipe if recipe is not None else Recipe()
    table = recipe.rules_table()
    by_class = {cls: key for key in table if (cls := layer_class(key)) is not None}
    resolved = ResolvedRules()
    used: set[tuple[str, str]] = set()
    for name, module in model.named_modules():
        type_name = _type_name(type(module), by_class) or EXTERNAL_TYPE_NAMES.get(type(module))
        if type_name is None and is_layer_stack(module):
            type_name = LAYERS_TYPE
        stage = type_name is None and is_sequential_like(type(module))
        if stage:
            type_name = "nn.Sequential"
        if type_name is None:
            continue
        if type_name not in table and layer_spec(type(module)) is not None:
            # a registered layer no rule names: converted with the recipe's defaults
            resolved.by_module[name] = FeatureRule.model_validate(type_defaults("nn.Linear", recipe.defaults))
            continue
        rule: LayerRule | None = None
        for pattern, candidate in (table.get(type_name) or {}).items():
            if fnmatchcase(name, pattern):
                rule = candidate
                used.add((type_name, pattern))
        if stage and getattr(rule, "skippable", None) != "blocks":
            continue  # a Sequential subclass is a stage of blocks only where the rule skips blocks
        resolved.by_module[name] = rule
    for type_name, patterns in table.items():
        for pattern in patterns or {}:
            # a bare "*" matching nothing only means the model has no layer of that type: not worth a warning
            if pattern != "*" and (type_name, pattern) not in used:
                resolved.unused_patterns.append(f"{type_name}: {pattern}")
    return resolved


def _type_name(module_type: type[nn.Module], by_class: dict[type[nn.Module], str]) -> str | None:
    """The rules key that applies to a module type: its own name, its qualified class name, its parent's name."""
    if module_type in _TYPE_NAMES:
        return _TYPE_NAMES[module_type]
    if module_type in by_class:
        return by_class[module_type]
    if layer_spec(module_type) is not None:
        return f"{module_type.__module__}.{module_type.__qualname__}"
    return _TYPE_NAMES.get(registered_parent(module_type))  # type: ignore[arg-type]


def width_choices(size: int, ratios: Sequence[float], divisor: int) -> list[int]:
    """Width choices of a layer: each ratio's width rounded to a multiple of divisor, clipped, plus `size`."""
    if size <= 0:
        return [size]
    choices = {size}
    for ratio in ratios:
        # round half up (on a value cleaned of float noise, so 0.35 * 320 / 32 = 3.5 -> 4, not 3)
        width = math.floor(round(ratio * size / divisor, 9) + 0.5) * divisor
        width = max(width, divisor if size >= divisor else size)
        choices.add(min(width, size))
    return sorted(choices)
