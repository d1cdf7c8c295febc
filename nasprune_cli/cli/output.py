"""Terminal output: rich tables on stdout, one-line diagnostics on stderr, plain JSON for --json."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import IO, Any

import typer
from rich.console import Console
from rich.table import Table

_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))
_KEPT_STDOUT: list[IO[str]] = []  # the real stdout while `stdout_kept` sends sys.stdout to stderr


@contextmanager
def stdout_kept() -> Iterator[None]:
    """Inside the block, sys.stdout is stderr (so user code that prints cannot break the tables or the JSON) and
    nasprune's own output still goes to the real stdout."""
    real = sys.stdout
    _KEPT_STDOUT.append(real)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        _KEPT_STDOUT.pop()


def keeping_stdout(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run inside `stdout_kept` (a command's callback: its --help and usage errors are printed before it)."""
    if getattr(fn, "__stdout_kept__", False):
        return fn

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with stdout_kept():
            return fn(*args, **kwargs)

    run.__stdout_kept__ = True  # type: ignore[attr-defined]
    return run


def stdout() -> IO[str]:
    """nasprune's stdout: the real one, also while user code's prints are sent to stderr."""
    return _KEPT_STDOUT[-1] if _KEPT_STDOUT else sys.stdout


def console() -> Console:
    """A console on nasprune's stdout (wide when it is not a terminal, so tables are not squeezed)."""
    out = stdout()
    return Console(file=out, width=None if out.isatty() else 160, soft_wrap=False)


def print_table(table: Table) -> None:
    """Print a rich table on stdout."""
    console().print(table)


def print_text(text: str) -> None:
    """Print one line of plain text (no markup) on stdout."""
    typer.echo(text, file=stdout())


def print_json(obj: Any) -> None:
    """Print an object as plain JSON on stdout (no markup, full numbers)."""
    typer.echo(json.dumps(obj, indent=2, default=_jsonable), file=stdout())


def error(message: str) -> None:
    """Print 'Error: <message>' on stderr, on one line."""
    typer.echo(f"Error: {_one_line(message)}", err=True)


def warn(message: str) -> None:
    """Print 'Warning: <message>' on stderr, on one line."""
    typer.echo(f"Warning: {_one_line(message)}", err=True)


def info(message: str) -> None:
    """Print a diagnostic line on stderr."""
    typer.echo(_one_line(message), err=True)


def human(value: float, unit: str = "") -> str:
    """A count with three significant digits and an SI suffix: 1823000000 -> '1.82 G'."""
    if not math.isfinite(value):
        return str(value)
    for i, (scale, suffix) in enumerate(_UNITS):
        if abs(value) >= scale * 0.9995:
            text = f"{value / scale:.3g}"
            if float(text) >= 1000 and i > 0:  # 999.96 G rounds to 1000: show 1 T instead
                scale, suffix = _UNITS[i - 1]
                text = f"{value / scale:.3g}"
            return f"{text} {suffix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table; every cell is shown as plain text (no markup: layer names may contain brackets)."""
    tab = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        tab.add_column(col, overflow="fold")
    for row in rows:
        tab.add_row(*(_plain(c) for c in row))
    return tab


def _plain(cell: Any) -> Any:
    from rich.text import Text

    return cell if isinstance(cell, Text) else Text(str(cell))


def _one_line(message: str) -> str:
    return " ".join(str(message).split("\n")).strip()


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
