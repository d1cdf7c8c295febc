"""Before the searcher runs: the search space, the budgets, the latency table, the data and the fingerprint."""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.builtin import DataSource, LabelScore
from nasprune_cli.constraints import parse_constraints
from nasprune_cli.devices import resolve_device
from nasprune_cli.distributed import current_world
from nasprune_cli.errors import SearchError
from nasprune_cli.fileio import digest
from nasprune_cli.importance import needs_inputs
from nasprune_cli.inputs import dummy_input_for, input_spec, inputs_as_given, move_to, random_batches, token_bound
from nasprune_cli.metrics.latency import LATENCY_UNIT, latency_model_for
from nasprune_cli.metrics.score import Evaluator, load_batches
from nasprune_cli.recipe.load import recipe_to_dict
from nasprune_cli.searching.base import check_bounds
from nasprune_cli.searching.fingerprint import fingerprint, weights_digest
from nasprune_cli.searching.options import SearchOptions
from nasprune_cli.searching.result import LatencyInfo
from nasprune_cli.space import SearchSpace

NO_DATA_WARNING = (
    "no --data given: BatchNorm statistics are recalibrated, and subnets scored, on random inputs shaped like the "
    "dummy input; a subnet ranked on noise can rank differently on real inputs, so pass --data (a few training "
    "batches) for a meaningful search"
)


@dataclass
class Prepared:
    """A search ready to run: the converted space with its best-first channel order, and what the searcher needs."""

    space: SearchSpace
    dummy_input: Any  # on the search's device
    bounds: dict[str, float]
    evaluator: Evaluator
    has_data: bool  # False: the batches are random inputs
    latency: LatencyInfo | None
    model_spec: dict[str, Any]
    input_spec: dict[str, Any]
    recipe: dict[str, Any] | None
    fingerprint: dict[str, Any]
    device: torch.device = torch.device("cpu")  # where the model, the batches and every evaluation are


def prepare(
    model: nn.Module | SearchSpace,
    constraints: Mapping[str, str | float | None] | None,
    dummy_input: Any,
    options: SearchOptions,
) -> Prepared:
    """Convert the model (unless it is a space), move it to the device, set the budgets, load the data and
    fingerprint the search."""
    device = resolve_device(str(options.settings.device), current_world().local_rank)
    space, dummy_input = _space(model, dummy_input, options)
    dummy_input = _to_device(space, dummy_input, options, device)
    constraints = dict(constraints or options.settings.constraints)
    latency = _attach_latency(space, constraints, options)
    bounds = parse_constraints(constraints, space.original_cost)
    check_bounds(bounds, space)  # before the data is loaded or any subnet is scored
    evaluator = _evaluator(space, dummy_input, options, device)
    if needs_inputs(options.settings.importance) and not space.order_locked:  # measured on the search's batches
        space.sort_parameters(options.settings.importance, [evaluator.inputs(b) for b in evaluator.batches])
    model_spec = options.model_spec or _class_spec(space.model)
    spec = input_spec(dummy_input, options.recipe.input.high if options.recipe is not None else None)
    recipe = recipe_to_dict(options.recipe) if options.recipe is not None else None
    fp = fingerprint(
        model=model_spec,
        recipe=recipe,
        settings=options.settings,
        bounds=bounds,
        input_spec=spec,
        hparams={n: list(hp.choices) for n, hp in space.hparams.items()},
        score=options.score.name if options.score.value is not None else "default",
        data=options.data.name,
        collect=options.collect.name,
        weights=weights_digest(space.model),
        latency=_digest_latency(space),
    )
    has_data = options.data.value is not None
    return Prepared(space, dummy_input, bounds, evaluator, has_data, latency, model_spec, spec, recipe, fp, device)


def _token_bound(space: SearchSpace, options: SearchOptions) -> int | None:
    """The bound of the random batches' token ids: the recipe's input.high, else the model's config.vocab_size."""
    return token_bound(space.model, options.recipe.input.high if options.recipe is not None else None)


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and numpy's global random generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy comes with torch in practice
        pass


