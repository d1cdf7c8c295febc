"""YAML recipe file (+ overrides) -> Recipe, with one-line errors naming the file, the key path and the value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nasprune_cli.errors import RecipeError
from nasprune_cli.loading import BoundedLoader, YamlLimitError, load_yaml, short_repr
from nasprune_cli.recipe.schema import MODULE_TYPES, InputSection, Recipe, SearchSettings, rule_fields

_SECTIONS: dict[str, type[BaseModel]] = {"search": SearchSettings, "input": InputSection}
_MAX_VALUE_CHARS = 80
MAX_RECIPE_BYTES = 8 * 1024 * 1024  # a recipe is a few KB; 10,000 rules are under 1 MB


def load_recipe(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None, overrides_source: str = "overrides"
) -> Recipe:
    """Read and validate a recipe file; `overrides` (nested mappings) are merged over it; None path = defaults.

    An error in a value that came from `overrides` names `overrides_source` (e.g. "command line") instead of the file.
    """
    source = str(path) if path is not None else "recipe"
    data: Any = {} if path is None else _read_yaml(Path(path), source)
    if data is None:  # an empty file is an empty recipe
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: expected a mapping of recipe sections at the top level (got {_show(data)})")
    if overrides:
        data = _merge(data, overrides)
    return _validate(data, source, overrides or {}, overrides_source)


def search_settings(
    base: SearchSettings | None, overrides: Mapping[str, Any], source: str = "search config"
) -> SearchSettings:
    """`base` (a recipe's search section, None: defaults) with `overrides` merged over it, validated like a recipe;
    an error names `source` and the key path (e.g. `search config: search.fill: ...`)."""
    data = {**(base.model_dump(exclude_unset=True) if base is not None else {}), **overrides}
    return _validate({"search": data}, source).search


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """A JSON-able dict of a recipe (rules in their normalized pattern form), for checkpoints."""
    data = recipe.model_dump(mode="json", exclude={"rules"})
    if recipe.rules is None:
        data["rules"] = None
    else:
        data["rules"] = {
            type_name: None
            if patterns is None
            else {pattern: None if rule is None else rule.model_dump(mode="json") for pattern, rule in patterns.items()}
            for type_name, patterns in recipe.rules.items()
        }
    return data


def recipe_from_dict(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """Rebuild a Recipe from `recipe_to_dict` output (e.g. read from a checkpoint)."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: expected a mapping (got {_show(data)})")
    return _validate(data, source)


def _validate(
    data: Mapping[str, Any],
    source: str,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "overrides",
) -> Recipe:
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        where = overrides_source if _overridden(overrides or {}, tuple(errors[0]["loc"])) else source
        raise RecipeError(f"{where}: {format_error(errors[0], data)}{more}") from None


def _overridden(overrides: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether the value at a key path was given in the overrides."""
    node: Any = overrides
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def _read_yaml(path: Path, source: str) -> Any:
    if not path.exists():
        raise RecipeError(f"{source}: file not found")
    if path.is_dir():
        raise RecipeError(f"{source}: is a directory, expected a YAML file")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{source}: file is {size / 2**20:.1f} MiB, a recipe may be at most {MAX_RECIPE_BYTES // 2**20} MiB; "
                "is it the right file?"
            )
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_RECIPE_BYTES + 1)  # a file that grows (a FIFO, /dev/zero) is still read bounded
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{source}: cannot read: {exc}") from None
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{source}: more than {MAX_RECIPE_BYTES // 2**20} MiB, a recipe is a few KB; is it the right file?"
        )
    try:
        return load_yaml(text, _UniqueKeyLoader)
    except YamlLimitError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise RecipeError(f"{source}: {where}refused: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        alias = any("alias" in (text or "") for text in (exc.problem, exc.context))
        hint = " (quote glob patterns such as '*' and 'features.*')" if alias else ""
        raise RecipeError(f"{source}: {where}invalid YAML: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: invalid YAML: {exc}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise RecipeError(f"{source}: invalid value: {short_repr(str(exc), 200)}") from None


class _UniqueKeyLoader(BoundedLoader):
    """Bounded SafeLoader that rejects duplicate keys (rule order matters, a silent overwrite would hide a rule)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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
        return f"{path}: unknown module type (expected one of {', '.join(MODULE_TYPES)})"
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
    if parent and parent[0] == "rules" and len(parent) >= 2 and parent[1] in MODULE_TYPES:
        return rule_fields(parent[1])
    if len(parent) == 1 and parent[0] in _SECTIONS:
        return sorted(_SECTIONS[parent[0]].model_fields)
    return sorted(Recipe.model_fields)


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
