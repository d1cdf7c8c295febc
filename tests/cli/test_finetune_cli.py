"""`nasprune finetune` on a pruned demo model: KD / CE / both, the score before and after, a file export reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from tests.cli.checks import assert_one_error

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = ["--model", "nasprune_cli.demo:build"]
DATA = ["--data", "nasprune_cli.demo:data", "--max-batches", "2", "--quiet"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("finetune") / "pruned.pt"
    args = [*MODEL, "--recipe", "demo", "--flops", "30%", "--searcher", "random", "--iterations", "2"]
    result = CliRunner().invoke(app, ["search", *args, "--no-reconstruct", "--quiet", "--output", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("loss", ["kd", "ce", "ce+kd"])
def test_finetune_reports_the_score_before_and_after(
    runner: CliRunner, pruned: Path, tmp_path: Path, loss: str
) -> None:
    out = tmp_path / "ft.pt"
    args = [*MODEL, "--pruned", str(pruned), *DATA, "--score", "nasprune_cli.demo:score", "--loss", loss]
    result = runner.invoke(app, ["finetune", *args, "--steps", "3", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3 and summary["settings"]["loss"] == loss
    assert 0 <= summary["score_before"] <= 1 and 0 <= summary["score_after"] <= 1
    stored = torch.load(out, weights_only=True)
    assert stored["metrics"]["finetune"]["score_after"] == summary["score_after"]
    before = torch.load(pruned, weights_only=True)["state_dict"]
    assert any(not torch.equal(before[k], v) for k, v in stored["state_dict"].items())
    result = runner.invoke(app, ["export", "--pruned", str(out), *MODEL, "-o", str(tmp_path / "sd.pt"), "--json"])
    assert result.exit_code == 0, result.output


def test_an_epoch_of_fine_tuning_recovers_accuracy(runner: CliRunner, pruned: Path, tmp_path: Path) -> None:
    args = [*MODEL, "--pruned", str(pruned), "--data", "nasprune_cli.demo:data", "--score", "nasprune_cli.demo:score"]
    result = runner.invoke(
        app, ["finetune", *args, "--epochs", "1", "-q", "--output", str(tmp_path / "ft.pt"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["score_after"] > summary["score_before"]


def test_a_label_loss_without_labels_is_one_error(runner: CliRunner, pruned: Path, tmp_path: Path) -> None:
    tensors = tmp_path / "x.pt"
    torch.save({"inputs": torch.randn(8, 1, 8, 8)}, tensors)
    args = [
        *MODEL,
        "--pruned",
        str(pruned),
        "--data",
        f"tensors:{tensors}",
        "--loss",
        "ce+kd",
        "-o",
        str(tmp_path / "o"),
    ]
    assert_one_error(runner.invoke(app, ["finetune", *args]), "--loss ce+kd: data batch 0 carries no labels")


def test_the_output_may_not_be_the_pruned_file(runner: CliRunner, pruned: Path) -> None:
    result = runner.invoke(app, ["finetune", *MODEL, "--pruned", str(pruned), *DATA, "-o", str(pruned), "--overwrite"])
    assert_one_error(result, str(pruned), "--pruned")
