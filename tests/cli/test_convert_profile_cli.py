"""`nasprune convert` / `nasprune profile`: exit codes, one-line errors, tables and JSON (CliRunner + subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from tests.cli.checks import assert_one_error

ROOT = Path(__file__).resolve().parents[2]
FASTNAS = str(ROOT / "recipes" / "fastnas.yaml")

TINY = """
import torch.nn as nn


def build(width: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )


NOT_CALLABLE = 42
"""

BAD_RECIPES = {
    "unknown_key": (
        "rules:\n  nn.Conv2d:\n    '*': {chanels_ratio: [0.5]}\n",
        "rules.nn.Conv2d.*.chanels_ratio: unknown key (expected one of channel_divisor, channels_ratio",
    ),
    "ratio_1.5": (
        "rules:\n  nn.Conv2d: {channels_ratio: [0.5, 1.5]}\n",
        "rules.nn.Conv2d.channels_ratio[1]: must be in (0, 1] (got 1.5)",
    ),
    "divisor_0": (
        "rules:\n  nn.Conv2d: {channel_divisor: 0}\n",
        "rules.nn.Conv2d.channel_divisor: must be >= 1 (got 0)",
    ),
    "wrong_type": (
        "rules:\n  nn.Conv2d: {channels_ratio: abc}\n",
        "rules.nn.Conv2d.channels_ratio: expected a list of numbers (got 'abc')",
    ),
    "malformed_yaml": ("rules:\n  nn.Conv2d: {channels_ratio: [0.5\n", "invalid YAML: "),
}


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with an importable `np_cli_models` module (tiny conv net), on sys.path."""
    (tmp_path / "np_cli_models.py").write_text(textwrap.dedent(TINY))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_recipe(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["convert", "profile"])
@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_exit_1_one_line(runner: CliRunner, tiny: Path, command: str, case: str) -> None:
    text, fragment = BAD_RECIPES[case]
    recipe = write_recipe(tiny, text)
    extra = ["--output", str(tiny / "space.pt")] if command == "convert" else []
    result = runner.invoke(app, [command, "--model", "np_cli_models:build", "--recipe", str(recipe), *extra])
    line = assert_one_error(result, f"{recipe}: ", fragment)
    if case == "malformed_yaml":
        assert re.search(r": line \d+, column \d+: invalid YAML: ", line)
    assert not (tiny / "space.pt").exists()


def test_missing_recipe_file(runner: CliRunner, tiny: Path) -> None:
    result = runner.invoke(app, ["profile", "--model", "np_cli_models:build", "--recipe", str(tiny / "nope.yaml")])
    assert_one_error(result, f"{tiny / 'nope.yaml'}: file not found")


@pytest.mark.parametrize(
    ("spec", "kwargs", "fragment"),
    [
        ("np_no_such_module:build", [], "module 'np_no_such_module' not found"),
        ("np_cli_models:buidl", [], "module 'np_cli_models' has no attribute 'buidl' (did you mean 'build'?)"),
        ("np_cli_models:NOT_CALLABLE", [], "model 'np_cli_models:NOT_CALLABLE' is not callable"),
        (
            "np_cli_models:build",
            ["--model-kwargs", "depth=3"],
            "model 'np_cli_models:build' rejected the keyword arguments {'depth': 3}",
        ),
        ("np_cli_models", [], "expected 'pkg.module:attr'"),
        ("np_cli_models:build", ["--model-kwargs", "width"], "--model-kwargs 'width': expected key=value"),
    ],
)
def test_bad_model_spec_exit_1_one_line(runner: CliRunner, tiny: Path, spec: str, kwargs: list, fragment: str) -> None:
    result = runner.invoke(app, ["profile", "--model", spec, *kwargs, "--input-shape", "1,3,8,8"])
    assert_one_error(result, fragment)


