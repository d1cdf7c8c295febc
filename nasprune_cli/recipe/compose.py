"""Recipes built from layers: `extends` chains (shipped names or relative paths), deep merge and `--set KEY=VALUE`.

Each layer is a (source, data) pair; later layers win. `mappings merge, lists and scalars replace`; the rules of one
module type are merged pattern by pattern (an unnested config is `{"*": config}` for the merge)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune_cli.errors import RecipeError
from nasprune_cli.loading import short_repr
from nasprune_cli.recipe.files import ValueLoader, is_recipe_name, parse_yaml, read_yaml, shipped_recipe
from nasprune_cli.recipe.schema import MODULE_TYPES, RULE_MODELS, is_unnested

MAX_EXTENDS = 32  # a chain longer than this is surely a mistake


@dataclass(frozen=True)
class Layer:
    """One source of recipe keys: a file of an extends chain, one --set, or the command line's flags."""

    source: str
    data: Mapping[str, Any]


def file_layers(path: Path, source: str) -> list[Layer]:
    """The layers of a recipe file and of the recipes it extends, the farthest base first (`extends` removed)."""
    layers: list[Layer] = []
    seen: list[Path] = []
    while True:
        key = path.resolve()
        if key in seen:
            chain = " -> ".join(str(p) for p in [*seen, key])
            raise RecipeError(f"{source}: extends: cycle: {chain}")
        if len(seen) >= MAX_EXTENDS:
            raise RecipeError(f"{source}: extends: a chain of more than {MAX_EXTENDS} recipes; is there a loop?")
        seen.append(key)
        data = read_yaml(path, source)
        if data is None:  # an empty file is an empty recipe
            data = {}
        if not isinstance(data, Mapping):
            raise RecipeError(f"{source}: expected a mapping of recipe sections at the top level (got {_show(data)})")
        data = dict(data)
        parent = data.pop("extends", None)
        layers.append(Layer(source, data))
        if parent is None:
            return layers[::-1]
        path, source = _parent_file(parent, path, source)


def dict_layers(data: Mapping[str, Any], source: str) -> list[Layer]:
    """The layers of a recipe given as a mapping (the Python API): the recipes its `extends` names (a shipped name,
    or a path relative to the working directory), the farthest base first, then the mapping without `extends`."""
    data = dict(data)
    parent = data.pop("extends", None)
    if parent is None:
        return [Layer(source, data)]
    path, parent_source = _parent_file(parent, Path.cwd() / "recipe.yaml", source)
    return [*file_layers(path, parent_source), Layer(source, data)]


def _parent_file(value: Any, child: Path, source: str) -> tuple[Path, str]:
    """The file an `extends` value names: a shipped recipe's name, or a path relative to the extending file."""
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(
            f"{source}: extends: expected the name of a shipped recipe or a path relative to this file "
            f"(got {_show(value)})"
        )
    if is_recipe_name(value):
        path = shipped_recipe(value, f"{source}: extends")
        return path, str(path)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else child.parent / path
    if not path.exists():
        hint = ""
        if "/" not in value and is_recipe_name(Path(value).stem):
            hint = f"; a shipped recipe is named without .yaml (extends: {Path(value).stem})"
        raise RecipeError(f"{source}: extends: {value}: file not found (looked for {path}){hint}")
    return path, str(path)


def merge(base: Mapping[str, Any], over: Mapping[str, Any], where: tuple[Any, ...] = ()) -> dict[str, Any]:
    """`over` deep-merged over `base`: mappings merge, lists and scalars (and null) replace."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if _is_rule_entry((*where, key)):
                old, value = as_patterns(key, old), as_patterns(key, value)
            merged[key] = merge(old, value, (*where, key))
        else:
            merged[key] = value
    return merged


def as_patterns(type_name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A module type's rules as glob pattern -> config (an unnested config is short for {"*": config})."""
    return {"*": dict(entry)} if is_unnested(type_name, entry) else dict(entry)


def _is_rule_entry(loc: tuple[Any, ...]) -> bool:
    return len(loc) == 2 and loc[0] == "rules" and loc[1] in MODULE_TYPES


