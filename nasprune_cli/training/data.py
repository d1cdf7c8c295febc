"""The training data and the score of a training run, resolved like the search's --data / --score / --collect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.builtin import DataSource, LabelScore
from nasprune_cli.errors import TrainingError
from nasprune_cli.inputs import eval_mode
from nasprune_cli.metrics.score import check_score, default_collect, load_batches
from nasprune_cli.searching.options import search_options

ALL_BATCHES = 10**9


@dataclass(frozen=True)
class TrainingData:
    """The batches (kept in a list), the collect function, the score (None: none) and their names."""

    batches: list[Any]
    collect: Callable[[Any], Any]
    score: Callable[[nn.Module], float] | None
    data_name: str
    score_name: str | None


def training_data(data: Any, dummy_input: Any, score: Any = None, collect: Any = None) -> TrainingData:
    """Resolve --data (required), --score and --collect: names ("top1", "imagefolder:DIR", "pkg.mod:fn") or objects."""
    if data is None:
        raise TrainingError(
            "--data: training needs data batches (a data function 'pkg.module:fn', imagefolder:DIR or tensors:FILE); "
            "for the demo pass --data nasprune_cli.demo:data"
        )
    options = search_options({"data": data, "score": score, "collect": collect})
    source = options.data.value
    if isinstance(source, DataSource):
        source = source.batches(dummy_input)
    batches = load_batches(source, ALL_BATCHES, options.data.name)
    collect_fn = options.collect.value or default_collect
    score_fn = options.score.value
    if isinstance(score_fn, LabelScore):
        score_fn = score_fn.bind(batches, collect_fn)
    name = options.score.name if score_fn is not None else None
    return TrainingData(batches, collect_fn, score_fn, options.data.name, name)


def measure(model: nn.Module, score: Callable[[nn.Module], float] | None, name: str | None) -> float | None:
    """The score of a model in eval mode (None without a score)."""
    if score is None:
        return None
    with eval_mode(model), torch.no_grad():
        return check_score(score(model), name or "score")