@pytest.mark.parametrize("shape", ["1,3,x", "1,3,,8", "1,0,8", ""])
def test_bad_input_shape(runner: CliRunner, tiny: Path, shape: str) -> None:
    result = runner.invoke(app, ["profile", "--model", "np_cli_models:build", "--input-shape", shape])
    assert_one_error(result, "--input-shape: ")


def test_bad_budget_is_one_line(runner: CliRunner, tiny: Path) -> None:
    result = runner.invoke(
        app, ["profile", "--model", "np_cli_models:build", "--input-shape", "1,3,8,8", "--flops", "lots"]
    )
    line = assert_one_error(result, "search.constraints.flops: ", "(got 'lots')")
    assert line.startswith("Error: command line: ")  # the value came from --flops, not from a recipe file


def test_usage_error_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["profile"])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_unexpected_exception_is_one_line_unless_debug(
    runner: CliRunner, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(spec: str, kwargs: dict) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("nasprune_cli.loading.build_model", explode)
    args = ["profile", "--model", "np_cli_models:build", "--input-shape", "1,3,8,8"]
    result = runner.invoke(app, args)
    assert_one_error(result, "Error: unexpected RuntimeError: boom (set NASPRUNE_DEBUG=1 for the traceback)", bug=True)
    debug = runner.invoke(app, args, env={"NASPRUNE_DEBUG": "1"})
    assert isinstance(debug.exception, RuntimeError)  # re-raised: the console script prints the traceback


def test_closed_stdout_is_not_reported_as_an_error(
    runner: CliRunner, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nasprune ... | head` closes the pipe while the command still writes: exit quietly, as click does."""

    def closed_pipe(spec: str, kwargs: dict) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("nasprune_cli.loading.build_model", closed_pipe)
    result = runner.invoke(app, ["profile", "--model", "np_cli_models:build", "--input-shape", "1,3,8,8"])
    assert result.exit_code == 1
    assert "Error" not in result.stderr


def test_help_does_not_import_torch() -> None:
    code = "import sys, nasprune_cli.cli.app; print('torch' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- profile ----------------------------------------------------------------------------------------------------
def _human(text: str) -> float:
    number, _, suffix = text.strip().partition(" ")
    return float(number) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[suffix.strip()]


def _row(stdout: str, label: str) -> list[str]:
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line) if c.strip()]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{stdout}")


def test_profile_resnet18_table_matches_json(runner: CliRunner) -> None:
    """The README's first command, as is (the recipe's 1x3x224x224 input): tables, then the same figures as JSON."""
    args = ["profile", "--model", "torchvision.models:resnet18", "--recipe", FASTNAS, "--flops", "60%"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    out = table.stdout
    assert "FLOPs: one per multiply-add, counted by fvcore" in out
    assert re.search(r"search space: \d+ subnets, \d+ hparams", out)
    assert "Frozen layers" in out and "fc" in out

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["converted"] is True
    assert data["flops"]["max"] == 1_819_065_856  # resnet18 at 224x224: fvcore's 1.82 G multiply-adds
    assert data["params"]["max"] == 11_689_512
    assert "one per multiply-add" in data["flops_unit"]
    for label, key in (("FLOPs", "flops"), ("params", "params")):
        cells = _row(out, label)
        for cell, which in zip(cells[:3], ("min", "centroid", "max"), strict=True):
            assert _human(cell) == pytest.approx(data[key][which], rel=6e-3)
        assert float(cells[3].rstrip("x")) == pytest.approx(data[f"{key}_ratio"], abs=0.006)
    assert data["flops"]["min"] < data["flops"]["centroid"] < data["flops"]["max"]
    assert f"search space: {data['size']} subnets, {data['num_hparams']} hparams" in out
    flops = next(c for c in data["constraints"] if c["name"] == "flops")
    assert flops["limit"] == pytest.approx(0.6 * data["flops"]["max"], rel=1e-9)
    assert flops["satisfiable"] is True
    limit, smallest, ok = _row(out, "flops")
    assert _human(limit) == pytest.approx(flops["limit"], rel=6e-3)
    assert _human(smallest) == pytest.approx(flops["min_value"], rel=6e-3)
    assert ok == "yes"


def test_profile_strict_impossible_budget_exits_1(runner: CliRunner, tiny: Path) -> None:
    args = [
        "profile",
        "--model",
        "np_cli_models:build",
        "--recipe",
        FASTNAS,
        "--flops",
        "0.1%",
        "--input-shape",
        "1,3,16,16",
    ]
    relaxed = runner.invoke(app, args)
    assert relaxed.exit_code == 0, relaxed.output
    assert _row(relaxed.stdout, "flops")[-1] == "NO"
    strict = runner.invoke(app, [*args, "--strict"])
    assert_one_error(strict, "--strict: ", "flops")
    assert "Constraints" in strict.stdout  # the report is still printed


def test_profile_without_recipe_reports_the_plain_model(runner: CliRunner, tiny: Path) -> None:
    import torch

    from nasprune_cli.loading import load_entry_point
    from nasprune_cli.metrics.flops import fvcore_flops

    result = runner.invoke(
        app,
        [
            "profile",
            "--model",
            "np_cli_models:build",
            "--model-kwargs",
            "width=32",
            "--input-shape",
            "1,3,8,8",
            "--params",
            "1e9",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["converted"] is False and data["size"] == 1
    assert data["params"]["max"] == (3 * 32 * 9 + 32) + 2 * 32 + (32 * 32 * 9 + 32) + 2 * 32 + (32 * 10 + 10)
    model = load_entry_point("np_cli_models:build")(width=32)
    assert data["flops"]["max"] == fvcore_flops(model, torch.randn(1, 3, 8, 8))  # the --input-shape was used
    assert data["flops"]["max"] > 64 * (3 * 32 * 9 + 32 * 32 * 9)  # at least the two convs' multiply-adds
    assert data["constraints"] == [
        {"name": "params", "limit": 1e9, "min_value": data["params"]["min"], "satisfiable": True}
    ]


def test_unused_pattern_is_a_one_line_warning(runner: CliRunner, tiny: Path) -> None:
    recipe = write_recipe(tiny, "rules:\n  nn.Conv2d:\n    '*': {}\n    'backbone.*': null\n")
    result = runner.invoke(
        app, ["profile", "--model", "np_cli_models:build", "--recipe", str(recipe), "--input-shape", "1,3,8,8"]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings == ["Warning: recipe rule 'nn.Conv2d: backbone.*' matches no layer of the model"]


# ---- convert ----------------------------------------------------------------------------------------------------
def test_convert_saves_space_and_refuses_to_overwrite(runner: CliRunner, tiny: Path) -> None:
    from nasprune_cli.space_file import load_space

    out = tiny / "space.pt"
    args = [
        "convert",
        "--model",
        "np_cli_models:build",
        "--model-kwargs",
        "width=64",
        "--recipe",
        FASTNAS,
        "--input-shape",
        "1,3,16,16",
        "--output",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Search space" in result.stdout and "0.out_channels" in result.stdout
    assert "32, 64" in result.stdout
    assert f"wrote {out}" in result.stderr

    saved = load_space(out)
    assert saved["kind"] == "nasprune-space" and saved["format_version"] == 1
    assert saved["model"] == {"entry_point": "np_cli_models:build", "kwargs": {"width": 64}}
    assert saved["input"]["shape"] == [1, 3, 16, 16]
    assert saved["recipe"]["mode"] == "fastnas"
    assert saved["config"] and all(isinstance(v, int) for v in saved["config"].values())

    again = runner.invoke(app, args)
    assert_one_error(again, f"{out}: already exists (pass --overwrite to replace it)")

    replaced = runner.invoke(app, [*args, "--overwrite", "--json"])
    assert replaced.exit_code == 0, replaced.output
    data = json.loads(replaced.stdout)
    assert data["output"] == str(out)
    assert data["num_hparams"] == len(data["hparams"]) == len(saved["config"])
    assert {row["hparam"]: row["original"] for row in data["hparams"]} == saved["config"]
    assert data["frozen"] and data["frozen"][0]["reason"]


def test_convert_output_directory_must_exist(runner: CliRunner, tiny: Path) -> None:
    result = runner.invoke(
        app,
        [
            "convert",
            "--model",
            "np_cli_models:build",
            "--input-shape",
            "1,3,8,8",
            "--output",
            str(tiny / "no_dir" / "space.pt"),
        ],
    )
    assert_one_error(result, "does not exist")


# ---- real processes ---------------------------------------------------------------------------------------------
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)])}
    env.pop("NASPRUNE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nasprune_cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_subprocess_bad_recipe(tiny: Path) -> None:
    recipe = write_recipe(tiny, BAD_RECIPES["ratio_1.5"][0])
    proc = _run(["profile", "--model", "np_cli_models:build", "--recipe", str(recipe)], tiny)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: {recipe}: rules.nn.Conv2d.channels_ratio[1]: must be in (0, 1] (got 1.5)"
    ]


def test_subprocess_profile_json(tiny: Path) -> None:
    proc = _run(
        [
            "profile",
            "--model",
            "np_cli_models:build",
            "--recipe",
            FASTNAS,
            "--input-shape",
            "1,3,16,16",
            "--flops",
            "90%",
            "--json",
        ],
        tiny,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["converted"] is True and data["num_hparams"] >= 1
    assert data["constraints"][0]["satisfiable"] is True


def test_subprocess_debug_shows_traceback(tiny: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tiny)]), "NASPRUNE_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nasprune_cli", "profile", "--model", "np_cli_models:NOT_CALLABLE"],
        capture_output=True,
        text=True,
        cwd=tiny,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "LoadError" in proc.stderr


# ---- profile --explain ------------------------------------------------------------------------------------------
def test_profile_explain_a_prunable_and_a_frozen_layer(runner: CliRunner, tiny: Path) -> None:
    base = ["profile", "--model", "np_cli_models:build", "--recipe", FASTNAS, "--input-shape", "1,3,8,8"]
    conv = runner.invoke(app, [*base, "--explain", "3", "--json"])  # the second conv: 64 -> 64
    assert conv.exit_code == 0, conv.output
    data = json.loads(conv.stdout)
    assert data["layer"] == "3" and data["layer_type"] == "nn.Conv2d"
    created = next(g for g in data["groups"] if g["role"] == "creates")
    assert created["status"] == "prunable" and created["choices"] == [32, 64]
    assert {"4.features", "8.in"} <= set(created["coupled"])
    read = next(g for g in data["groups"] if g["role"] == "reads")
    assert read["group"] == "0.out_channels" and read["sources"] == ["0"]

    head = runner.invoke(app, [*base, "--explain", "8"])
    assert head.exit_code == 0, head.output
    assert "8 (nn.Linear)" in head.stdout
    assert "FROZEN" in head.stdout and "model output" in head.stdout


def test_profile_explain_unknown_layer(runner: CliRunner, tiny: Path) -> None:
    result = runner.invoke(
        app, ["profile", "--model", "np_cli_models:build", "--input-shape", "1,3,8,8", "--explain", "conv9"]
    )
    assert_one_error(result, "--explain: the model has no layer named 'conv9'")


def test_profile_explain_swin_attention_keeps_whole_heads(runner: CliRunner) -> None:
    args = ["profile", "--model", "torchvision.models:swin_t", "--recipe", FASTNAS, "--input-shape", "1,3,64,64"]
    result = runner.invoke(app, [*args, "--explain", "features.1.0.attn", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layer_type"] == "torchvision.ShiftedWindowAttention"
    (stream,) = data["groups"]
    assert stream["status"] == "prunable" and "whole heads of 32 channels" in stream["reason"]
    assert stream["choices"] == [32, 64, 96]  # 1, 2 or 3 heads of swin_t's first stage
