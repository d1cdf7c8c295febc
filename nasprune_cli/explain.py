"""explain(): which group a layer belongs to, what it is coupled with, and why it is prunable or frozen."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from nasprune_cli.dynamic.base import type_label
from nasprune_cli.errors import NasPruneError
from nasprune_cli.space import SearchSpace


@dataclass
class GroupExplanation:
    """One group of coupled channels a layer creates or reads."""

    group: str  # the hparam name of the group
    role: str  # "creates" (the layer's outputs are these channels) or "reads"
    status: str  # "prunable" | "frozen" | "fixed"
    reason: str
    channels: int
    choices: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # layers whose outputs are these channels
    coupled: list[str] = field(default_factory=list)  # every layer side that reads them


@dataclass
class LayerExplanation:
    """Everything `nasprune profile --explain LAYER` shows."""

    layer: str
    layer_type: str
    groups: list[GroupExplanation]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def explain(space: SearchSpace, layer: str) -> LayerExplanation:
    """Explain the channel groups of one layer (by its qualified module name)."""
    modules = dict(space.model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; list the layers with `nasprune convert`"
        raise NasPruneError(f"--explain: the model has no layer named '{layer}'{hint}")
    explanations = []
    for group in space.grouping.groups:
        creates = layer in group.sources
        reads = any(m.rsplit(".", 1)[0] == layer for m in group.members)
        if not (creates or reads):
            continue
        hparam = space.hparams.get(group.name)
        if group.frozen_reason is not None:
            status, reason = "frozen", group.frozen_reason
        elif hparam is None:
            status = "fixed"
            reason = f"no smaller width: the recipe's ratios and divisor give only {group.size} for these channels"
        else:
            status, reason = "prunable", "the tracer proved every layer reading these channels can be sliced"
            if group.unit > 1:
                reason += f"; attention reads them, so they go in whole heads of {group.unit} channels"
            if group.blocks > 1 and group.cut_by:
                reason += f"; {group.cut_by} cuts them into {group.blocks} equal parts: the same count is kept in each"
            elif group.blocks > 1:
                reason += f"; a grouped convolution reads them: the same count is kept in each of {group.blocks} groups"
        explanations.append(
            GroupExplanation(
                group=group.name,
                role="creates" if creates else "reads",
                status=status,
                reason=reason,
                channels=group.size,
                choices=list(hparam.choices) if hparam else [group.size],
                sources=list(group.sources),
                coupled=list(group.members),
            )
        )
    module = modules[layer]
    return LayerExplanation(layer, type_label(getattr(module, "original_cls", type(module))), explanations)
