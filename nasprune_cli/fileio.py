"""Reading and writing nasprune's files: atomic writes, weights_only reads, the overwrite check, stable digests.

Every file nasprune writes holds only tensors, dicts, lists, str, int, float, bool and None, so every read uses
`torch.load(weights_only=True)` and never runs code from the file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from nasprune_cli.errors import CheckpointError

FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file next to `path`, then os.replace: readers never see a partial file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call write(f) on a temporary file next to `path`, then os.replace it there: readers never see a partial
    file, and temporaries of earlier writes that were killed are removed."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory '{path.parent}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _remove_stale_temporaries(path)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of `path` that a killed earlier write left behind (the file itself is complete)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def read_torch_file(path: Path, what: str) -> Any:
    """torch.load(weights_only=True) of a nasprune file, with one-line errors naming the file and `what` it is."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable nasprune {what} (the file is empty)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a text file, or a pickle of arbitrary objects (never run here)
        raise CheckpointError(
            f"{path}: not a readable nasprune {what} (not a torch.save file of tensors and plain values, the only "
            "content nasprune loads: torch.load(weights_only=True))"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupt / foreign files fail in many ways
        raise CheckpointError(
            f"{path}: not a readable nasprune {what} ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    return data


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else "no details"


def check_kind(path: Path, data: Any, kind: str, what: str) -> None:
    """Refuse a file of another kind or format version."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a nasprune {what} (kind {found!r}, expected {kind!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {data.get('format_version')!r} (this nasprune reads {FORMAT_VERSION})"
        )


def check_output(path: str | Path, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse an existing output file (unless overwrite) or a missing directory, before any work is done."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists (pass {flag} to replace it)")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory '{path.parent}' does not exist")


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
