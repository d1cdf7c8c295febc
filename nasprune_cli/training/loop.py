"""The training loop: seeded batch order per epoch, optimizer with a cosine schedule, a checkpoint every N steps (the
position inside the epoch included), exact resume, data parallel under torchrun, progress callbacks. What one step
computes is the caller's step function (steps.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.devices import device_errors, model_device
from nasprune_cli.distributed import World, current_world
from nasprune_cli.inputs import move_to
from nasprune_cli.training.parallel import combine_step, reduce_gradients, shard_batch
from nasprune_cli.training.precision import Precision
from nasprune_cli.training.settings import TrainSettings
from nasprune_cli.training.state import TrainState, load_train_state, restore_rng, save_train_state
from nasprune_cli.training.steps import StepFn

Progress = Callable[[str, int, int], None]  # (stage, done, total); an `on_loss(losses)` method on it gets every step's
# losses, an `on_epoch(epoch, epochs, scores)` method every epoch's scores
EpochScore = Callable[[], dict[str, float]]  # the scores measured at the end of an epoch ({} when there is no score)


@dataclass
class TrainLog:
    """What a training run did: steps, epochs, the losses of every step, the wall time and where it resumed."""

    steps: int
    epochs: float
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0
    epoch_scores: list[dict[str, float]] = field(default_factory=list)  # {"epoch": n, "step": s, <score>: value}

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


def run_training(
    model: nn.Module,
    batches: Sequence[Any],
    step_fn: StepFn,
    settings: TrainSettings,
    fingerprint: dict[str, Any],
    on_progress: Progress | None = None,
    device: torch.device | str | None = None,
    precision: Precision | None = None,
    on_epoch: EpochScore | None = None,
) -> TrainLog:
    """Train `model` (in training mode, on `device`) with `step_fn` for the settings' steps; returns in eval mode.

    Under torchrun every rank takes its share of each batch and the gradients are all-reduced (parallel.py); rank 0
    writes the checkpoint (every --checkpoint-every steps, else at every epoch's end) and reports progress. At the end
    of every epoch (and of the run) every rank calls `on_epoch` (the score), before the checkpoint is written."""
    world = current_world()
    device = torch.device(device) if device is not None else model_device(model)
    precision = precision or Precision(device, False)
    per_epoch = min(len(batches), settings.max_batches or len(batches))
    total = settings.total_steps(per_epoch)
    optimizer = make_optimizer(model.parameters(), settings)
    log = TrainLog(steps=total, epochs=total / per_epoch)
    step, order = _resume(model, optimizer, precision, settings, fingerprint, log)
    report = on_progress if world.is_main else None
    on_loss = getattr(report, "on_loss", None)  # a progress display that shows the loss
    started = time.monotonic()
    if report is not None:
        report("train", step, total)
    model.train()
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if index == 0 or not order:
            order = epoch_order(settings.seed, epoch, len(batches))[:per_epoch]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(settings.learning_rate, step, total)
        optimizer.zero_grad(set_to_none=True)
        log.losses.append(_step(model, batches[order[index]], step, step_fn, device, world))
        precision.step(optimizer)
        step += 1
        if on_loss is not None:
            on_loss(log.losses[-1])
        if on_epoch is not None and (step % per_epoch == 0 or step == total):
            _score_epoch(model, on_epoch, step, per_epoch, log, report)
        if world.is_main and _checkpoint_due(settings, step, per_epoch, total):
            state = TrainState(step, order, log.losses, precision.state_dict(), log.epoch_scores)
            save_train_state(settings.checkpoint, fingerprint, state, model, optimizer)
        if report is not None:
            report("train", step, total)
    model.eval()
    log.seconds = time.monotonic() - started
    return log


def _score_epoch(
    model: nn.Module, on_epoch: EpochScore, step: int, per_epoch: int, log: TrainLog, report: Progress | None
) -> None:
    """Measure the scores at an epoch's end (the model back in training mode after), log and report them."""
    scores = on_epoch()
    model.train()
    if not scores:
        return
    epoch = math.ceil(step / per_epoch)
    log.epoch_scores.append({"epoch": epoch, "step": step, **scores})
    show = getattr(report, "on_epoch", None)
    if show is not None:
        show(epoch, math.ceil(log.steps / per_epoch), scores)


def _step(model: nn.Module, batch: Any, step: int, step_fn: StepFn, device: torch.device, world: World) -> dict:
    """This rank's share of one step's forward and backward, every rank's gradients combined; the batch's losses."""
    error: BaseException | None = None
    losses: dict[str, float] = {}
    weight = 1.0
    try:
        with device_errors(device):
            share, weight = shard_batch(batch, world.rank, world.size)
            losses = step_fn(move_to(share, device), step)
    except Exception as exc:  # noqa: BLE001 - every rank must learn of it before the next collective
        error = exc
    losses = combine_step(world, step, error, losses, weight)
    reduce_gradients(world, model, weight)
    return losses


def _checkpoint_due(settings: TrainSettings, step: int, per_epoch: int, total: int) -> bool:
    """Whether the checkpoint is written after `step` steps: every --checkpoint-every steps (else at every epoch's
    end), and at the end."""
    if settings.checkpoint is None:
        return False
    return step % (settings.checkpoint_every or per_epoch) == 0 or step == total


def _resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    settings: TrainSettings,
    fp: dict[str, Any],
    log: TrainLog,
) -> tuple[int, list[int]]:
    """Load the checkpoint when it exists: weights, optimizer, scaler, RNG states, losses and the epoch's batch
    order; returns the step to go on from and that order ([] at an epoch's start)."""
    if settings.checkpoint is None:
        return 0, []
    state = load_train_state(settings.checkpoint, fp)
    if state is None:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    precision.load_state_dict(state["scaler"])
    restore_rng(state)
    log.losses = list(state["losses"])
    log.epoch_scores = [dict(x) for x in state.get("epoch_scores", [])]
    log.resumed_from = int(state["step"])
    return log.resumed_from, list(state["order"])
