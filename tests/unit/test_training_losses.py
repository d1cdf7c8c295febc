"""Training losses: distillation (KL on softened logits, MSE otherwise), the task loss and its label errors."""

from __future__ import annotations

import pytest
import torch

from nasprune_cli.errors import TrainingError
from nasprune_cli.training import TrainSettings, distill_loss, task_loss
from nasprune_cli.training.losses import combined_loss, require_labels


def test_distillation_is_zero_for_a_student_identical_to_its_teacher() -> None:
    logits = torch.randn(6, 10)
    assert float(distill_loss(logits.clone().requires_grad_(), logits).detach()) == 0.0
    features = torch.randn(2, 4, 5, 5)
    assert float(distill_loss(features.clone(), features)) == 0.0
    pair = (torch.randn(3, 4), torch.randn(3, 1))
    assert float(distill_loss(tuple(t.clone() for t in pair), pair)) == 0.0


def test_distillation_is_positive_for_another_student_and_grows_with_the_gap() -> None:
    teacher = torch.randn(8, 10)
    near, far = teacher + 0.1 * torch.randn(8, 10), teacher + 2.0 * torch.randn(8, 10)
    assert 0 < float(distill_loss(near, teacher)) < float(distill_loss(far, teacher))
    assert float(distill_loss(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))) == pytest.approx(1.0)  # MSE


def test_the_teacher_is_detached() -> None:
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 5, requires_grad=True)
    distill_loss(student, teacher * 2).backward()
    assert teacher.grad is None and student.grad is not None


def test_kl_matches_its_definition_with_the_temperature() -> None:
    s, t, temp = torch.randn(5, 7), torch.randn(5, 7), 3.0
    p, q = torch.softmax(t / temp, 1), torch.softmax(s / temp, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean() * temp**2
    assert float(distill_loss(s, t, temp)) == pytest.approx(float(expected), rel=1e-5)


def test_a_label_loss_without_labels_is_a_clear_error() -> None:
    with pytest.raises(TrainingError, match=r"--loss ce: the data batches carry no labels.*--loss kd"):
        task_loss(torch.randn(2, 3), None)
    with pytest.raises(TrainingError, match=r"--loss ce\+kd: data batch 1 carries no labels \(got Tensor\)"):
        require_labels([(torch.randn(2, 3), torch.tensor([0, 1])), torch.randn(2, 3)], "ce+kd")
    with pytest.raises(TrainingError, match="second element is Tensor"):
        require_labels([(torch.randn(2, 3), torch.randn(2))], "ce")  # float "labels"
    require_labels([torch.randn(2, 3)], "kd")  # kd needs no labels


def test_ce_needs_logits() -> None:
    with pytest.raises(TrainingError, match=r"returned \[2, 3, 4\], expected logits of shape \[2, classes\]"):
        task_loss(torch.randn(2, 3, 4), torch.tensor([0, 1]))


def test_ce_plus_kd_is_the_sum() -> None:
    out, teacher, labels = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    both = combined_loss(out, labels, teacher, "ce+kd", 2.0)
    assert float(both) == pytest.approx(float(task_loss(out, labels) + distill_loss(out, teacher, 2.0)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "mse"}, r"--loss: unknown value 'mse' \(expected one of kd, ce, ce\+kd\)"),
        ({"optimizer": "adam"}, r"--optimizer: unknown value 'adam'"),
        ({"sampling": "all"}, r"--sampling: unknown value 'all'"),
        ({"steps": 0}, r"--steps: expected a positive integer \(got 0\)"),
        ({"lr": -1.0}, r"--lr: expected a positive number"),
        ({"temperature": float("nan")}, r"--temperature: expected a positive number"),
    ],
)
def test_bad_settings_name_the_flag(kwargs: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainSettings(**kwargs)
