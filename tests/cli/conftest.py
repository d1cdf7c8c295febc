"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.fixture()
def runner() -> CliRunner:
    """Typer's runner, stdout and stderr kept apart."""
    return CliRunner()
