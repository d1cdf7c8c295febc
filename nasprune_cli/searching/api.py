"""`search()`: find the best subnet of a model within FLOPs / params / latency budgets and export it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from nasprune_cli.devices import device_errors, resolve_device
from nasprune_cli.distributed import World, init_world
from nasprune_cli.searching.finish import finish
from nasprune_cli.searching.options import SearchOptions, search_options
from nasprune_cli.searching.prepare import Prepared, prepare
from nasprune_cli.searching.registry import searcher_class
from nasprune_cli.searching.result import SearchResult
from nasprune_cli.space import SearchSpace


def search(
    model: nn.Module | SearchSpace,
    constraints: Mapping[str, str | float | None] | None = None,
    dummy_input: Any = None,
    config: Mapping[str, Any] | SearchOptions | None = None,
) -> SearchResult:
    """Search the best subnet within the constraints and return it exported, with its figures (a SearchResult).

    `model` is a SearchSpace, or an nn.Module converted here (in place) with the recipe. `constraints` default to the
    recipe's `search.constraints`. `config` is a SearchOptions or a mapping of: recipe (Recipe, path or dict),
    model_spec ({entry_point, kwargs}), on_progress(stage, done, total), and any setting of the recipe's `search`
    section (score / data / collect may also be callables, data an iterable of batches); they win over the recipe's.
    `device` (auto / cpu / cuda / cuda:N / mps) is where the model is moved and every evaluation runs; the result's
    model is on the CPU. Under torchrun the ranks share the score evaluations and find what one process finds.
    """
    options = config if isinstance(config, SearchOptions) else search_options(config)
    world = init_world(str(options.settings.device))  # under torchrun: join the other ranks
    device = resolve_device(str(options.settings.device), world.local_rank)
    with device_errors(device):
        prepared = prepare(model, constraints, dummy_input, options)
        searcher = searcher_class(str(options.settings.searcher))(
            prepared.space,
            prepared.evaluator,
            prepared.bounds,
            options.settings,
            checkpoint=options.settings.checkpoint,
            fingerprint=prepared.fingerprint,
            on_progress=options.on_progress,
            world=world,
        )
        state = searcher.search()
        result = _finish_together(world, prepared, options, state)
    if world.size > 1:
        result.parallel = {"world_size": world.size, **searcher.shared.to_dict()}
    return result


def _finish_together(world: World, prepared: Prepared, options: SearchOptions, state: dict[str, Any]) -> SearchResult:
    """Every rank refits (the batches and the fits shared out), exports and checks the best subnet; every rank gets
    rank 0's result, or the first failing rank's error."""
    if world.size == 1:
        return finish(prepared, options, state)
    result, error = None, None
    try:
        result = finish(prepared, options, state, world)
    except Exception as exc:  # noqa: BLE001 - every rank hears of it before anything is written
        error = exc
    world.agree(error, "finishing the search (refit, export, budget check)")
    result = world.broadcast(result)
    assert result is not None  # agree() raised otherwise
    return result
