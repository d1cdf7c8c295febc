"""The search path reads as its steps: no function in it is longer than about 60 lines (signature and docstring
left out), so an entry point is a list of named steps rather than one function that does everything."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nasprune_cli"
SEARCH_PATH = [
    *sorted((PACKAGE / "searching").glob("*.py")),
    PACKAGE / "checkpoint.py",
    PACKAGE / "space_file.py",
    PACKAGE / "fileio.py",
    PACKAGE / "cli" / "search.py",
]
MAX_BODY_LINES = 60


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return function.end_lineno - body[0].lineno + 1  # type: ignore[operator]


def long_functions(source: str) -> list[str]:
    """`function (N lines)` for every function whose body is over the limit."""
    return [
        f"{node.name} ({body_lines(node)} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_BODY_LINES
    ]


def test_the_measure_counts_the_body_only() -> None:
    source = 'def f(\n    a,\n    b,\n):\n    """Doc."""\n' + "    x = 1\n" * 61
    assert long_functions(source) == ["f (61 lines)"]
    assert long_functions(source.replace("    x = 1\n", "", 1)) == []


def test_no_long_function_in_the_search_path() -> None:
    assert all(path.is_file() for path in SEARCH_PATH)
    found = [f"{path.name}:{entry}" for path in SEARCH_PATH for entry in long_functions(path.read_text())]
    assert not found, found
