"""The training loop: a checkpoint per epoch, and a run killed and resumed ends with the same weights as one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nasprune_cli.errors import CheckpointError
from nasprune_cli.training import TrainingData, TrainSettings, finetune, train_space
from nasprune_cli.training.loop import cosine_lr, epoch_order
from nasprune_cli.training.state import load_train_state
from tests.unit.test_training_sampler import deep_space

STEPS, KILL_AT, PER_EPOCH = 7, 3, 3

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands for the process being killed right after a step."""


def killer(at: int) -> Any:
    def on_progress(stage: str, done: int, total: int) -> None:
        if done == at:
            raise Killed

    return on_progress


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(5)
    return [
        (torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 5, (4,), generator=gen)) for _ in range(PER_EPOCH)
    ]


def small_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(384, 5)
    )


def data() -> TrainingData:
    return TrainingData(batches(), lambda b: b[0], None, "test:batches", None)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_finetune_killed_and_resumed_equals_one_run(tmp_path: Path, optimizer: str) -> None:
    settings = TrainSettings(steps=STEPS, loss="ce+kd", optimizer=optimizer, seed=2)
    straight = finetune(small_model(), small_model(), data(), settings).model
    ck = TrainSettings(**{**settings.to_dict(), "checkpoint": str(tmp_path / "ck.pt")})
    killed = small_model()
    with pytest.raises(Killed):
        finetune(killed, small_model(), data(), ck, on_progress=killer(KILL_AT + 1))
    assert load_train_state(tmp_path / "ck.pt", _fingerprint_of(tmp_path / "ck.pt"))["step"] == KILL_AT  # epoch end
    assert not same_weights(killed, straight)
    resumed = finetune(small_model(), small_model(), data(), ck)
    assert resumed.log.resumed_from == KILL_AT
    assert same_weights(resumed.model, straight)
    assert len(resumed.log.losses) == STEPS


def test_sandwich_training_killed_and_resumed_equals_one_run(tmp_path: Path) -> None:
    settings = TrainSettings(steps=STEPS, loss="ce", seed=4)
    straight = train_space(deep_space(), data(), settings).space.model
    ck = TrainSettings(**{**settings.to_dict(), "checkpoint": str(tmp_path / "ck.pt")})
    with pytest.raises(Killed):
        train_space(deep_space(), data(), ck, on_progress=killer(2 * PER_EPOCH))
    resumed = train_space(deep_space(), data(), ck)
    assert resumed.log.resumed_from == 2 * PER_EPOCH
    assert same_weights(resumed.space.model, straight)
    assert resumed.space.order_locked


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    ck = TrainSettings(steps=PER_EPOCH, loss="ce", checkpoint=str(tmp_path / "ck.pt"))
    finetune(small_model(), None, data(), ck)
    other = TrainSettings(**{**ck.to_dict(), "lr": 0.5})
    with pytest.raises(CheckpointError, match=r"belongs to a different training run \(settings\.lr"):
        finetune(small_model(), None, data(), other)


def test_training_changes_the_weights_and_lowers_the_loss() -> None:
    result = finetune(small_model(), None, data(), TrainSettings(steps=30, loss="ce", lr=3e-3))
    first, last = result.log.losses[0]["loss"], result.log.last_losses(3)["loss"]
    assert last < first and not same_weights(result.model, small_model())


def test_cosine_schedule_and_epoch_order() -> None:
    assert cosine_lr(0.1, 0, 10) == pytest.approx(0.1) and cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 10, 10) == pytest.approx(0.0)
    assert sorted(epoch_order(0, 1, 9)) == list(range(9))
    assert epoch_order(0, 1, 9) == epoch_order(0, 1, 9) != epoch_order(0, 2, 9)


def _fingerprint_of(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)["fingerprint"]


def test_a_space_is_trained_in_the_activation_order_measured_on_the_training_batches() -> None:
    space = deep_space()
    result = train_space(space, data(), TrainSettings(steps=2, loss="ce", seed=1), importance="activation")
    assert result.space.order_locked
    reference = deep_space()
    reference.sort_parameters("activation", [b[0] for b in data().batches[:8]])
    assert result.space.channel_orders() == reference.channel_orders()
