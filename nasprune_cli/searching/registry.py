"""The searchers by name: FastNAS binary search, AutoNAS evolutionary search and random search."""

from __future__ import annotations

from nasprune_cli.errors import SearchError
from nasprune_cli.recipe.schema import SEARCHERS
from nasprune_cli.searching.base import Searcher
from nasprune_cli.searching.binary import BinarySearcher
from nasprune_cli.searching.evolve import EvolveSearcher
from nasprune_cli.searching.random import RandomSearcher

SEARCHER_CLASSES: dict[str, type[Searcher]] = {
    cls.name: cls for cls in (BinarySearcher, EvolveSearcher, RandomSearcher)
}


def searcher_class(name: str) -> type[Searcher]:
    """The searcher class registered under a name ('binary', 'evolve', 'random')."""
    if name not in SEARCHER_CLASSES:
        raise SearchError(f"unknown searcher {name!r} (expected one of {', '.join(SEARCHERS)})")
    return SEARCHER_CLASSES[name]
