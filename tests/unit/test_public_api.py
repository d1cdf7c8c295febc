"""The public API: every name in `nasprune_cli.__all__` is the documented callable, whatever was imported first."""

from __future__ import annotations

import importlib

import nasprune_cli


def test_search_is_the_function_after_every_submodule_is_imported() -> None:
    for module in ("nasprune_cli.api_search", "nasprune_cli.searchers", "nasprune_cli.searchers.binary"):
        importlib.import_module(module)
    from nasprune_cli import search

    assert callable(search) and search.__name__ == "search"
    assert search.__module__ == "nasprune_cli.api_search"


def test_every_public_name_resolves_to_a_callable() -> None:
    for name in nasprune_cli.__all__:
        assert callable(getattr(nasprune_cli, name)), name