def _space(model: nn.Module | SearchSpace, dummy_input: Any, options: SearchOptions) -> tuple[SearchSpace, Any]:
    """The search space of a model (converted in place with the recipe) and the dummy input it was traced on."""
    if isinstance(model, SearchSpace):
        return model, model.dummy_input if dummy_input is None else dummy_input
    if not isinstance(model, nn.Module):
        raise SearchError(f"search: expected an nn.Module or a SearchSpace (got {type(model).__name__})")
    from nasprune_cli.conversion import convert

    dummy_input = dummy_input_for(options.recipe, model) if dummy_input is None else dummy_input
    return convert(model, options.recipe, dummy_input), dummy_input


def _to_device(space: SearchSpace, dummy_input: Any, options: SearchOptions, device: torch.device) -> Any:
    """Order the channels best-first (on the CPU; an order from activations comes once the batches are loaded),
    then move the model and the dummy inputs to the device."""
    seed_everything(options.settings.seed)
    if not space.order_locked and not needs_inputs(options.settings.importance):  # a trained space keeps its order
        space.sort_parameters(options.settings.importance)
    space.model.to(device)
    space.dummy_input = move_to(space.dummy_input, device)
    return move_to(dummy_input, device)


def _attach_latency(space: SearchSpace, constraints: Mapping[str, Any], options: SearchOptions) -> LatencyInfo | None:
    """Attach the latency table a `latency` constraint needs (the caller's, read from its file, or measured)."""
    if constraints.get("latency") is None:
        space.attach_latency(None)
        return None
    table, batch = options.settings.latency_table, options.settings.latency_batch
    attached = space.latency_model
    if table is None and attached is not None and batch in (None, attached.meta["batch"]):  # the caller's table
        latency_model, measured_now, batch = attached, False, attached.meta["batch"]
    else:
        batch = batch or 1
        latency_model, measured_now = latency_model_for(space, table, int(batch), options.on_progress)
    space.attach_latency(latency_model)
    return LatencyInfo(table, measured_now, int(batch), latency_model.meta["threads"], LATENCY_UNIT)


def _evaluator(space: SearchSpace, dummy_input: Any, options: SearchOptions, device: torch.device) -> Evaluator:
    """The scorer of the active subnet, on the data batches (or random ones), with the original's reference kept."""
    settings = options.settings
    collect = options.collect.value
    if options.data.value is None:
        warnings.warn(NO_DATA_WARNING, stacklevel=4)
        bound = _token_bound(space, options)
        batches = random_batches(move_to(dummy_input, "cpu"), settings.max_batches, settings.seed, bound)
        if collect is None:  # a random batch is the model's whole input (a tuple: all its positional inputs)
            collect = inputs_as_given
    else:
        data = options.data.value
        if isinstance(data, DataSource):  # imagefolder:DIR / tensors:FILE, made for the dummy input's shape
            data = data.batches(dummy_input)
        batches = load_batches(data, settings.max_batches, options.data.name)
    seed_everything(settings.seed)
    batches = [move_to(batch, device) for batch in batches]
    space.select(space.max())
    score_fn = options.score.value
    on_score = getattr(options.on_progress, "on_score", None)
    evaluator = Evaluator(space.model, batches, collect, None, options.score.name, options.collect.name, on_score)
    if isinstance(score_fn, LabelScore):  # top1 / top5 / loss on the same batches
        score_fn = score_fn.bind(evaluator.batches, evaluator.inputs, has_data=options.data.value is not None)
    evaluator.set_score(score_fn)
    evaluator.prepare(current_world())  # under torchrun the ranks share its batches
    return evaluator


def _digest_latency(space: SearchSpace) -> str | None:
    return digest(space.latency_model.to_dict()) if space.latency_model is not None else None


def _class_spec(model: nn.Module) -> dict[str, Any]:
    return {"entry_point": f"{type(model).__module__}:{type(model).__qualname__}", "kwargs": {}}
