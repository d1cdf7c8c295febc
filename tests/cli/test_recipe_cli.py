"""`nasprune recipe show|check` and `--set` on the commands that take a recipe (CliRunner)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from nasprune_cli.recipe.load import load_recipe, recipe_to_dict

TINY = """
import torch.nn as nn


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
"""


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "np_recipe_models.py").write_text(textwrap.dedent(TINY))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def one_error(result: object) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def test_show_a_shipped_recipe(runner: CliRunner) -> None:
    result = runner.invoke(app, ["recipe", "show", "fastnas"])
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert list(data)[:4] == ["version", "mode", "description", "rules"]
    assert data["rules"]["nn.Conv2d"]["*"]["channel_divisor"] == 32 and data["search"]["searcher"] == "binary"
    assert "defaults" not in data and "extends" not in data  # applied


def test_show_resolves_extends_defaults_and_set(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "cifar.yaml"
    path.write_text("extends: fastnas\ndefaults: {divisor: 8}\ninput: {shape: [1, 3, 32, 32]}\n")
    result = runner.invoke(app, ["recipe", "show", str(path), "--set", "rules.nn.Linear.*.feature_divisor=4"])
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["rules"]["nn.Conv2d"]["*"]["channel_divisor"] == 8
    assert data["rules"]["nn.BatchNorm2d"]["*"]["feature_divisor"] == 8
    assert data["rules"]["nn.Linear"]["*"]["feature_divisor"] == 4
    assert data["input"]["shape"] == [1, 3, 32, 32]
    # what show prints is a recipe that reads back to the same one
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    expected = load_recipe(path, sets=["rules.nn.Linear.*.feature_divisor=4"])
    assert recipe_to_dict(load_recipe(shown)) == recipe_to_dict(expected)


def test_show_without_rules_prints_the_mode_rules(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("mode: autonas\n")
    data = yaml.safe_load(runner.invoke(app, ["recipe", "show", str(path)]).stdout)
    assert data["rules"]["nn.Sequential"]["*"] == {"min_depth": 0, "skippable": "trailing"}


def test_check_ok_is_one_line_on_stderr(runner: CliRunner) -> None:
    result = runner.invoke(app, ["recipe", "check", "autonas"])
    assert result.exit_code == 0 and result.stdout == ""
    types = len(load_recipe("autonas").rules)
    assert result.stderr.strip() == f"autonas: OK (autonas, rules for {types} module types)"


def test_check_errors(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: fastnas\ndefaults: {channel_divisor: 0}\n")
    assert one_error(runner.invoke(app, ["recipe", "check", str(bad)])) == (
        f"Error: {bad}: defaults.channel_divisor: must be >= 1 (got 0)"
    )
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\n")
    b.write_text("extends: a.yaml\n")
    assert f"extends: cycle: {a} -> {b} -> {a}" in one_error(runner.invoke(app, ["recipe", "check", str(a)]))
    missing = runner.invoke(app, ["recipe", "check", str(tmp_path / "nope.yaml")])
    assert one_error(missing) == f"Error: {tmp_path / 'nope.yaml'}: file not found"
    line = one_error(runner.invoke(app, ["recipe", "check", "fastnas", "--set", "search.fill=yes"]))
    assert line == "Error: --set search.fill=yes: search.fill: expected true or false (got 'yes')"


@pytest.mark.parametrize("command", ["convert", "profile", "search"])
def test_every_recipe_command_takes_set(runner: CliRunner, tiny: Path, command: str) -> None:
    args = [command, "--model", "np_recipe_models:build", "--recipe", "fastnas", "--set", "search.fill=yes"]
    args += ["--output", str(tiny / "out.pt")] if command != "profile" else []
    line = one_error(runner.invoke(app, args))
    assert line == "Error: --set search.fill=yes: search.fill: expected true or false (got 'yes')"
    assert not (tiny / "out.pt").exists()


def test_convert_with_set_defaults(runner: CliRunner, tiny: Path) -> None:
    args = ["convert", "--model", "np_recipe_models:build", "--recipe", "fastnas", "--input-shape", "1,3,8,8"]
    args += ["--set", "defaults.divisor=16", "--output", str(tiny / "space.pt"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    (hparam,) = json.loads(result.stdout)["hparams"]
    assert hparam["choices"] == [16, 32, 48, 64]  # multiples of 16 instead of fastnas's 32


def test_flags_win_over_set(runner: CliRunner, tiny: Path) -> None:
    base = ["profile", "--model", "np_recipe_models:build", "--input-shape", "1,3,8,8", "--json"]
    base += ["--set", "search.constraints.flops=160%"]
    line = one_error(runner.invoke(app, base))
    assert line.startswith("Error: --set search.constraints.flops=160%: search.constraints.flops: ")
    result = runner.invoke(app, [*base, "--flops", "60%"])  # the flag replaces the --set value
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["converted"] is True  # --set without --recipe still converts with the (default) recipe
    assert [c["name"] for c in data["constraints"]] == ["flops"]
