"""The settings of one training run (fine-tuning or training a search space): the one definition of each."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nasprune_cli.errors import TrainingError

LOSSES = ("kd", "ce", "ce+kd")
OPTIMIZERS = ("adamw", "sgd")
SAMPLINGS = ("sandwich", "random")


@dataclass(frozen=True)
class TrainSettings:
    """How to train: length (epochs or steps), optimizer with a cosine schedule, loss and, for a space, sampling.

    `loss`: kd (distill from a teacher's outputs: KL on softened logits, MSE for other outputs), ce (cross-entropy on
    the batch labels) or ce+kd (both). `sampling` (a search space only): sandwich (largest, smallest and `num_random`
    random subnets per step, the others distilled from the largest) or random (one random subnet per step)."""

    epochs: int | None = None  # None with steps None: 1 epoch
    steps: int | None = None  # total optimizer steps; wins over epochs
    lr: float | None = None  # None: 1e-3 for adamw, 1e-2 for sgd
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    loss: str = "kd"
    temperature: float = 4.0
    sampling: str = "sandwich"
    num_random: int = 2
    seed: int = 0
    max_batches: int | None = None  # batches of the data per epoch; None: all
    checkpoint: str | None = None  # training state, written after every epoch; resumed when it exists

    def __post_init__(self) -> None:
        _choice("--loss", self.loss, LOSSES)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--sampling", self.sampling, SAMPLINGS)
        for flag, value in (("--epochs", self.epochs), ("--steps", self.steps), ("--max-batches", self.max_batches)):
            if value is not None and value < 1:
                raise TrainingError(f"{flag}: expected a positive integer (got {value})")
        for flag, value in (("--lr", self.lr), ("--temperature", self.temperature)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise TrainingError(f"{flag}: expected a positive number (got {value})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise TrainingError(f"--weight-decay: expected a number >= 0 (got {self.weight_decay})")
        if self.num_random < 0:
            raise TrainingError(f"num_random: expected an integer >= 0 (got {self.num_random})")

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: the given one, else the optimizer's default."""
        return self.lr if self.lr is not None else (1e-3 if self.optimizer == "adamw" else 1e-2)

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        if self.steps is not None:
            return self.steps
        return (self.epochs or 1) * batches_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON output and checkpoint fingerprints."""
        return asdict(self)


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainingError(f"{flag}: unknown value {value!r} (expected one of {', '.join(choices)})")
