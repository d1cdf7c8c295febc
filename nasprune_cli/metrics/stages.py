"""FLOPs and params per stage of a model: the report's "where did the cost go" bars.

A stage is a top-level child of the model (`layer1`, `fc`); when the model has fewer than `MIN_STAGES` of them that
hold parameters (torchvision's `features` / `classifier`), a stage is a child of those children instead
(`features.3`). FLOPs come from fvcore's per-module counts (the same count as the totals); what no stage holds
(functional ops in the model's own forward, parameters registered on the root) is the stage `OTHER`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

MIN_STAGES = 4
OTHER = "(other)"


def stage_names(model: nn.Module) -> list[str]:
    """The stages of a model, in module order (see the module docstring)."""
    top = [(name, child) for name, child in model.named_children() if _has_params(child)]
    if len(top) >= MIN_STAGES:
        return [name for name, _ in top]
    names = []
    for name, child in top:
        inner = [f"{name}.{sub}" for sub, grand in child.named_children() if _has_params(grand)]
        names.extend(inner if len(inner) >= 2 else [name])
    return names


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def stage_costs(
    model: nn.Module, flops_by_module: Mapping[str, float], stages: list[str]
) -> dict[str, dict[str, float]]:
    """{stage: {"flops", "params"}} of a model, plus `OTHER` for what no stage holds (when it is not zero)."""
    modules = dict(model.named_modules())
    costs: dict[str, dict[str, float]] = {}
    for stage in (name for name in stages if name != OTHER):
        module = modules.get(stage)
        params = float(sum(p.numel() for p in module.parameters())) if module is not None else 0.0
        costs[stage] = {"flops": float(flops_by_module.get(stage, 0.0)), "params": params}
    total_params = float(sum(p.numel() for p in model.parameters()))
    other = {
        "flops": float(flops_by_module.get("", 0.0)) - sum(c["flops"] for c in costs.values()),
        "params": total_params - sum(c["params"] for c in costs.values()),
    }
    if other["flops"] > 0.5 or other["params"] > 0.5:
        costs[OTHER] = other
    return costs


def before_after(
    original: Mapping[str, Mapping[str, float]], pruned: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, list[float]]]:
    """{stage: {"flops": [before, after], "params": [before, after]}}; a stage the export dropped counts 0."""
    names = list(original) + [name for name in pruned if name not in original]
    zero = {"flops": 0.0, "params": 0.0}
    return {
        name: {
            key: [float(original.get(name, zero)[key]), float(pruned.get(name, zero)[key])]
            for key in ("flops", "params")
        }
        for name in names
    }
