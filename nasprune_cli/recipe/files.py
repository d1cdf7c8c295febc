"""Recipe files: the bounded YAML reader and the recipes shipped with nasprune (`recipes/` links to them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nasprune_cli.errors import RecipeError
from nasprune_cli.loading import BoundedLoader, YamlLimitError, load_yaml, short_repr

MAX_RECIPE_BYTES = 8 * 1024 * 1024  # a recipe is a few KB; 10,000 rules are under 1 MB
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"  # the one copy; the repository's recipes/ links here
_SUFFIXES = (".yaml", ".yml")


def shipped_names() -> list[str]:
    """Names of the shipped recipes (fastnas, autonas, demo), sorted."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def is_recipe_name(text: str) -> bool:
    """Whether `text` reads as the name of a shipped recipe (no directory, no .yaml suffix) rather than a path."""
    return bool(text) and "/" not in text and "\\" not in text and not text.lower().endswith(_SUFFIXES)


def shipped_recipe(name: str, source: str) -> Path:
    """The file of a shipped recipe; an unknown name is a RecipeError listing the shipped ones."""
    if name not in shipped_names():
        raise RecipeError(
            f"{source}: unknown shipped recipe {name!r} (expected one of {', '.join(shipped_names())}, "
            "or a path to a .yaml file)"
        )
    return SHIPPED_DIR / f"{name}.yaml"


def recipe_file(path: str | Path) -> Path:
    """The file a --recipe / `recipe show` argument names: the path, or a shipped recipe's name when no such file
    exists (`--recipe fastnas`)."""
    text = str(path)
    if not Path(path).exists() and is_recipe_name(text) and text in shipped_names():
        return SHIPPED_DIR / f"{text}.yaml"
    return Path(path)


def read_yaml(path: Path, source: str) -> Any:
    """One YAML document of at most MAX_RECIPE_BYTES, duplicate keys refused; errors name `source` and the line."""
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
    return parse_yaml(text, source, UniqueKeyLoader)


def parse_yaml(text: str, source: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """Parse YAML text; errors are one RecipeError naming `source` (and the line and column when known)."""
    try:
        return load_yaml(text, loader)
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


class UniqueKeyLoader(BoundedLoader):
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


class ValueLoader(UniqueKeyLoader):
    """For values typed on the command line: YAML 1.2 booleans (true / false), so `yes`, `no`, `on` and `off` stay
    strings and a boolean setting given one of them is an error instead of a guess."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in UniqueKeyLoader.yaml_implicit_resolvers.items()
    }


ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
