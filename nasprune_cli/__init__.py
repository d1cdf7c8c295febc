"""nasprune: structured pruning of PyTorch models to a FLOPs / params / latency budget (FastNAS and AutoNAS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "convert",
    "export",
    "keep_freed_memory",
    "load_recipe",
    "measure_latency",
    "profile",
    "register_layer",
    "restore",
    "save",
    "search",
    "SearchResult",
    "SearchSpace",
]

if TYPE_CHECKING:  # what the lazy imports below give, for type checkers and editors
    from nasprune_cli.allocator import keep_freed_memory
    from nasprune_cli.checkpoint import restore
    from nasprune_cli.checkpoint import save_pruned as save
    from nasprune_cli.conversion import convert
    from nasprune_cli.dynamic.custom import register_layer
    from nasprune_cli.metrics.latency import measure_latency
    from nasprune_cli.profiling import profile
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching.api import search
    from nasprune_cli.searching.result import SearchResult
    from nasprune_cli.space import SearchSpace

_LAZY = {
    "keep_freed_memory": ("nasprune_cli.allocator", "keep_freed_memory"),
    "convert": ("nasprune_cli.conversion", "convert"),
    "profile": ("nasprune_cli.profiling", "profile"),
    "register_layer": ("nasprune_cli.dynamic.custom", "register_layer"),
    "load_recipe": ("nasprune_cli.recipe.load", "load_recipe"),
    "SearchSpace": ("nasprune_cli.space", "SearchSpace"),
    "SearchResult": ("nasprune_cli.searching.result", "SearchResult"),
    "search": ("nasprune_cli.searching.api", "search"),
    "restore": ("nasprune_cli.checkpoint", "restore"),
    "save": ("nasprune_cli.checkpoint", "save_pruned"),
    "measure_latency": ("nasprune_cli.metrics.latency", "measure_latency"),
}


def export(space: SearchSpace) -> Any:
    """A plain nn.Module of the space's active subnet (no nasprune code needed at inference)."""
    return space.export()


def __getattr__(name: str) -> Any:
    """Import the public API lazily so `import nasprune_cli` (and `nasprune --help`) stays fast."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'nasprune_cli' has no attribute {name!r}")
