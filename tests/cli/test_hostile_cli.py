"""Hostile inputs to the CLI (issue 16): user code that shadows, exits, prints or is interrupted; YAML bombs; sizes
that do not fit; recipes that are huge or do nothing. Each ends in one `Error:` / `Warning:` line, never a hang or a
traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from nasprune_cli.errors import LoadError, RecipeError
from nasprune_cli.loading import load_entry_point, parse_kwargs
from nasprune_cli.recipe.load import load_recipe
from tests.cli.checks import assert_one_error, warning_lines

ROOT = Path(__file__).resolve().parents[2]
SHAPE = ["--input-shape", "1,3,8,8"]

MODELS = """
import os
import signal
import sys

import torch.nn as nn


def build(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )


def chatty() -> nn.Module:
    print("hello from the user's builder")
    return build()


def exit0() -> nn.Module:
    sys.exit(0)


def exit3() -> nn.Module:
    sys.exit(3)


def interrupted() -> nn.Module:
    raise KeyboardInterrupt


def interrupt_turned_into_error() -> nn.Module:
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, arriving while code that swallows it runs
        for _ in range(10_000_000):
            pass
    except KeyboardInterrupt:
        raise RuntimeError("cleanup failed after the interrupt") from None
    return build()
"""

# "billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings once expanded, 700 bytes of YAML
LEVELS = "abcdefghi"
BOMB = "\n".join(
    [f'{LEVELS[0]}: &{LEVELS[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{cur}: &{cur} [{','.join([f'*{prev}'] * 9)}]" for prev, cur in zip(LEVELS, LEVELS[1:], strict=False)]
)
FLOW_BOMB = (
    "[&a ["
    + ",".join(["lol"] * 9)
    + "], "
    + ", ".join(f"&{cur} [{','.join([f'*{prev}'] * 9)}]" for prev, cur in zip(LEVELS, LEVELS[1:], strict=False))
    + "]"
)


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with an importable `np_hostile` module, on sys.path."""
    (tmp_path / "np_hostile.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# ---- 2: files in the working directory do not shadow the tool's dependencies -----------------------------------
SHADOWS = {
    "fvcore.py": "open('SHADOWED_fvcore', 'w').close()\n",
    "tabulate.py": "open('SHADOWED_tabulate', 'w').close()\n",
    "yaml.py": "open('SHADOWED_yaml', 'w').close()\n",  # the recipe loader's YAML
}


def _shadow_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mymodule.py").write_text("from np_tiny_for_shadow import build\n")
    (work / "np_tiny_for_shadow.py").write_text(textwrap.dedent(MODELS))
    for name, text in SHADOWS.items():
        (work / name).write_text(text)
    return work


@pytest.mark.parametrize("how", ["console_script", "python_m"])
def test_cwd_files_do_not_shadow_dependencies(tmp_path: Path, how: str) -> None:
    """A fvcore.py / tabulate.py / yaml.py in the working directory never runs; `--model mymodule:build` works."""
    work = _shadow_dir(tmp_path)
    if how == "console_script":  # like the installed `nasprune`: sys.path[0] is the script's directory
        script = tmp_path / "bin" / "nasprune"
        script.parent.mkdir()
        script.write_text("import sys\nfrom nasprune_cli.cli.app import main\nsys.exit(main())\n")
        command = [sys.executable, str(script)]
    else:  # `python -m nasprune_cli`: Python puts the working directory first on sys.path
        command = [sys.executable, "-m", "nasprune_cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [*command, "profile", "--model", "mymodule:build", *SHAPE, "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["flops"]["max"] > 0
    assert sorted(p.name for p in work.glob("SHADOWED_*")) == []


def test_cwd_goes_last_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "np_cwd_module.py").write_text("VALUE = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "np_cwd_module", raising=False)
    assert load_entry_point("np_cwd_module:VALUE") == 42
    assert sys.path[-1] == str(tmp_path)
    assert sys.path.index(str(tmp_path)) == len(sys.path) - 1


# ---- 6: sys.exit in a model builder ------------------------------------------------------------------------------
@pytest.mark.parametrize(("builder", "code"), [("exit0", "0"), ("exit3", "3")])
def test_builder_calling_sys_exit_is_an_error(runner: CliRunner, models: Path, builder: str, code: str) -> None:
    result = runner.invoke(app, ["profile", "--model", f"np_hostile:{builder}", *SHAPE])
    assert_one_error(result, f"model builder 'np_hostile:{builder}' called sys.exit({code})")
    assert result.stdout == ""


def test_module_calling_sys_exit_on_import_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "np_exits_on_import.py").write_text("import sys\nsys.exit(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError, match=r"importing module 'np_exits_on_import' called sys.exit\(2\)"):
        load_entry_point("np_exits_on_import:build")


# ---- 7: user code that prints does not break --json --------------------------------------------------------------
def test_user_prints_go_to_stderr_json_stays_parseable(runner: CliRunner, models: Path) -> None:
    result = runner.invoke(app, ["profile", "--model", "np_hostile:chatty", *SHAPE, "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["flops"]["max"] > 0
    assert "hello from the user's builder" in result.stderr
    assert "hello" not in result.stdout
    assert sys.stdout is not sys.stderr  # restored after the command


def test_help_still_goes_to_stdout(runner: CliRunner) -> None:
    result = runner.invoke(app, ["profile", "--help"])
    assert result.exit_code == 0
    assert "--model" in result.stdout


# ---- 14: YAML alias bombs fail fast ------------------------------------------------------------------------------
def test_billion_laughs_recipe_fails_fast(runner: CliRunner, models: Path) -> None:
    recipe = models / "bomb.yaml"
    recipe.write_text(BOMB + "\ndescription: *i\n")
    start = time.monotonic()
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--recipe", str(recipe), *SHAPE])
    assert time.monotonic() - start < 30
    line = assert_one_error(result, f"{recipe}: line ", "more than 1,000,000 values once its aliases")
    assert len(line) < 400


def test_billion_laughs_model_kwargs_fails_fast(runner: CliRunner, models: Path) -> None:
    start = time.monotonic()
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--model-kwargs", f"width={FLOW_BOMB}"])
    assert time.monotonic() - start < 30
    line = assert_one_error(result, "--model-kwargs 'width=", "more than 1,000,000 values")
    assert len(line) < 400


def test_recipe_file_over_the_size_limit(tmp_path: Path) -> None:
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("description: '" + "x" * (9 * 2**20) + "'\n")
    with pytest.raises(RecipeError, match=r"huge.yaml: file is 9.0 MiB, a recipe may be at most 8 MiB"):
        load_recipe(recipe)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("description: &a [*a]\n")
    with pytest.raises(RecipeError, match="an alias refers to the collection that contains it"):
        load_recipe(recipe)


# ---- 15: validation messages instead of `unexpected ...` ---------------------------------------------------------
def test_seed_that_does_not_fit_torch(runner: CliRunner, models: Path) -> None:
    args = ["search", "--model", "np_hostile:build", *SHAPE, "--flops", "60%", "--seed", str(10**23)]
    result = runner.invoke(app, args)
    assert_one_error(result, "command line: search.seed: must fit torch's random generator", f"(got {10**23})")


def test_seed_written_as_float(runner: CliRunner, models: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "--model", "np_hostile:build", *SHAPE, "--flops", "60%", "--seed", "1e23"])
    assert result.exit_code == 2  # a usage error from the option's type
    assert "--seed" in result.stderr
    assert "unexpected" not in result.stderr
    recipe = tmp_path / "seed.yaml"
    recipe.write_text("search: {seed: 1e23}\n")
    with pytest.raises(RecipeError, match=r"search.seed: expected an integer \(got 1e\+23\)"):
        load_recipe(recipe)


@pytest.mark.parametrize(
    ("shape", "fragments"),
    [
        ("1,3,100000,100000", ("1x3x100000x100000 is 3e+10 elements (112 GiB as float32)", "100,000,000")),
        ("1,3,99999999999999999999", ("elements", "100,000,000")),
        ("1,3,224,224;1,3,10000,10000", ("1x3x224x224 + 1x3x10000x10000 is 3e+08 elements",)),
    ],
)
def test_input_shape_too_large_to_allocate(runner: CliRunner, models: Path, shape: str, fragments: tuple) -> None:
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--input-shape", shape])
    assert_one_error(result, "command line: input.shape: ", *fragments, "a dummy input may have; pass a smaller shape")


def test_input_shape_too_large_in_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "big.yaml"
    recipe.write_text("input: {shape: [1, 3, 100000, 100000]}\n")
    with pytest.raises(RecipeError, match=r"big.yaml: input.shape: 1x3x100000x100000 is 3e\+10 elements"):
        load_recipe(recipe)


def test_deeply_nested_recipe(runner: CliRunner, models: Path) -> None:
    recipe = models / "deep.yaml"
    recipe.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--recipe", str(recipe), *SHAPE])
    assert_one_error(result, f"{recipe}: line 1, column ", "nested deeper than 100 levels")


def test_deeply_nested_model_kwargs() -> None:
    with pytest.raises(LoadError, match="--model-kwargs 'width=.*': nested deeper than 100 levels"):
        parse_kwargs(["width=" + "[" * 5000 + "]" * 5000])


def test_ratio_written_with_an_exponent_is_a_number(tmp_path: Path) -> None:
    recipe = tmp_path / "exp.yaml"
    recipe.write_text("rules:\n  nn.Conv2d: {channels_ratio: [5e-06, 1E-1, 5.0e-1, 1]}\n")
    rule = load_recipe(recipe).rules["nn.Conv2d"]["*"]
    assert rule.channels_ratio == [5e-06, 0.1, 0.5, 1.0]


# ---- 16: huge recipes, budgets that prune nothing, Ctrl-C --------------------------------------------------------
def test_many_unmatched_rules_are_one_warning(runner: CliRunner, models: Path) -> None:
    recipe = models / "many.yaml"
    lines = ["rules:", "  nn.Conv2d:"] + [f"    'nomatch{i}.*': {{channels_ratio: [0.5, 1.0]}}" for i in range(10_000)]
    recipe.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--recipe", str(recipe), *SHAPE])
    assert result.exit_code == 0, result.stderr
    assert warning_lines(result.stderr) == [
        "Warning: 10000 recipe rules match no layer of the model: 'nn.Conv2d: nomatch0.*', 'nn.Conv2d: nomatch1.*', "
        "'nn.Conv2d: nomatch2.*' and 9997 more"
    ]


def test_budget_above_the_model_says_nothing_was_pruned(runner: CliRunner, models: Path) -> None:
    result = runner.invoke(app, ["search", "--model", "np_hostile:build", *SHAPE, "--flops", "1G", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["metrics"]["pruned"]["flops"] == summary["metrics"]["original"]["flops"]
    unpruned = [w for w in warning_lines(result.stderr) if "at or above the original model" in w]
    assert len(unpruned) == 1, result.stderr
    assert "flops <= 1e+09" in unpruned[0] and "nothing was pruned" in unpruned[0]


def test_budget_below_the_model_has_no_such_warning(runner: CliRunner, models: Path) -> None:
    result = runner.invoke(
        app, ["search", "--model", "np_hostile:build", "--model-kwargs", "width=64", *SHAPE, "--flops", "70%", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert not [w for w in warning_lines(result.stderr) if "at or above the original model" in w]


@pytest.mark.parametrize("builder", ["interrupted", "interrupt_turned_into_error"])
def test_keyboard_interrupt_is_exit_130(runner: CliRunner, models: Path, builder: str) -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a job started with `&` ignores SIGINT
    try:
        result = runner.invoke(app, ["profile", "--model", f"np_hostile:{builder}", *SHAPE])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_one_error(result, "Error: interrupted", code=130)


def test_input_shape_with_a_5000_digit_dimension(runner: CliRunner, models: Path) -> None:
    result = runner.invoke(app, ["profile", "--model", "np_hostile:build", "--input-shape", "1,3," + "9" * 5000])
    line = assert_one_error(result, "--input-shape: a dimension has more than 30 digits")
    assert len(line) < 200
