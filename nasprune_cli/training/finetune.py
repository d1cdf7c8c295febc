"""Fine-tune a pruned model: distill it from the original model (KD), train it on the labels (CE), or both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.searching.fingerprint import weights_digest
from nasprune_cli.training.data import TrainingData, measure, training_device
from nasprune_cli.training.loop import Progress, TrainLog, run_training
from nasprune_cli.training.losses import require_labels
from nasprune_cli.training.precision import Precision
from nasprune_cli.training.settings import TrainSettings
from nasprune_cli.training.steps import model_step_fn


@dataclass
class FinetuneResult:
    """The fine-tuned model (eval mode), its score before and after (None without a score) and the training log."""

    model: nn.Module
    score_before: float | None
    score_after: float | None
    log: TrainLog
    settings: TrainSettings

    def summary(self) -> dict[str, Any]:
        """JSON-able figures: scores, steps, epochs, losses, time, settings."""
        return {
            "score_before": self.score_before,
            "score_after": self.score_after,
            "steps": self.log.steps,
            "epochs": self.log.epochs,
            "resumed_from_step": self.log.resumed_from,
            "final_loss": self.log.last_losses(),
            "epoch_scores": self.log.epoch_scores,
            "seconds": round(self.log.seconds, 3),
            "settings": self.settings.to_dict(),
        }


def finetune(
    model: nn.Module,
    teacher: nn.Module | None,
    data: TrainingData,
    settings: TrainSettings,
    on_progress: Progress | None = None,
) -> FinetuneResult:
    """Train a (pruned) model in place on the --loss; `teacher` (the original model, put in eval mode and run without
    gradients) is needed for kd. Both run on the settings' --device; the model is left there."""
    _check_teacher(teacher, settings)
    require_labels(data.batches, settings.loss)
    device = training_device(settings)
    precision = Precision(device, settings.amp)
    torch.manual_seed(settings.seed)
    if teacher is not None:
        teacher.to(device).eval()  # run under no_grad (steps.teacher_outputs): its parameters are untouched
    model.to(device)
    before = measure(model, data.score, data.score_name)
    fp = {
        "task": "finetune",
        "settings": settings.run_fields(),
        "amp": precision.enabled,
        "weights": weights_digest(model),
        "data": data.data_name,
        "batches": len(data.batches),
    }
    step_fn = model_step_fn(model, settings, teacher, data.collect, precision)

    def on_epoch() -> dict[str, float]:
        score = measure(model, data.score, data.score_name)
        return {} if score is None else {"model": score}

    log = run_training(model, data.batches, step_fn, settings, fp, on_progress, device, precision, on_epoch)
    after = measure(model, data.score, data.score_name)
    return FinetuneResult(model, before, after, log, settings)


def _check_teacher(teacher: nn.Module | None, settings: TrainSettings) -> None:
    from nasprune_cli.errors import TrainingError

    if "kd" in settings.loss.split("+") and teacher is None:
        raise TrainingError(f"--loss {settings.loss}: distillation needs the original model as the teacher")
