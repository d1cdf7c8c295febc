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
    assert [e["epoch"] for e in summary["epoch_scores"]] == [1]  # the score at the end of the epoch
    assert summary["epoch_scores"][0]["model"] == summary["score_after"]


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


def test_device_cpu_and_checkpoint_every(runner: CliRunner, pruned: Path, tmp_path: Path) -> None:
    ck, out = tmp_path / "ck.pt", tmp_path / "ft.pt"
    args = [*MODEL, "--pruned", str(pruned), *DATA, "--steps", "3", "--device", "cpu", "--checkpoint", str(ck)]
    result = runner.invoke(app, ["finetune", *args, "--checkpoint-every", "1", "--no-amp", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["settings"]["device"] == "cpu" and summary["settings"]["checkpoint_every"] == 1
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 3 and len(state["order"]) == 2 and state["scaler"] == {}
    assert all(v.device.type == "cpu" for v in torch.load(out, weights_only=True)["state_dict"].values())


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--device", "tpu"], ["--device: unknown device 'tpu'", "cuda:N"]),
        (["--device", "cpu", "--amp"], ["--amp: mixed precision needs a CUDA device", "--device cuda"]),
        (["--checkpoint-every", "0"], ["--checkpoint-every: expected a positive integer (got 0)"]),
    ],
)
def test_device_flags_are_checked(
    runner: CliRunner, pruned: Path, tmp_path: Path, flags: list[str], fragments: list[str]
) -> None:
    args = [*MODEL, "--pruned", str(pruned), *DATA, "--steps", "1", *flags, "-o", str(tmp_path / "o.pt")]
    assert_one_error(runner.invoke(app, ["finetune", *args]), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_a_missing_gpu_is_one_error(runner: CliRunner, pruned: Path, tmp_path: Path) -> None:
    args = [*MODEL, "--pruned", str(pruned), *DATA, "--steps", "1", "--device", "cuda", "-o", str(tmp_path / "o.pt")]
    assert_one_error(runner.invoke(app, ["finetune", *args]), "device 'cuda'", "--device cpu")
