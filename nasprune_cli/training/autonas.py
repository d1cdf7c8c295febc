"""Train a search space for AutoNAS: every subnet learns at once (sandwich rule or random sampling)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.devices import model_device
from nasprune_cli.inputs import move_to
from nasprune_cli.metrics.score import recalibrate_bn
from nasprune_cli.searching.fingerprint import weights_digest
from nasprune_cli.space import SearchSpace
from nasprune_cli.training.data import TrainingData, measure, training_device
from nasprune_cli.training.loop import Progress, TrainLog, run_training
from nasprune_cli.training.losses import require_labels
from nasprune_cli.training.precision import Precision
from nasprune_cli.training.settings import TrainSettings
from nasprune_cli.training.steps import space_step_fn

RECALIBRATION_BATCHES = 8
ACTIVATION_BATCHES = 8  # training batches the "activation" importance is measured on


@dataclass
class SpaceTrainResult:
    """The trained space (largest subnet active), the largest / smallest subnets' scores before and after, the log."""

    space: SearchSpace
    scores_before: dict[str, float | None]
    scores_after: dict[str, float | None]
    log: TrainLog
    settings: TrainSettings

    def summary(self) -> dict[str, Any]:
        """JSON-able figures: subnet scores, steps, epochs, losses, time, settings."""
        return {
            "scores_before": self.scores_before,
            "scores_after": self.scores_after,
            "steps": self.log.steps,
            "epochs": self.log.epochs,
            "resumed_from_step": self.log.resumed_from,
            "final_loss": self.log.last_losses(),
            "epoch_scores": self.log.epoch_scores,
            "seconds": round(self.log.seconds, 3),
            "settings": self.settings.to_dict(),
        }


def train_space(
    space: SearchSpace,
    data: TrainingData,
    settings: TrainSettings,
    on_progress: Progress | None = None,
    importance: str = "magnitude",
) -> SpaceTrainResult:
    """Sort the channels by importance (unless the order is locked), train every subnet with --sampling, lock the
    order. With --loss kd or ce+kd the largest subnet distils from a frozen copy of the model as it was. The model
    trains on the settings' --device and is left there."""
    require_labels(data.batches, settings.loss)
    device = training_device(settings)
    precision = Precision(device, settings.amp)
    torch.manual_seed(settings.seed)
    if not space.order_locked:  # "activation": measured on the first training batches
        space.sort_parameters(importance, [data.collect(b) for b in data.batches[:ACTIVATION_BATCHES]])
    space.model.to(device)
    space.dummy_input = move_to(space.dummy_input, device)
    teacher = _teacher(space, settings)
    before = subnet_scores(space, data)
    fp = {
        "task": "train-space",
        "settings": settings.run_fields(),
        "amp": precision.enabled,
        "hparams": {n: list(hp.choices) for n, hp in space.hparams.items()},
        "weights": weights_digest(space.model),
        "data": data.data_name,
        "batches": len(data.batches),
    }
    step_fn = space_step_fn(space, settings, teacher, data.collect, precision)

    def on_epoch() -> dict[str, float]:
        return {k: v for k, v in subnet_scores(space, data).items() if v is not None}

    log = run_training(space.model, data.batches, step_fn, settings, fp, on_progress, device, precision, on_epoch)
    space.select(space.max())
    space.order_locked = True  # the search keeps the order the subnets were trained in
    after = subnet_scores(space, data)
    return SpaceTrainResult(space, before, after, log, settings)


def subnet_scores(space: SearchSpace, data: TrainingData) -> dict[str, float | None]:
    """Score of the largest and the smallest subnet, BatchNorm recalibrated on the first batches as the search does;
    the model's weights, statistics and active subnet are left as they were."""
    if data.score is None:
        return {"largest": None, "smallest": None}
    active, saved = space.config(), copy.deepcopy(space.model.state_dict())
    scores: dict[str, float | None] = {}
    try:
        for name, config in (("largest", space.max()), ("smallest", space.min())):
            space.select(config)
            first = [move_to(b, model_device(space.model)) for b in data.batches[:RECALIBRATION_BATCHES]]
            recalibrate_bn(space.model, first, data.collect)
            scores[name] = measure(space.model, data.score, data.score_name)
    finally:
        space.model.load_state_dict(saved)
        space.select(active)
    return scores


def _teacher(space: SearchSpace, settings: TrainSettings) -> nn.Module | None:
    """A frozen plain copy of the largest subnet (the model as it was), the teacher of --loss kd / ce+kd."""
    if "kd" not in settings.loss.split("+"):
        return None
    active = space.config()
    space.select(space.max())
    teacher = space.export().eval().requires_grad_(False)
    space.select(active)
    return teacher
