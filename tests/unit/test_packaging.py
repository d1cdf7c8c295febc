"""The project skeleton: the `nasprune` console script, the declared dependencies, the make targets CI runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_console_script_points_at_the_cli() -> None:
    module, _, attr = PROJECT["scripts"]["nasprune"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_dependencies_and_dev_extras() -> None:
    assert {"torch", "torchvision", "pyyaml", "typer", "rich", "pydantic", "fvcore"} <= names(PROJECT["dependencies"])
    assert "torch>=2.6" in PROJECT["dependencies"] and "pydantic>=2" in PROJECT["dependencies"]
    assert {"pytest", "ruff", "hypothesis"} <= names(PROJECT["optional-dependencies"]["dev"])


def test_make_targets_and_ci_entry_point() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("install", "test", "demo", "lint"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    assert "python3 -m venv" in makefile  # `make test` creates the venv itself
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def test_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "nasprune"
    if not script.exists():
        pytest.skip("nasprune is not installed in this environment (make install)")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(command in proc.stdout for command in ("convert", "profile", "search", "export"))


def test_the_shipped_recipes_are_package_data() -> None:
    """An installed nasprune (a wheel, not this checkout) finds `extends: fastnas` and `--recipe fastnas`."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = sorted(p.name for p in (ROOT / "nasprune_cli" / "recipe" / "shipped").glob("*.yaml"))
    assert package_data["nasprune_cli.recipe"] == ["shipped/*.yaml"]
    assert {"fastnas.yaml", "autonas.yaml", "demo.yaml"} <= set(shipped)
    assert sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")) == shipped  # the top-level folder links there
