"""Training losses: the task loss on labels and the distillation of a student's outputs from a teacher's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nasprune_cli.errors import TrainingError
from nasprune_cli.inputs import tensors_in

LABEL_HINT = (
    "pass --data yielding (inputs, labels) batches with labels a 1-D integer tensor (imagefolder:DIR, tensors:FILE "
    "with labels, or a data function), or train with --loss kd (no labels needed)"
)


def batch_labels(batch: Any) -> torch.Tensor | None:
    """The class labels of an (inputs, labels) batch: a 1-D integer tensor as its second element, else None."""
    labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
    if isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point():
        return labels.long()
    return None


def is_logits(out: Any) -> bool:
    """Whether a model output looks like classifier logits: one float tensor of shape [batch, classes > 1]."""
    return isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == 2 and out.shape[1] > 1


def task_loss(out: Any, labels: torch.Tensor | None, loss: str = "ce") -> torch.Tensor:
    """Cross-entropy of logits against class labels; a TrainingError naming --loss when either is missing."""
    if labels is None:
        raise TrainingError(f"--loss {loss}: the data batches carry no labels; {LABEL_HINT}")
    if not is_logits(out) or out.shape[0] != labels.shape[0]:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TrainingError(
            f"--loss {loss}: the model returned {shape}, expected logits of shape [{labels.shape[0]}, classes]; "
            "train a model with another output with --loss kd"
        )
    return F.cross_entropy(out.float(), labels)


def distill_loss(student: Any, teacher: Any, temperature: float = 4.0) -> torch.Tensor:
    """KL divergence of softened logits (scaled by T^2) for classifier outputs, else the mean squared error of every
    output tensor; the teacher is detached. Zero when the student's outputs equal the teacher's."""
    if is_logits(student) and is_logits(teacher):
        t = temperature
        log_p = F.log_softmax(teacher.detach().float() / t, dim=1)
        log_q = F.log_softmax(student.float() / t, dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)
    a, b = tensors_in(student), tensors_in(teacher)
    pairs = [(s, te) for s, te in zip(a, b, strict=False) if s.is_floating_point() and s.shape == te.shape]
    if len(a) != len(b) or not pairs:
        raise TrainingError(
            f"--loss kd: the student's outputs ({len(a)} tensors) do not match the teacher's ({len(b)}); distill a "
            "model whose outputs keep their shapes, or use --loss ce"
        )
    return sum(F.mse_loss(s.float(), te.detach().float()) for s, te in pairs) / len(pairs)


def combined_loss(
    out: Any, labels: torch.Tensor | None, teacher_out: Any, loss: str, temperature: float
) -> torch.Tensor:
    """The loss a --loss value names: ce (labels), kd (teacher outputs) or ce+kd (their sum)."""
    parts = loss.split("+")
    terms = [task_loss(out, labels, loss)] if "ce" in parts else []
    if "kd" in parts:
        terms.append(distill_loss(out, teacher_out, temperature))
    return sum(terms[1:], terms[0])


def require_labels(batches: list[Any], loss: str) -> None:
    """Before training: a --loss with ce needs labels in every batch (a TrainingError naming the first without)."""
    if "ce" not in loss.split("+"):
        return
    for i, batch in enumerate(batches):
        if batch_labels(batch) is None:
            found = type(batch).__name__
            if isinstance(batch, (tuple, list)) and len(batch) >= 2:
                found = f"{found} whose second element is {type(batch[1]).__name__}"
            raise TrainingError(f"--loss {loss}: data batch {i} carries no labels (got {found}); {LABEL_HINT}")
