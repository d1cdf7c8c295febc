"""`nasprune search` with built-in data and scores, named scores in the summary, progress lines without a terminal."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasprune_cli.cli import search as search_cli
from nasprune_cli.cli.app import app

pytestmark = pytest.mark.usefixtures("one_thread")

HELPERS = """
import torch
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    )


def bare_data():
    return [torch.randn(4, 3, 16, 16)]


def error_rate(model):
    return 0.25


error_rate.name = "error rate"
error_rate.higher_is_better = False
error_rate.percent = True
"""


@pytest.fixture()
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "np_builtin_helpers.py").write_text(textwrap.dedent(HELPERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    from PIL import Image

    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), colour).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


BASE = ["search", "--model", "np_builtin_helpers:build", "--input-shape", "1,3,16,16", "--flops", "70%"]
FAST = ["--max-batches", "1", "--no-reconstruct"]


def test_imagefolder_with_top1_in_the_json_and_the_summary(helpers: Path, images: Path) -> None:
    runner = CliRunner()
    args = [*BASE, *FAST, "--data", f"imagefolder:{images}?batch=4", "--score", "top1"]
    result = runner.invoke(app, [*args, "--json", "--quiet"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["score_name"] == "top1" and metrics["score_measures"] == "top-1 accuracy"
    assert metrics["score_percent"] is True and metrics["score_higher_is_better"] is True
    assert 0.0 <= metrics["original"]["score"] <= 1.0
    assert metrics["score_label"].startswith("top-1 accuracy ") and metrics["score_label"].endswith("%")
    text = runner.invoke(app, [*args, "--quiet"])
    assert text.exit_code == 0, text.stderr
    assert "score: top-1 accuracy " in text.stdout and "%, higher is better (top1)" in text.stdout


def test_a_named_lower_is_better_score_in_the_summary(helpers: Path, images: Path) -> None:
    args = [*BASE, *FAST, "--data", f"imagefolder:{images}", "--score", "np_builtin_helpers:error_rate", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "score: error rate 25.00% -> 25.00%, lower is better (np_builtin_helpers:error_rate)" in result.stdout
    assert "error rate" in result.stdout.split("score evaluations")[0]  # the table's score row is named


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "--score top1: no --data given, and random inputs carry no labels"),
        ("np_builtin_helpers:bare_data", "--score top1: data batch 0 carries no labels (got Tensor"),
    ],
)
def test_top1_without_labels_is_one_error_naming_the_flag(helpers: Path, data: str | None, message: str) -> None:
    args = [*BASE, *FAST, "--score", "top1", *(["--data", data] if data else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_a_missing_image_folder_fails_before_the_search(helpers: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*BASE, "--data", f"imagefolder:{tmp_path / 'nope'}", "--score", "top1"])
    assert result.exit_code == 1
    assert "folder" in result.stderr and "does not exist" in result.stderr and "Traceback" not in result.output


def test_progress_lines_every_interval(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nasprune_cli.metrics.score import ScoreInfo

    monkeypatch.setattr(search_cli._Progress, "INTERVAL_S", 0.0)  # a line at every step
    progress = search_cli._Progress("lines")
    with progress as report:
        assert report is progress
        progress.info = ScoreInfo("val accuracy", "m:fn", percent=True)
        for done in range(4):
            report("sensitivity", done, 3)
            report.on_score(0.99 - done / 100)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "sensitivity map: started, 3 evaluations"
    assert lines[1].startswith("sensitivity map: 1/3 evaluations, 0:00 elapsed, about 0:00 left")
    assert lines[1].endswith(", val accuracy: last subnet 99.00%")
    assert lines[2].endswith(", val accuracy: last subnet 98.00% (first 99.00%)")
    assert lines[3].startswith("sensitivity map: done, 3/3 evaluations in 0:00") and len(lines) == 4
    monkeypatch.setattr(search_cli._Progress, "INTERVAL_S", 3600.0)
    with search_cli._Progress("lines") as report:
        for done in range(4):
            report("search", done, 3)
    assert capsys.readouterr().err.splitlines() == [
        "search: started, 3 evaluations",
        "search: done, 3/3 evaluations in 0:00",
    ]
    assert search_cli._Progress("off").__enter__() is None  # --quiet


def test_progress_lines_without_a_terminal_and_quiet(helpers: Path, images: Path) -> None:
    args = [*BASE, "--max-batches", "1", "--data", f"imagefolder:{images}", "--score", "top1", "--json"]
    result = CliRunner().invoke(app, args)  # CliRunner's stderr is not a terminal
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "sensitivity map: started, " in result.stderr and "refit weights: started, " in result.stderr
    assert any(line.startswith("search: done, ") and "top-1 accuracy: last subnet " in line for line in lines)
    json.loads(result.stdout)  # stdout holds only the JSON

    quiet = CliRunner().invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.stderr
    assert "started" not in quiet.stderr and "done" not in quiet.stderr
