"""The public API: every name in `nasprune_cli.__all__` is the documented callable, whatever was imported first."""

from __future__ import annotations

import importlib

import nasprune_cli


def test_search_is_the_function_after_every_submodule_is_imported() -> None:
    for module in ("nasprune_cli.searching", "nasprune_cli.searching.api", "nasprune_cli.searching.binary"):
        importlib.import_module(module)
    from nasprune_cli import search

    assert callable(search) and search.__name__ == "search"
    assert search.__module__ == "nasprune_cli.searching.api"


def test_every_public_name_resolves_to_a_callable() -> None:
    for name in nasprune_cli.__all__:
        assert callable(getattr(nasprune_cli, name)), name


def test_every_searcher_name_of_the_schema_has_a_class() -> None:
    from nasprune_cli.recipe.schema import SEARCHERS
    from nasprune_cli.searching.registry import SEARCHER_CLASSES

    assert set(SEARCHER_CLASSES) == set(SEARCHERS) == {"binary", "evolve", "random"}
    assert all(cls.name == name for name, cls in SEARCHER_CLASSES.items())
