"""After the searcher: refit the kept weights (reconstruct), export, check the budget with fvcore, the result."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from nasprune_cli.constraints import Cost, satisfies
from nasprune_cli.distributed import World
from nasprune_cli.errors import SearchError
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from nasprune_cli.metrics.score import Evaluator
from nasprune_cli.metrics.stages import before_after, stage_costs
from nasprune_cli.searching.options import SearchOptions
from nasprune_cli.searching.prepare import Prepared
from nasprune_cli.searching.result import Figures, Reconstruction, SearchResult, layer_rows
from nasprune_cli.space import SearchSpace


def finish(
    prepared: Prepared, options: SearchOptions, state: dict[str, Any], world: World | None = None
) -> SearchResult:
    """Export the best subnet (refitted when the settings and the data allow it) and check its cost with fvcore.
    Under torchrun every rank calls it (the refit is shared out among them) and every rank gets the same result."""
    space, best = prepared.space, state["best"]
    if world is None or world.is_main:
        _warn_if_unpruned(space, prepared.bounds, best["config"])
    pruned, reconstruction = _export(prepared, options, best, world)
    measured, stages = _verified_cost(pruned, prepared, best["config"])
    original = space.original_cost
    info = prepared.evaluator.info  # the state holds what the searchers maximise; the result, measured values
    score = info.measured(best["score"]) if reconstruction.score is None else reconstruction.score
    return SearchResult(
        model=pruned.cpu(),  # files hold CPU tensors; the space's model stays on the device
        config=dict(best["config"]),
        searcher=str(options.settings.searcher),
        score_name=prepared.evaluator.score_name,
        original=Figures(original.flops, original.params, info.measured(state["original_score"]), original.latency),
        pruned=Figures(measured.flops, measured.params, score, measured.latency),
        evaluations=state["evaluations"],
        constraints=dict(prepared.bounds),
        layers=layer_rows(space, best["config"]),
        reconstruction=reconstruction,
        latency=prepared.latency,
        model_spec=prepared.model_spec,
        recipe=prepared.recipe,
        input=prepared.input_spec,
        state=state,
        score_info=info,
        stages=stages,
        device=str(prepared.device),
    )


def _warn_if_unpruned(space: SearchSpace, bounds: Mapping[str, float], config: Mapping[str, int]) -> None:
    """Warn when the result is the original model because every budget is at or above the original's figure."""
    original = space.original_cost
    if dict(config) != space.max() or any(bound < original.get(name) for name, bound in bounds.items()):
        return
    parts = ", ".join(
        f"{name} <= {bound:.4g}, original {original.get(name):.4g} ({bound / max(original.get(name), 1e-12):.0%})"
        for name, bound in bounds.items()
    )
    warnings.warn(
        f"the budget is at or above the original model ({parts}), so nothing was pruned: the result is the original "
        "model; lower the budget (e.g. --flops 60%) to prune it",
        stacklevel=3,
    )


def _export(
    prepared: Prepared, options: SearchOptions, best: Mapping[str, Any], world: World | None = None
) -> tuple[nn.Module, Reconstruction]:
    """The exported best subnet, refitted unless the settings say no or there is no data to refit on."""
    if not options.settings.reconstruct:
        return prepared.space.export(), Reconstruction(False, "off (reconstruct: false)")
    if not prepared.has_data:
        reason = "no data: refitting weights on random inputs would fit noise"
        return prepared.space.export(), Reconstruction(False, reason)
    return reconstructed_export(prepared.space, prepared.evaluator, best, options.on_progress, world)


def reconstructed_export(
    space: SearchSpace,
    evaluator: Evaluator,
    best: Mapping[str, Any],
    on_progress: Any = None,
    world: World | None = None,
) -> tuple[nn.Module, Reconstruction]:
    """Export the best subnet with its weights refitted on the data, unless that lowers its score (the scores in the
    Reconstruction are measured values; `best["score"]` and the evaluator's are what the searchers maximise)."""
    from nasprune_cli.searching.reconstruct import reconstructed

    before = float(best["score"])
    with reconstructed(space, evaluator.batches, evaluator.inputs, on_progress, world=world) as report:
        # the refit recalibrated the statistics for its weights on these batches, as the evaluator would
        after = evaluator(recalibrate=False, world=world) if report.layers else before
        applied = bool(report.layers) and after >= before
        pruned = space.export() if applied else None
    if pruned is None:
        pruned = space.export()  # the weights and statistics the search found, put back on leaving the block
    errors = [(report.error_before[n], report.error_after[n]) for n in report.layers]
    reason = "refitted"
    measured = evaluator.info.measured
    if not report.layers:
        reason = "no layer needed or passed a refit (see skipped)"
    elif not applied:
        reason = "the refitted weights scored lower; the searched weights are kept"
    return pruned, Reconstruction(
        applied=applied,
        reason=reason,
        score=measured(after if applied else before),
        score_before=measured(before),
        score_after=measured(after),
        layers=len(report.layers),
        skipped=dict(report.skipped),
        mean_error_before=sum(e[0] for e in errors) / max(len(errors), 1),
        mean_error_after=sum(e[1] for e in errors) / max(len(errors), 1),
        seconds=report.seconds,
    )


def _verified_cost(
    pruned: nn.Module, prepared: Prepared, config: Mapping[str, int]
) -> tuple[Cost, dict[str, dict[str, list[float]]]]:
    """The pruned model's FLOPs (fvcore) and params, and its predicted latency; a SearchError if over budget. Also
    the FLOPs and params per stage, before and after (metrics/stages.py)."""
    predicted_latency = prepared.space.cost(config).latency  # a latency table's prediction (None without one)
    by_module = fvcore_flops(pruned, prepared.dummy_input, by_module=True)
    flops = float(by_module[""])
    measured = Cost(flops, float(count_params(pruned)), predicted_latency)
    if not satisfies(measured, prepared.bounds):
        raise SearchError(
            f"the pruned model breaks the budget when fvcore counts it (flops {measured.flops:.4g}, params "
            f"{measured.params:.4g}; limits {prepared.bounds}) although the cost model said it fits; please report "
            "this bug"
        )
    original_stages = prepared.space.original_stages
    stages = before_after(original_stages, stage_costs(pruned, by_module, list(original_stages)))
    return measured, stages
