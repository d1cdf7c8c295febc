"""nasprune: structured pruning of PyTorch models to a FLOPs / params / latency budget (FastNAS and AutoNAS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "convert",
    "export",
    "load_recipe",
    "measure_latency",
    "profile",
    "restore",
    "save",
    "search",
    "SearchSpace",
]

if TYPE_CHECKING:
    from nasprune_cli.space import SearchSpace

_LAZY = {
    "convert": ("nasprune_cli.conversion", "convert"),
    "profile": ("nasprune_cli.profiling", "profile"),
    "load_recipe": ("nasprune_cli.recipe.load", "load_recipe"),
    "SearchSpace": ("nasprune_cli.space", "SearchSpace"),
    "search": ("nasprune_cli.api_search", "search"),
    "restore": ("nasprune_cli.api_search", "restore"),
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
