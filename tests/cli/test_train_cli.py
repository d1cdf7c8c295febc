"""`nasprune train` on the demo model, and AutoNAS end to end: train, search --space, export."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from tests.cli.checks import assert_one_error

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = ["--model", "nasprune_cli.demo:build", "--recipe", "demo"]
TRAIN = [*DEMO, "--data", "nasprune_cli.demo:data", "--steps", "2", "--max-batches", "2", "--quiet"]
HELPERS = """
from nasprune_cli.demo import data


def images():
    return [batch[0] for batch in data()[:2]]
"""


@pytest.fixture()
def unlabelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "np_train_helpers.py").write_text(textwrap.dedent(HELPERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "np_train_helpers:images"


def test_autonas_train_search_export(runner: CliRunner, tmp_path: Path) -> None:
    space, pruned = tmp_path / "space.pt", tmp_path / "pruned.pt"
    args = [*TRAIN, "--loss", "ce+kd", "--score", "nasprune_cli.demo:score", "--output", str(space), "--json"]
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["output"] == str(space) and summary["settings"]["sampling"] == "sandwich"
    assert set(summary["scores_after"]) == {"largest", "smallest"} and 0 < summary["scores_after"]["largest"] <= 1
    stored = torch.load(space, weights_only=True)
    assert stored["training"]["summary"]["steps"] == 2 and stored["training"]["state_dict"]
    search = ["search", *DEMO, "--space", str(space), "--flops", "60%", "--searcher", "random", "--iterations", "2"]
    result = runner.invoke(app, [*search, "--no-reconstruct", "--output", str(pruned), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (
        json.loads(result.stdout)["metrics"]["pruned"]["flops"]
        <= 0.6 * json.loads(result.stdout)["metrics"]["original"]["flops"]
    )
    result = runner.invoke(
        app, ["export", "--pruned", str(pruned), "--model", "nasprune_cli.demo:build", "-o", str(tmp_path / "sd.pt")]
    )
    assert result.exit_code == 0, result.output


def test_a_rerun_with_the_checkpoint_resumes(runner: CliRunner, tmp_path: Path) -> None:
    args = [*TRAIN, "--sampling", "random", "--checkpoint", str(tmp_path / "ck.pt"), "--output", str(tmp_path / "s.pt")]
    first = runner.invoke(app, ["train", *args, "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["resumed_from_step"] == 0
    again = runner.invoke(app, ["train", *args, "--overwrite", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["resumed_from_step"] == 2
    other = runner.invoke(app, ["train", *args, "--overwrite", "--lr", "0.5"])
    assert_one_error(other, "ck.pt: this checkpoint belongs to a different training run", "settings.lr")


def test_progress_lines_without_a_terminal(runner: CliRunner, tmp_path: Path) -> None:
    args = [a for a in TRAIN if a != "--quiet"]
    score = ["--score", "nasprune_cli.demo:score"]
    result = runner.invoke(app, ["train", *args, *score, "--loss", "ce", "--output", str(tmp_path / "s.pt")])
    assert result.exit_code == 0, result.output
    assert "train: started, 2 steps" in result.stderr and "train: done, 2/2 steps" in result.stderr
    assert "Training" in result.stdout and "largest subnet" in result.stdout and "smallest subnet" in result.stdout
    assert "score: validation accuracy (held-out digits)" in result.stdout


def test_a_label_loss_on_unlabelled_data_is_one_error(runner: CliRunner, tmp_path: Path, unlabelled: str) -> None:
    args = [*DEMO, "--data", unlabelled, "--steps", "1", "--loss", "ce", "--output", str(tmp_path / "s.pt")]
    assert_one_error(runner.invoke(app, ["train", *args]), "--loss ce: data batch 0 carries no labels", "--loss kd")
    assert not (tmp_path / "s.pt").exists()


def test_search_refuses_a_space_made_with_another_recipe(runner: CliRunner, tmp_path: Path) -> None:
    space = tmp_path / "space.pt"
    assert runner.invoke(app, ["train", *TRAIN, "--output", str(space)]).exit_code == 0
    args = ["search", "--model", "nasprune_cli.demo:build", "--recipe", "demo", "--set", "defaults.divisor=16"]
    result = runner.invoke(app, [*args, "--space", str(space), "--flops", "60%"])
    assert_one_error(result, f"--space {space}: the space was made with another recipe", "--recipe")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sampling", "all"], "--sampling: unknown value 'all' (expected one of sandwich, random)"),
        (["--optimizer", "adam"], "--optimizer: unknown value 'adam'"),
        (["--epochs", "0"], "--epochs: expected a positive integer (got 0)"),
    ],
)
def test_bad_flags_are_one_error(runner: CliRunner, tmp_path: Path, flags: list[str], message: str) -> None:
    assert_one_error(runner.invoke(app, ["train", *TRAIN, *flags, "--output", str(tmp_path / "s.pt")]), message)
