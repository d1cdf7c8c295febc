"""The Typer app and the CLI's single error boundary (known errors -> 'Error: ...', exit 1)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from nasprune_cli import allocator
from nasprune_cli.cli import output
from nasprune_cli.errors import NasPruneError

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_COMMANDS = ("convert", "profile", "search", "export", "recipe", "report", "train", "finetune")


def debug_enabled() -> bool:
    """Whether NASPRUNE_DEBUG asks for tracebacks instead of one-line errors."""
    return os.environ.get("NASPRUNE_DEBUG", "").strip() not in ("", "0", "false", "no")


class GuardedGroup(TyperGroup):
    """Runs every command inside the error boundary, so CliRunner and the console script behave alike; while a
    command runs, sys.stdout is stderr and only nasprune's output goes to the real stdout (output.stdout_kept)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            if command.callback is not None:
                command.callback = output.keeping_stdout(command.callback)

    def invoke(self, ctx: Any) -> Any:
        with warnings.catch_warnings(), _watch_interrupts() as interrupted:
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (typer.Exit, typer.Abort, TyperException):
                raise  # Typer's own exits and usage errors (exit 2) are not ours to handle
            except KeyboardInterrupt:
                _interrupted()
            except NasPruneError as exc:
                if interrupted():
                    _interrupted()
                if debug_enabled():
                    raise
                output.error(str(exc))
                raise typer.Exit(1) from None
            except BrokenPipeError:
                raise  # stdout closed early (`nasprune ... | head`): click exits 1 quietly, no message is due
            except Exception as exc:  # noqa: BLE001 - the boundary: anything else is a bug, reported in one line
                if interrupted():  # Ctrl-C hit code that turned the KeyboardInterrupt into another error
                    _interrupted()
                if debug_enabled() or type(exc).__module__.startswith("typer."):
                    raise
                output.error(f"unexpected {type(exc).__name__}: {exc} (set NASPRUNE_DEBUG=1 for the traceback)")
                raise typer.Exit(1) from None


def _interrupted() -> NoReturn:
    """Report Ctrl-C (a KeyboardInterrupt) the way shells expect: one line, exit status 130."""
    output.error("interrupted")
    raise typer.Exit(130) from None


@contextmanager
def _watch_interrupts() -> Iterator[Callable[[], bool]]:
    """Note every SIGINT while a command runs (then raise KeyboardInterrupt, as Python does), so that an error that
    code raised while handling the interrupt (an import cut short, an `except BaseException`) is still reported as
    the interrupt; yields a function telling whether one came."""
    seen: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    watch = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not SIG_IGN (a background job) nor a user's
    )
    previous = signal.signal(signal.SIGINT, on_sigint) if watch else None
    try:
        yield lambda: bool(seen)
    finally:
        if watch:
            signal.signal(signal.SIGINT, previous)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any) -> None:
    """Show nasprune's warnings as one 'Warning: ...' line; third-party noise only with NASPRUNE_DEBUG."""
    if filename.startswith(_PACKAGE_DIR) or debug_enabled():
        output.warn(str(message))


app = typer.Typer(
    name="nasprune",
    cls=GuardedGroup,
    help="Structured pruning (FastNAS / AutoNAS) of PyTorch models to a FLOPs or params budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_commands() -> None:
    """Add every command via its module's register(app)."""
    for name in _COMMANDS:
        importlib.import_module(f"nasprune_cli.cli.{name}").register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: set the allocator (NASPRUNE_MALLOC), run the app (the boundary lives in
    GuardedGroup.invoke)."""
    try:
        allocator.configure(os.environ)
        app()
    except NasPruneError as exc:  # raised outside a command (e.g. while registering): same one-line format
        if debug_enabled():
            raise
        output.error(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside a command (while parsing the command line)
        output.error("interrupted")
        sys.exit(130)
