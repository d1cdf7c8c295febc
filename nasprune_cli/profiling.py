"""profile(): FLOPs / params of the smallest, middle and largest subnets, and whether budgets can be met."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.constraints import Cost, parse_constraints
from nasprune_cli.graph.trace import check_model_output
from nasprune_cli.hparams import Hparam
from nasprune_cli.inputs import call_model, dummy_input_for, eval_mode
from nasprune_cli.metrics.flops import FLOPS_UNIT, count_params, fvcore_flops
from nasprune_cli.space import FrozenLayer, SearchSpace


@dataclass
class ConstraintReport:
    """One budget: its absolute limit, the smallest achievable value and whether it can be met."""

    name: str
    limit: float
    min_value: float
    satisfiable: bool


@dataclass
class ProfileReport:
    """What `nasprune profile` shows."""

    converted: bool
    flops: dict[str, float]  # min / centroid / max
    params: dict[str, float]
    flops_ratio: float  # max / min
    params_ratio: float
    size: int
    num_hparams: int
    frozen: list[FrozenLayer] = field(default_factory=list)
    constraints: list[ConstraintReport] = field(default_factory=list)
    hparams: list[Hparam] = field(default_factory=list)
    flops_unit: str = FLOPS_UNIT

    @property
    def all_satisfiable(self) -> bool:
        """Whether every constraint can be met."""
        return all(c.satisfiable for c in self.constraints)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["all_satisfiable"] = self.all_satisfiable
        return data


def profile(
    model: nn.Module | SearchSpace,
    recipe: Any = None,
    dummy_input: Any = None,
    constraints: Mapping[str, str | float | None] | None = None,
) -> ProfileReport:
    """Profile a search space, or a model converted with the recipe, or a plain model (recipe None)."""
    if recipe is not None and not isinstance(model, SearchSpace):
        from nasprune_cli.conversion import convert

        model = convert(model, recipe, dummy_input)
    if isinstance(model, SearchSpace):
        space = model
        costs = {
            "min": space.cost(space.min()),
            "centroid": space.cost(space.centroid()),
            "max": space.cost(space.max()),
        }
        original = space.original_cost
        extra: dict[str, Any] = {
            "converted": True,
            "size": space.size(),
            "num_hparams": len(space.hparams),
            "frozen": list(space.frozen),
            "hparams": list(space.hparams.values()),
        }
    else:
        if dummy_input is None:
            dummy_input = dummy_input_for(None)
        with eval_mode(model), torch.no_grad():  # outputs that are not tensors cannot be counted: say so first
            check_model_output(model, call_model(model, dummy_input))
        original = Cost(float(fvcore_flops(model, dummy_input)), float(count_params(model)))
        costs = {"min": original, "centroid": original, "max": original}
        extra = {"converted": False, "size": 1, "num_hparams": 0}
    if original.latency is None:  # a latency budget needs a latency table: `nasprune search` measures one
        constraints = {k: v for k, v in (constraints or {}).items() if k != "latency"}
    bounds = parse_constraints(constraints or {}, original)
    reports = [
        ConstraintReport(name, bound, costs["min"].get(name), costs["min"].get(name) <= bound)
        for name, bound in bounds.items()
    ]
    return ProfileReport(
        flops={k: c.flops for k, c in costs.items()},
        params={k: c.params for k, c in costs.items()},
        flops_ratio=costs["max"].flops / max(costs["min"].flops, 1.0),
        params_ratio=costs["max"].params / max(costs["min"].params, 1.0),
        constraints=reports,
        **extra,
    )
