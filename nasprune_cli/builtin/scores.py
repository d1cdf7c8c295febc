"""Built-in --score metrics on labelled data batches: `top1`, `top5` (accuracy) and `loss` (cross-entropy).

They are computed on the same batches as BatchNorm recalibration (the first --max-batches of --data), which
must be `(inputs, labels)` with integer class labels; the model must output logits of shape [N, classes].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.errors import SearchError
from nasprune_cli.inputs import call_model


@dataclass(frozen=True)
class LabelScore:
    """A metric on labelled batches; `bind(batches, inputs)` makes the score function fn(model) -> float."""

    metric: str  # one of LABEL_SCORES
    name: str
    higher_is_better: bool
    percent: bool

    def bind(self, batches: Sequence[Any], inputs: Callable[[Any], Any], has_data: bool = True) -> BoundLabelScore:
        """The score function on these batches (`inputs` turns a batch into model inputs); a SearchError naming
        --score when a batch carries no labels."""
        return BoundLabelScore(self, [(inputs(b), _labels(self.metric, b, i, has_data)) for i, b in enumerate(batches)])


LABEL_SCORES = {
    "top1": LabelScore("top1", "top-1 accuracy", higher_is_better=True, percent=True),
    "top5": LabelScore("top5", "top-5 accuracy", higher_is_better=True, percent=True),
    "loss": LabelScore("loss", "cross-entropy loss", higher_is_better=False, percent=False),
}


def label_score(spec: str) -> LabelScore | None:
    """The built-in metric a --score value names ("top1", "top5", "loss"), None for another value."""
    return LABEL_SCORES.get(spec)


def _labels(metric: str, batch: Any, index: int, has_data: bool) -> torch.Tensor:
    hint = (
        f"--score {metric} needs labelled batches: pass --data imagefolder:DIR, --data tensors:FILE with labels, or a "
        "data function yielding (inputs, labels) batches; or score with --score pkg.module:fn"
    )
    if not has_data:
        raise SearchError(f"--score {metric}: no --data given, and random inputs carry no labels; {hint}")
    labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        found = type(batch).__name__ if labels is None else f"{type(labels).__name__} {_shape(labels)} as labels"
        raise SearchError(
            f"--score {metric}: data batch {index} carries no labels (got {found}; expected (inputs, labels) with "
            f"labels a 1-D integer tensor); {hint}"
        )
    return labels.long()


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else ""


class BoundLabelScore:
    """fn(model) -> float for a built-in metric, over fixed (inputs, labels) pairs; carries the ScoreInfo attributes."""

    def __init__(self, score: LabelScore, pairs: list[tuple[Any, torch.Tensor]]) -> None:
        self.metric = score.metric
        self.name = score.name
        self.higher_is_better = score.higher_is_better
        self.percent = score.percent
        self.pairs = pairs

    def __call__(self, model: nn.Module) -> float:
        total, count = 0.0, 0
        for i, (inputs, labels) in enumerate(self.pairs):
            logits = call_model(model, inputs)
            _check_logits(self.metric, logits, labels, i)
            if self.metric == "loss":
                total += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            else:
                k = 1 if self.metric == "top1" else 5
                top = logits.topk(k, dim=1).indices
                total += float((top == labels[:, None]).any(dim=1).sum())
            count += len(labels)
        return total / count


def _check_logits(metric: str, logits: Any, labels: torch.Tensor, index: int) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(labels):
        found = _shape(logits) or type(logits).__name__
        raise SearchError(
            f"--score {metric}: on data batch {index} the model returned {found}, expected logits of shape "
            f"[{len(labels)}, classes]; score a model with another output with --score pkg.module:fn"
        )
    classes = logits.shape[1]
    if metric == "top5" and classes < 5:
        raise SearchError(f"--score top5: the model has {classes} classes (top5 needs at least 5); use --score top1")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise SearchError(
            f"--score {metric}: data batch {index} has label {bad}, but the model "
            f"outputs {classes} classes (0..{classes - 1}); the data's class indices must be the model's"
        )
