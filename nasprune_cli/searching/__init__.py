"""The search: prepare (space, budgets, data, fingerprint), run a searcher, finish (refit, export, check).

`api.py` is the entry point; `base.py` the searcher template and `binary.py`, `evolve.py`, `random.py` the searchers
(`sensitivity.py`, `floor.py`: the binary searcher's arithmetic); `reconstruct.py` refits the kept weights.
The package is not named `search` so that it cannot shadow the public function `nasprune_cli.search`.
"""

from __future__ import annotations

from nasprune_cli.searching.api import search
from nasprune_cli.searching.options import SearchOptions, config_keys, search_options
from nasprune_cli.searching.result import Figures, LayerRow, Reconstruction, SearchResult

__all__ = [
    "Figures",
    "LayerRow",
    "Reconstruction",
    "SearchOptions",
    "SearchResult",
    "config_keys",
    "search",
    "search_options",
]
