"""YAML recipe file (+ overrides) -> Recipe, with one-line errors naming the file, the key path and the value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nasprune_cli.errors import RecipeError
from nasprune_cli.loading import short_repr
from nasprune_cli.recipe.compose import Layer, apply_set, dict_layers, file_layers, holds, merge, nested, set_layer
from nasprune_cli.recipe.files import MAX_RECIPE_BYTES, recipe_file
from nasprune_cli.recipe.schema import MODULE_TYPES, InputSection, Recipe, SearchSettings, default_keys, rule_fields

__all__ = ["MAX_RECIPE_BYTES", "format_error", "load_recipe", "recipe_from_dict", "recipe_to_dict", "search_settings"]

_SECTIONS: dict[str, type[BaseModel]] = {"search": SearchSettings, "input": InputSection}
_MAX_VALUE_CHARS = 80


def load_recipe(
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "overrides",
    *,
    sets: Sequence[str] = (),
) -> Recipe:
    """Read and validate a recipe: the recipes it `extends` (the farthest first), the file, each `--set KEY=VALUE`
    of `sets`, then `overrides` (nested mappings); each deep-merged over the last. None path = defaults; a path that
    does not exist but names a shipped recipe (`fastnas`) reads that one.

    An error names the layer that gave the wrong value: the file (or the extended file), `--set KEY=VALUE`, or
    `overrides_source` (e.g. "command line") for `overrides`.
    """
    source = str(path) if path is not None else "recipe"
    layers = file_layers(recipe_file(path), source) if path is not None else []
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, layer.data)
    for text in sets:
        loc, value = set_layer(text)
        data = apply_set(data, loc, value, f"--set {text}")
        layers.append(Layer(f"--set {text}", nested(loc, value)))
    if overrides:
        data = merge(data, overrides)
        layers.append(Layer(overrides_source, overrides))
    return _validate(data, source, layers)


def search_settings(
    base: SearchSettings | None, overrides: Mapping[str, Any], source: str = "search config"
) -> SearchSettings:
    """`base` (a recipe's search section, None: defaults) with `overrides` merged over it, validated like a recipe;
    an error names `source` and the key path (e.g. `search config: search.fill: ...`)."""
    data = {**(base.model_dump(exclude_unset=True) if base is not None else {}), **overrides}
    return _validate({"search": data}, source).search


def recipe_to_dict(recipe: Recipe, *, effective_rules: bool = False) -> dict[str, Any]:
    """A JSON-able dict of a recipe (rules in their normalized pattern form, `defaults` applied to them), for
    checkpoints and `nasprune recipe show`. `effective_rules`: also write the mode's rules when there is no `rules`
    section (they are written anyway when `defaults` changes them)."""
    data = recipe.model_dump(mode="json", exclude={"rules", "defaults"})
    for key, unset in (("high", None), ("keywords", {})):  # the token-input keys only when set (older files lack them)
        if data["input"].get(key) == unset:
            del data["input"][key]
    rules = recipe.rules_table() if effective_rules or (recipe.rules is None and recipe.defaults) else recipe.rules
    if rules is None:
        data["rules"] = None
    else:
        data["rules"] = {
            type_name: None
            if patterns is None
            else {pattern: None if rule is None else rule.model_dump(mode="json") for pattern, rule in patterns.items()}
            for type_name, patterns in rules.items()
        }
    return data


def recipe_from_dict(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """A Recipe from a mapping: `recipe_to_dict` output (e.g. read from a checkpoint), or a recipe written in Python,
    which may `extends` a shipped recipe or a file (a path relative to the working directory)."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: expected a mapping (got {_show(data)})")
    layers = dict_layers(data, source)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.data)
    return _validate(merged, source, layers)


def _validate(data: Mapping[str, Any], source: str, layers: Sequence[Layer] = ()) -> Recipe:
    """A Recipe from merged data; an error names the last layer that gave the value at its key path (else `source`)."""
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        loc = tuple(errors[0]["loc"])
        where = next((layer.source for layer in reversed(layers) if holds(layer.data, loc)), source)
        raise RecipeError(f"{where}: {format_error(errors[0], data)}{more}") from None


def format_error(error: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> str:
    """One pydantic error as '<key.path>: <what is wrong> (got <value>)'."""
    loc = tuple(error["loc"])
    path = _key_path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key (expected one of {', '.join(_expected_keys(loc[:-1]))})"
    if kind == "constraint_name":
        return f"{path}: {error['msg']}"
    if kind == "unknown_module_type":
        return (
            f"{path}: unknown module type (expected one of {', '.join(MODULE_TYPES)}, or the importable name of a "
            "subclass of one of them or of a layer registered with nasprune_cli.register_layer, such as "
            "timm.layers.BatchNormAct2d; list the module that registers it under `plugins:`)"
        )
    if kind in ("plugin_name", "plugin_import"):
        return f"{path}: {error['msg']}"
    if kind == "missing":
        return f"{path}: required key is missing"
    return f"{path}: {_describe(kind, loc, ctx, error['msg'])} (got {_show(value)})"


def _describe(kind: str, loc: tuple[Any, ...], ctx: Mapping[str, Any], msg: str) -> str:
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "list_type":
        if field.endswith("_ratio"):
            return "expected a list of numbers"
        if field == "kernel_size":
            return "expected a list of odd integers"
        return "expected a list"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "expected a number"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected an integer"
    if kind in ("string_type", "str_type"):
        return "expected a string"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "expected a mapping"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}".replace(" or ", ", ")
    if kind == "union_tag_invalid" or msg.startswith("Input should be "):
        return "expected " + msg.removeprefix("Input should be ")
    return msg


def _expected_keys(parent: tuple[Any, ...]) -> list[str]:
    if parent == ("defaults",):
        return default_keys()
    if parent and parent[0] == "rules" and len(parent) >= 2 and parent[1] in MODULE_TYPES:
        return rule_fields(parent[1])
    if len(parent) == 1 and parent[0] in _SECTIONS:
        return sorted(_SECTIONS[parent[0]].model_fields)
    return sorted([*Recipe.model_fields, "extends"])  # `extends` is read (and removed) before validation


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "recipe"


def _show(value: Any) -> str:
    return short_repr(value, _MAX_VALUE_CHARS)
