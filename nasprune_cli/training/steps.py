"""One training step's forward and backward passes: the sandwich rule, one random subnet, or a plain (pruned) model.

A step function takes a batch and the step number, accumulates gradients and returns the losses it computed (floats);
the loop zeroes the gradients before and steps the optimizer after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.inputs import call_model
from nasprune_cli.metrics.score import default_collect
from nasprune_cli.space import SearchSpace
from nasprune_cli.training.losses import batch_labels, combined_loss, distill_loss
from nasprune_cli.training.sampler import sandwich_configs, step_rng
from nasprune_cli.training.settings import TrainSettings

StepFn = Callable[[Any, int], dict[str, float]]
Collect = Callable[[Any], Any]


@dataclass
class SandwichStep:
    """What one sandwich step trained: the subnets in order (largest, smallest, random ...) and their losses."""

    configs: list[dict[str, int]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def teacher_outputs(teacher: nn.Module | None, inputs: Any) -> Any:
    """The frozen teacher's outputs (no gradient), None without a teacher."""
    if teacher is None:
        return None
    with torch.no_grad():
        return call_model(teacher, inputs)


def sandwich_step(
    space: SearchSpace,
    batch: Any,
    step: int,
    settings: TrainSettings,
    teacher: nn.Module | None = None,
    collect: Collect = default_collect,
) -> SandwichStep:
    """Largest subnet on the --loss (labels and / or the teacher), then the smallest and random ones distilled from
    the largest's detached outputs (in-place distillation); gradients accumulate; the largest is active after."""
    inputs, labels = collect(batch), batch_labels(batch)
    configs = sandwich_configs(space, step_rng(settings.seed, step), settings.num_random)
    space.select(configs[0])
    out = call_model(space.model, inputs)
    loss = combined_loss(out, labels, teacher_outputs(teacher, inputs), settings.loss, settings.temperature)
    loss.backward()
    target = _detached(out)
    result = SandwichStep(configs, [float(loss.detach())])
    for config in configs[1:]:
        space.select(config)
        student_loss = distill_loss(call_model(space.model, inputs), target, settings.temperature)
        student_loss.backward()
        result.losses.append(float(student_loss.detach()))
    space.select(configs[0])
    return result


def random_step(
    space: SearchSpace,
    batch: Any,
    step: int,
    settings: TrainSettings,
    teacher: nn.Module | None = None,
    collect: Collect = default_collect,
) -> dict[str, float]:
    """One random subnet (recipe choices) trained on the --loss, as modelopt's sampling during training does."""
    inputs = collect(batch)
    rng = step_rng(settings.seed, step)
    space.select({n: rng.choice(space.hparams[n].choices) for n in sorted(space.hparams)})
    out = call_model(space.model, inputs)
    loss = combined_loss(
        out, batch_labels(batch), teacher_outputs(teacher, inputs), settings.loss, settings.temperature
    )
    loss.backward()
    return {"loss": float(loss.detach())}


def space_step_fn(
    space: SearchSpace, settings: TrainSettings, teacher: nn.Module | None, collect: Collect = default_collect
) -> StepFn:
    """The step function of --sampling sandwich or random on a search space."""
    if settings.sampling == "random":
        return lambda batch, step: random_step(space, batch, step, settings, teacher, collect)

    def run(batch: Any, step: int) -> dict[str, float]:
        done = sandwich_step(space, batch, step, settings, teacher, collect)
        return {"loss": done.losses[0], "distill": sum(done.losses[1:]) / max(len(done.losses) - 1, 1)}

    return run


def model_step_fn(
    model: nn.Module, settings: TrainSettings, teacher: nn.Module | None, collect: Collect = default_collect
) -> StepFn:
    """The step function of fine-tuning a plain (pruned) model on the --loss."""

    def run(batch: Any, step: int) -> dict[str, float]:
        inputs = collect(batch)
        out = call_model(model, inputs)
        teacher_out = teacher_outputs(teacher, inputs)
        loss = combined_loss(out, batch_labels(batch), teacher_out, settings.loss, settings.temperature)
        loss.backward()
        return {"loss": float(loss.detach())}

    return run


def _detached(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (list, tuple)):
        return type(out)(_detached(o) for o in out)
    if isinstance(out, dict):
        return {k: _detached(v) for k, v in out.items()}
    return out
