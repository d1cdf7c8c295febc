"""Searchers: FastNAS binary search, AutoNAS evolutionary search and random search (one template, one state)."""

from __future__ import annotations

import importlib

from nasprune_cli.searchers.state import SEARCHERS, SearchSettings

_CLASSES = {
    "binary": ("nasprune_cli.searchers.binary", "BinarySearcher"),
    "evolve": ("nasprune_cli.searchers.evolve", "EvolveSearcher"),
    "random": ("nasprune_cli.searchers.random", "RandomSearcher"),
}

__all__ = ["SEARCHERS", "SearchSettings", "searcher_class"]


def searcher_class(name: str) -> type:
    """The searcher class registered under a name ('binary', 'evolve', 'random')."""
    from nasprune_cli.errors import SearchError

    if name not in _CLASSES:
        raise SearchError(f"unknown searcher {name!r} (expected one of {', '.join(SEARCHERS)})")
    module, attr = _CLASSES[name]
    return getattr(importlib.import_module(module), attr)
