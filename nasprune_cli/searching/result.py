"""What a search returns: the pruned model, its subnet, the original and pruned figures, the layers it changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from nasprune_cli.metrics.flops import FLOPS_UNIT
from nasprune_cli.metrics.score import ScoreInfo


@dataclass(frozen=True)
class Figures:
    """FLOPs (fvcore), params, score and predicted latency (ms; None without a latency table) of one model."""

    flops: float
    params: float
    score: float | None
    latency: float | None = None


@dataclass(frozen=True)
class LayerRow:
    """One layer under the found subnet: its hparam, the original and the kept width (or depth / kernel size)."""

    layer: str
    hparam: str
    kind: str
    original: int
    kept: int


@dataclass(frozen=True)
class LatencyInfo:
    """Where the latency table of a `latency` constraint came from."""

    table: str | None  # its file; None: measured for this run only
    measured: bool  # measured now (else read from `table` or attached by the caller)
    batch: int
    threads: int
    unit: str


@dataclass
class Reconstruction:
    """Whether the kept weights were refitted after the search, and what that did."""

    applied: bool
    reason: str
    score: float | None = None  # the pruned model's score (refitted or not), when the refit ran
    score_before: float | None = None
    score_after: float | None = None
    layers: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    mean_error_before: float | None = None
    mean_error_after: float | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values: only `applied` and `reason` when the refit did not run."""
        if self.layers is None:
            return {"applied": self.applied, "reason": self.reason}
        return asdict(self)


@dataclass
class SearchResult:
    """The exported pruned model and everything `nasprune search` reports and saves about it."""

    model: nn.Module  # a plain nn.Module: no nasprune code needed to run it
    config: dict[str, int]  # the subnet: hparam name -> chosen value
    searcher: str
    score_name: str
    original: Figures
    pruned: Figures
    evaluations: int
    constraints: dict[str, float]  # the budgets in absolute units
    layers: list[LayerRow]
    reconstruction: Reconstruction
    latency: LatencyInfo | None
    model_spec: dict[str, Any]  # {"entry_point", "kwargs"}: how `restore` builds the original model again
    recipe: dict[str, Any] | None
    input: dict[str, Any]  # {"shape", "dtype"} of the dummy input
    state: dict[str, Any]  # the searcher's state (history, sensitivity map, ...), as in its checkpoint
    score_info: ScoreInfo | None = None  # what the score measures; None: named by score_name only, higher is better
    stages: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # stage -> flops/params [before, after]

    def score_label(self) -> str:
        """What the score measures and its values, e.g. 'val accuracy 99.20% -> 98.90%'."""
        info = self._info()
        return f"{info.label} {info.format(self.original.score)} -> {info.format(self.pruned.score)}"

    def _info(self) -> ScoreInfo:
        return self.score_info if self.score_info is not None else ScoreInfo(self.score_name, self.score_name)

    def metrics(self) -> dict[str, Any]:
        """The original and pruned figures, their ratios and the number of score evaluations, as plain values."""
        info = self._info()
        metrics: dict[str, Any] = {
            "score_name": self.score_name,  # the score function ('pkg.module:fn', a built-in name) or the default's
            "score_label": self.score_label(),
            "score_measures": info.label,
            "score_higher_is_better": info.higher_is_better,
            "score_percent": info.percent,
            "original": {"flops": self.original.flops, "params": self.original.params, "score": self.original.score},
            "pruned": {"flops": self.pruned.flops, "params": self.pruned.params, "score": self.pruned.score},
            "flops_ratio": self.pruned.flops / max(self.original.flops, 1.0),
            "params_ratio": self.pruned.params / max(self.original.params, 1.0),
        }
        if self.original.latency is not None and self.pruned.latency is not None:
            metrics["latency_ms"] = {"original": self.original.latency, "pruned": self.pruned.latency}
            metrics["latency_ratio"] = self.pruned.latency / max(self.original.latency, 1e-12)
        metrics["evaluations"] = self.evaluations
        metrics["flops_unit"] = FLOPS_UNIT
        return metrics

    def summary(self) -> dict[str, Any]:
        """Everything as plain JSON-able values: what `nasprune search --json` prints."""
        return {
            "searcher": self.searcher,
            "model": dict(self.model_spec),
            "recipe": self.recipe,
            "input": dict(self.input),
            "constraints": dict(self.constraints),
            "config": dict(self.config),
            "metrics": self.metrics(),
            "latency": asdict(self.latency) if self.latency is not None else None,
            "reconstruction": self.reconstruction.to_dict(),
            "layers": [asdict(row) for row in self.layers],
            "stages": {name: {k: list(v) for k, v in costs.items()} for name, costs in self.stages.items()},
        }


def layer_rows(space: Any, config: Mapping[str, int]) -> list[LayerRow]:
    """Per layer: original and kept channels (width hparams), or depth / kernel size, under a subnet config."""
    rows = []
    for name, hp in space.hparams.items():
        kept = int(config.get(name, hp.original))
        if hp.kind == "width":
            layers = [m.rsplit(".", 1)[0] for m in hp.members if m.rsplit(".", 1)[-1] == "out"] or [name]
        else:
            layers = [name.rsplit(".", 1)[0]]
        rows.extend(LayerRow(layer, name, hp.kind, hp.original, kept) for layer in layers)
    return rows
