"""What every CLI test checks of a failed command: one `Error:` line, the exit status, no traceback."""

from __future__ import annotations

from typing import Any


def error_lines(stderr: str) -> list[str]:
    """The `Error: ...` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def warning_lines(stderr: str) -> list[str]:
    """The `Warning: ...` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("Warning: ")]


def assert_one_error(result: Any, *fragments: str, code: int = 1, bug: bool = False) -> str:
    """Exit status `code`, exactly one `Error:` line holding every fragment, no traceback; not the boundary's
    `unexpected ...` report of a bug unless `bug`. Returns the line."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
    if not bug:
        assert not any(line.startswith("Error: unexpected ") for line in lines), result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
