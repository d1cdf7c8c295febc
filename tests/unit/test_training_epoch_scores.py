"""The score at the end of every epoch: measured on the model as it is then, kept across a resume, and shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasprune_cli.cli.train import TrainProgress
from nasprune_cli.metrics.score import ScoreInfo
from nasprune_cli.training import TrainingData, TrainSettings, finetune, train_space
from tests.unit.test_training_resume import PER_EPOCH, Killed, batches, killer, same_weights, small_model
from tests.unit.test_training_sampler import deep_space

pytestmark = pytest.mark.usefixtures("one_thread")


def accuracy(model: nn.Module) -> float:
    """Top-1 on the training batches (a score that moves with the weights)."""
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches())
    return hits / sum(len(y) for _, y in batches())


def scored_data() -> TrainingData:
    return TrainingData(batches(), lambda b: b[0], accuracy, "test:batches", "top1")


def test_finetune_scores_every_epoch_and_the_last_is_the_final_score() -> None:
    steps = 2 * PER_EPOCH + 1  # two whole epochs and one step of a third
    result = finetune(small_model(), None, scored_data(), TrainSettings(steps=steps, loss="ce", lr=3e-3))
    epochs = result.log.epoch_scores
    assert [(e["epoch"], e["step"]) for e in epochs] == [(1, PER_EPOCH), (2, 2 * PER_EPOCH), (3, steps)]
    assert epochs[-1]["model"] == result.score_after
    assert result.summary()["epoch_scores"] == epochs
    assert result.model.training is False  # left in eval mode after the last score


def test_no_score_no_epoch_scores() -> None:
    data = TrainingData(batches(), lambda b: b[0], None, "test:batches", None)
    assert finetune(small_model(), None, data, TrainSettings(steps=PER_EPOCH, loss="ce")).log.epoch_scores == []


def test_scoring_between_epochs_does_not_change_the_training() -> None:
    settings = TrainSettings(steps=2 * PER_EPOCH, loss="ce", lr=3e-3, seed=3)
    plain = finetune(small_model(), None, TrainingData(batches(), lambda b: b[0], None, "t", None), settings)
    scored = finetune(small_model(), None, scored_data(), settings)
    assert same_weights(plain.model, scored.model)


def test_epoch_scores_survive_a_resume(tmp_path: Path) -> None:
    settings = TrainSettings(steps=3 * PER_EPOCH, loss="ce", lr=3e-3, seed=2)
    straight = finetune(small_model(), None, scored_data(), settings).log.epoch_scores
    ck = TrainSettings(**{**settings.to_dict(), "checkpoint": str(tmp_path / "ck.pt")})
    with pytest.raises(Killed):
        finetune(small_model(), None, scored_data(), ck, on_progress=killer(PER_EPOCH + 1))
    resumed = finetune(small_model(), None, scored_data(), ck)
    assert resumed.log.resumed_from == PER_EPOCH
    assert resumed.log.epoch_scores == straight


def test_a_trained_space_scores_its_largest_and_smallest_subnets_every_epoch() -> None:
    def score(model: nn.Module) -> float:
        return float(model(batches()[0][0]).float().mean())

    data = TrainingData(batches(), lambda b: b[0], score, "test:batches", "mean")
    result = train_space(deep_space(), data, TrainSettings(steps=2 * PER_EPOCH, loss="ce", seed=1))
    epochs = result.log.epoch_scores
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert set(epochs[0]) == {"epoch", "step", "largest", "smallest"}
    assert epochs[-1]["largest"] == pytest.approx(result.scores_after["largest"])
    assert epochs[-1]["smallest"] == pytest.approx(result.scores_after["smallest"])


def test_progress_lines_show_the_epoch_score(capsys: pytest.CaptureFixture[str]) -> None:
    progress = TrainProgress("lines")
    progress.info = ScoreInfo("val accuracy", "top1", percent=True)
    progress.on_loss({"loss": 0.5})
    progress.on_epoch(2, 4, {"model": 0.971})
    assert "epoch 2/4 val accuracy: 97.10%" in capsys.readouterr().err
    assert progress.score_text().endswith("epoch 2/4 val accuracy: 97.10%")
