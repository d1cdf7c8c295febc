"""The training loop: seeded batch order per epoch, optimizer with a cosine schedule, a checkpoint per epoch, exact
resume, progress callbacks. What one step computes is the caller's step function (steps.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.training.settings import TrainSettings
from nasprune_cli.training.state import load_train_state, save_train_state
from nasprune_cli.training.steps import StepFn

Progress = Callable[[str, int, int], None]


@dataclass
class TrainLog:
    """What a training run did: steps, epochs, the losses of every step, the wall time and where it resumed."""

    steps: int
    epochs: float
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def last_losses(self, window: int = 10) -> dict[str, float]:
        """Mean of every loss over the last `window` steps."""
        recent = self.losses[-window:]
        keys = recent[0].keys() if recent else ()
        return {k: sum(x[k] for x in recent) / len(recent) for k in keys}


def make_optimizer(params: Iterable[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9, nesterov) at the peak learning rate."""
    params = [p for p in params if p.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.learning_rate, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay
        )
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def cosine_lr(peak: float, step: int, total: int) -> float:
    """Learning rate of a step under a cosine decay from `peak` to 0 over `total` steps."""
    return 0.5 * peak * (1.0 + math.cos(math.pi * step / max(total, 1)))


def epoch_order(seed: int, epoch: int, count: int) -> list[int]:
    """The batch order of an epoch: a permutation that depends only on (seed, epoch)."""
    gen = torch.Generator().manual_seed(hash_seed(seed, epoch))
    return torch.randperm(count, generator=gen).tolist()


def hash_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """The batch with every tensor moved to `device` (None: left where it is)."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def run_training(
    model: nn.Module,
    batches: Sequence[Any],
    step_fn: StepFn,
    settings: TrainSettings,
    fingerprint: dict[str, Any],
    on_progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> TrainLog:
    """Train `model` (in training mode) with `step_fn` for the settings' steps; returns in eval mode."""
    per_epoch = min(len(batches), settings.max_batches or len(batches))
    total = settings.total_steps(per_epoch)
    optimizer = make_optimizer(model.parameters(), settings)
    log = TrainLog(steps=total, epochs=total / per_epoch)
    step = _resume(model, optimizer, settings, fingerprint, log)
    started = time.monotonic()
    if on_progress is not None:
        on_progress("train", step, total)
    order: list[int] = []
    model.train()
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if index == 0 or not order:
            order = epoch_order(settings.seed, epoch, len(batches))[:per_epoch]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(settings.learning_rate, step, total)
        optimizer.zero_grad(set_to_none=True)
        log.losses.append(step_fn(to_device(batches[order[index]], device), step))
        optimizer.step()
        step += 1
        if settings.checkpoint is not None and (step % per_epoch == 0 or step == total):
            save_train_state(settings.checkpoint, fingerprint, step, model, optimizer, log.losses)
        if on_progress is not None:
            on_progress("train", step, total)
    model.eval()
    log.seconds = time.monotonic() - started
    return log


def _resume(
    model: nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings, fp: dict[str, Any], log: TrainLog
) -> int:
    """Load the checkpoint when it exists: weights, optimizer, torch RNG and losses; returns the step to go on from."""
    if settings.checkpoint is None:
        return 0
    state = load_train_state(settings.checkpoint, fp)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    log.losses = list(state["losses"])
    log.resumed_from = int(state["step"])
    return log.resumed_from
