"""The inputs of one search, typed: the recipe, its search settings with the caller's overrides, the score, data and
collect functions and the progress callback. `search_options` turns `search(config=...)` into them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune_cli.errors import LoadError, SearchError
from nasprune_cli.metrics.score import DEFAULT_SCORE_NAME, callable_name
from nasprune_cli.recipe.schema import Recipe, SearchSettings

Progress = Callable[[str, int, int], None]  # (stage, done, total); an `on_score(value)` method on it gets every score

# modelopt's names for the same settings are accepted too
ALIASES = {
    "score_func": "score",
    "data_loader": "data",
    "collect_func": "collect",
    "max_iter_data_loader": "max_batches",
}
# keys of `search(config=...)` that are not search settings
RUN_KEYS = ("recipe", "model_spec", "on_progress")
# settings that `search()` takes as its own argument instead
NOT_CONFIG = ("constraints",)


@dataclass(frozen=True)
class Entry:
    """A user function (or, for data, an iterable of batches) and the name messages and fingerprints use."""

    value: Any
    name: str


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search reads besides the model, the constraints and the dummy input."""

    recipe: Recipe | None
    settings: SearchSettings  # resolved: searcher and candidate_size are set
    score: Entry  # value None: the default label-free score; a LabelScore (top1 / top5 / loss) is bound to the data
    data: Entry  # value None: random batches shaped like the dummy input; a DataSource: imagefolder / tensors
    collect: Entry  # value None: the default (first element of a tuple / list batch)
    model_spec: dict[str, Any] | None = None  # {"entry_point", "kwargs"}; None: the model's class
    on_progress: Progress | None = None


def config_keys() -> list[str]:
    """Every key `search(config=...)` accepts."""
    settings = [name for name in SearchSettings.model_fields if name not in NOT_CONFIG]
    return sorted([*settings, *RUN_KEYS, *ALIASES])


def search_options(config: Mapping[str, Any] | None, recipe: Recipe | None = None) -> SearchOptions:
    """Typed options from a `search(config=...)` mapping; its settings win over the recipe's `search` section.

    `recipe` is used when the config names none (e.g. the recipe a SearchSpace was converted with)."""
    given = _normalize(config or {})
    recipe = _recipe(given.pop("recipe", None)) or recipe
    run = {key: given.pop(key, None) for key in RUN_KEYS if key != "recipe"}
    objects = {}  # score / data / collect given as Python objects rather than "pkg.module:fn" strings
    for key in ("score", "data", "collect"):
        if given.get(key) is not None and not isinstance(given[key], str):
            objects[key] = given.pop(key)
    if isinstance(given.get("checkpoint"), Path):
        given["checkpoint"] = str(given["checkpoint"])
    from nasprune_cli.recipe.load import search_settings

    overrides = {key: value for key, value in given.items() if value is not None}
    base = recipe.search if recipe is not None else None
    settings = search_settings(base, overrides).resolved(recipe.mode if recipe is not None else "fastnas")
    return SearchOptions(
        recipe=recipe,
        settings=settings,
        score=_function(objects.get("score", settings.score), "score"),
        data=_data(objects.get("data", settings.data)),
        collect=_function(objects.get("collect", settings.collect), "collect"),
        model_spec=_model_spec(run["model_spec"]),
        on_progress=run["on_progress"],
    )


def _normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    known = set(config_keys())
    options: dict[str, Any] = {}
    for key, value in config.items():
        if key not in known:
            raise SearchError(f"search config: unknown key '{key}' (expected one of {', '.join(config_keys())})")
        name = ALIASES.get(key, key)
        if name in options and value is not None:
            raise SearchError(f"search config: '{key}' given twice (also as '{name}')")
        if value is not None or name not in options:
            options[name] = value
    return options


def _recipe(value: Any) -> Recipe | None:
    if value is None or isinstance(value, Recipe):
        return value
    from nasprune_cli.recipe.load import load_recipe, recipe_from_dict

    if isinstance(value, (str, Path)):
        return load_recipe(value)
    if isinstance(value, Mapping):
        return recipe_from_dict(value, "search config: recipe")
    raise SearchError(f"search config: recipe must be a Recipe, a path or a dict (got {type(value).__name__})")


def _function(value: Any, what: str) -> Entry:
    """A score / collect function from a callable or a "pkg.mod:fn" spec, and its name for messages."""
    if value is None:
        return Entry(None, DEFAULT_SCORE_NAME if what == "score" else "default")
    if isinstance(value, str):
        from nasprune_cli.builtin import LABEL_SCORES, label_score
        from nasprune_cli.loading import load_entry_point

        builtin = label_score(value) if what == "score" else None
        if builtin is not None:
            return Entry(builtin, value)
        if what == "score" and ":" not in value:
            raise LoadError(
                f"score '{value}': expected a built-in score ({', '.join(LABEL_SCORES)}) or 'pkg.module:fn'"
            )
        fn = load_entry_point(value, what)
        if not callable(fn):
            raise LoadError(f"{what} '{value}' is not callable (got {type(fn).__name__}); expected a function")
        return Entry(fn, value)
    if callable(value):
        return Entry(value, callable_name(value))
    raise SearchError(f"search config: {what} must be a callable or 'pkg.module:fn' (got {type(value).__name__})")


def _data(value: Any) -> Entry:
    """Data from an iterable, a function returning one, or a "pkg.mod:fn" spec, and its name."""
    if value is None:
        return Entry(None, "random")
    if isinstance(value, str):
        from nasprune_cli.builtin import data_source
        from nasprune_cli.loading import load_entry_point

        source = data_source(value)
        if source is None and ":" not in value:
            raise LoadError(f"data '{value}': expected imagefolder:DIR, tensors:FILE or 'pkg.module:fn'")
        return Entry(source if source is not None else load_entry_point(value, "data"), value)
    return Entry(value, callable_name(value) if callable(value) else type(value).__name__)


def _model_spec(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"entry_point": value, "kwargs": {}}
    if not isinstance(value, Mapping) or "entry_point" not in value:
        raise SearchError("search config: model_spec must be {'entry_point': 'pkg.mod:fn', 'kwargs': {...}}")
    return {"entry_point": str(value["entry_point"]), "kwargs": dict(value.get("kwargs") or {})}
