"""Apply a recipe's glob rules to a model's modules, and turn ratios into channel-width choices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn

from nasprune_cli.dynamic.base import EXTERNAL_TYPE_NAMES, is_sequential_like
from nasprune_cli.recipe.schema import MODULE_TYPES, LayerRule, Recipe

_TYPE_NAMES: dict[type[nn.Module], str] = {cls: name for name, cls in MODULE_TYPES.items()}


@dataclass
class ResolvedRules:
    """The rule of every convertible module (None = not converted) and the glob patterns that matched nothing."""

    by_module: dict[str, LayerRule | None] = field(default_factory=dict)
    unused_patterns: list[str] = field(default_factory=list)  # "nn.Conv2d: features.*"


def resolve_rules(recipe: Recipe | None, model: nn.Module) -> ResolvedRules:
    """Rule of every module whose exact type is convertible (and of nn.Sequential subclasses that keep its forward,
    where their rule has `skippable: blocks`); later matching patterns win, unmatched = None."""
    table = (recipe if recipe is not None else Recipe()).rules_table()
    resolved = ResolvedRules()
    used: set[tuple[str, str]] = set()
    for name, module in model.named_modules():
        type_name = _TYPE_NAMES.get(type(module)) or EXTERNAL_TYPE_NAMES.get(type(module))
        stage = type_name is None and is_sequential_like(type(module))
        if stage:
            type_name = "nn.Sequential"
        if type_name is None:
            continue
        patterns = table.get(type_name)
        rule: LayerRule | None = None
        for pattern, candidate in (patterns or {}).items():
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