def set_layer(text: str) -> tuple[tuple[str, ...], Any]:
    """`--set KEY=VALUE` -> (key path, value): dotted key (module types and glob patterns under `rules` may contain
    dots), value read as YAML (`false`, `8`, `[0.5, 1.0]`, `{flops: 60%}`; nothing = null)."""
    source = f"--set {text}"
    key, eq, value = text.partition("=")
    if not eq:
        raise RecipeError(f"{source}: expected KEY=VALUE, e.g. --set search.fill=false")
    key = key.strip()
    if not key:
        raise RecipeError(f"{source}: empty key; expected KEY=VALUE, e.g. --set search.fill=false")
    parts = key.split(".")
    if any(not p for p in parts):
        raise RecipeError(f"{source}: {key}: empty part in the key (two dots, or a dot at an end)")
    if parts[0] == "extends":
        raise RecipeError(f"{source}: extends: cannot be set with --set; write `extends:` in a recipe file")
    parsed = parse_yaml(value, f"{source}: {key}", ValueLoader)
    loc = _rules_key(parts, source, parsed) if parts[0] == "rules" and len(parts) > 1 else tuple(parts)
    return loc, parsed


def _rules_key(parts: list[str], source: str, value: Any) -> tuple[str, ...]:
    """rules.<type>[.<pattern>][.<field>]: the type is the longest known name, the field the last part when it is one
    of the type's rule fields (the pattern is then "*" when not given); a pattern takes a config or null, so a last
    part given any other value is a misspelt field."""
    for end in range(len(parts), 1, -1):
        type_name = ".".join(parts[1:end])
        if type_name in MODULE_TYPES:
            rest = parts[end:]
            fields = RULE_MODELS[type_name].model_fields
            if not rest:
                return ("rules", type_name)
            if rest[-1] in fields:
                return ("rules", type_name, ".".join(rest[:-1]) or "*", rest[-1])
            if value is not None and not isinstance(value, Mapping):
                expected = ", ".join(sorted(fields))
                raise RecipeError(
                    f"{source}: {'.'.join(parts)}: unknown key {rest[-1]!r} (expected one of {expected}, after an "
                    f"optional glob pattern: rules.{type_name}[.<pattern>].<field>)"
                )
            return ("rules", type_name, ".".join(rest))
    raise RecipeError(
        f"{source}: {'.'.join(parts)}: unknown module type (expected rules.<type>[.<pattern>][.<field>] with a type "
        f"among {', '.join(MODULE_TYPES)})"
    )


def apply_set(data: Mapping[str, Any], loc: tuple[str, ...], value: Any, source: str) -> dict[str, Any]:
    """`data` with the value at `loc` set (a mapping value merges into a mapping there); walking into a list or a
    scalar is a RecipeError naming `source`."""
    result = dict(data)
    node = result
    for depth, key in enumerate(loc[:-1]):
        child = node.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            path = ".".join(loc[: depth + 1])
            kind = "a list" if isinstance(child, list) else f"{_scalar(child)}, not a mapping"
            raise RecipeError(f"{source}: {path}: is {kind}; set {path} itself, e.g. --set {path}=<value>")
        child = as_patterns(key, child) if _is_rule_entry(loc[: depth + 1]) else dict(child)
        node[key] = child
        node = child
    last = loc[-1]
    old = node.get(last)
    if isinstance(value, Mapping) and isinstance(old, Mapping):
        if _is_rule_entry(loc):
            old, value = as_patterns(last, old), as_patterns(last, value)
        node[last] = merge(old, value, loc)
    else:
        node[last] = value
    return result


def nested(loc: tuple[str, ...], value: Any) -> dict[str, Any]:
    """{a: {b: value}} for the key path (a, b): a --set as a layer, for naming it in errors."""
    out: Any = value
    for key in reversed(loc):
        out = {key: out}
    return out


def holds(data: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether a layer gives the value at a key path (an error's location); rules are read in both forms."""
    node: Any = data
    for depth, part in enumerate(loc):
        if not isinstance(node, Mapping):
            return False
        if depth == 2 and loc[0] == "rules" and loc[1] in MODULE_TYPES and part not in node:
            node = as_patterns(loc[1], node)  # an unnested config, named rules.<type>.*.<field> after a merge
        if part not in node:
            return False
        node = node[part]
    return bool(loc)


def _scalar(value: Any) -> str:
    """A scalar as YAML writes it (false, null, 8, 'text')."""
    return json.dumps(value) if value is None or isinstance(value, (bool, int, float)) else _show(value)


def _show(value: Any) -> str:
    return short_repr(value, 80)
