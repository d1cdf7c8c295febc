"""Reading and writing nasprune's files: atomic writes, weights_only reads, the output check, schema checks,
checksums, stable digests and the lock of a file in use.

Every file nasprune writes holds only tensors, dicts, lists, str, int, float, bool and None, so every read uses
`torch.load(weights_only=True)` and never runs code from the file. Nothing a file names is ever called.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from pydantic import BaseModel, ValidationError

from nasprune_cli.errors import CheckpointError, NasPruneError
from nasprune_cli.loading import short_repr

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, files are not locked
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip archive
_PICKLE_MAGIC = b"\x80"  # the legacy torch.save format starts with a pickle protocol byte


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file next to `path`, then os.replace: readers never see a partial file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call write(f) on a temporary file next to `path`, then os.replace it there: readers never see a partial
    file, and temporaries of earlier writes that were killed are removed."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory '{path.parent}' does not exist")
    try:
        tmp = temp_file_for(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc}") from exc
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    _remove_stale_temporaries(path)
    return path


def temp_file_for(path: Path) -> Path:
    """A new empty temporary file next to `path` (to os.replace it there), with the mode a file created under the
    current umask gets (mkstemp's is always 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, normal_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def normal_file_mode() -> int:
    """0o666 less the process's umask: the mode open() gives a new file."""
    with contextlib.suppress(OSError, ValueError):  # Linux shows it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)  # elsewhere reading the umask means setting it; set it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of `path` that a killed earlier write left behind (the file itself is complete)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def read_torch_file(path: Path, what: str) -> Any:
    """torch.load(weights_only=True) of a nasprune file, with one-line errors naming the file and `what` it is."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a nasprune {what} (a file); pass the file's path")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    if not head:
        raise CheckpointError(f"{path}: not a readable nasprune {what} (the file is empty)")
    if head != _ZIP_MAGIC and not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path}: not a readable nasprune {what} (it starts with {head!r}, not a file written by torch.save; "
            "is it a text file?); pass the file nasprune wrote"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle of arbitrary objects (never run here), or a damaged one
        raise CheckpointError(
            f"{path}: not a readable nasprune {what} (not a torch.save file of tensors and plain values, the only "
            "content nasprune loads: torch.load(weights_only=True))"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - truncated / damaged archives fail in many ways
        raise CheckpointError(
            f"{path}: damaged {what}: the torch.save archive cannot be read, it is truncated or corrupted "
            f"({type(exc).__name__}: {_first_line(exc)}); use an intact copy or write the file again"
        ) from exc
    return data


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else "no details"


def read_nasprune_file(
    path: Path, kind: str, what: str, schema: type[BaseModel], hint: str, *, checksum: bool = True
) -> dict[str, Any]:
    """Read a file nasprune wrote and check its kind and format version, its checksum and every field it holds."""
    data = read_torch_file(path, what)
    check_kind(path, data, kind, what)
    if checksum:
        verify_checksum(path, data, what)
    validate_schema(schema, data, path, what, hint)
    return data


def check_kind(path: Path, data: Any, kind: str, what: str) -> None:
    """Refuse a file of another kind or format version."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a nasprune {what} (kind {found!r}, expected {kind!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {data.get('format_version')!r} (this nasprune reads {FORMAT_VERSION})"
        )


def check_output(
    path: str | Path,
    overwrite: bool,
    flag: str = "--overwrite",
    *,
    inputs: Mapping[str, str | Path | None] | None = None,
) -> None:
    """Refuse, before any work is done, an output that cannot be written or must not be: an existing file (unless
    overwrite), a directory, a missing or unwritable directory, or the same file as one of `inputs` ({flag: path}).
    """
    path = Path(path)
    for name, other in (inputs or {}).items():
        if other is not None and _same_file(path, Path(other)):
            raise CheckpointError(
                f"{path}: is also the {name} file this command reads; write to another path (the output must not "
                "replace an input)"
            )
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a file path to write (e.g. {path / 'out.pt'})")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists (pass {flag} to replace it)")
    parent = path.parent
    if not parent.exists():
        raise CheckpointError(f"{path}: directory '{parent}' does not exist (create it first)")
    if not parent.is_dir():
        raise CheckpointError(f"{path}: '{parent}' is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: directory '{parent}' is not writable; choose a directory you can write to")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after resolving links and '..'; hard links too when both exist)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def validate_schema(
    schema: type[BaseModel],
    data: Any,
    path: Path | str,
    what: str,
    hint: str,
    *,
    error: type[NasPruneError] = CheckpointError,
    problem: str = "invalid",
    show: Callable[[Any], str] | None = None,
) -> Any:
    """What a file holds, checked against a pydantic schema (the validated model); the error names the file and the
    first bad field, and shows the bad value with `show` (default: a short repr; a JSON file passes short_json)."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        field = _field_path(first["loc"])
        where = f"field {field}: " if field else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        shown = first["type"] != "missing" and (field or first["type"] != "value_error")  # not the whole file again
        got = f" (got {(show or _show)(first.get('input'))})" if shown else ""
        raise error(f"{path}: {problem} {what}: {where}{_message(first)}{got}{more}; {hint}") from None


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in str(part):
            continue  # pydantic's names of union members and validators, e.g. "list[int]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg[:1].lower() + msg[1:]


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return short_repr(value, 60)


def add_checksum(data: Mapping[str, Any]) -> dict[str, Any]:
    """The file content with "sha256": the checksum of everything else in it."""
    body = {k: v for k, v in data.items() if k != "sha256"}
    return {**body, "sha256": content_sha256(body)}


def verify_checksum(path: Path, data: Mapping[str, Any], what: str) -> None:
    """Refuse a file whose content does not match its "sha256"; a file without one (written before nasprune stored
    checksums) is read with a warning, since damage to it cannot be detected."""
    stored = data.get("sha256")
    if stored is None:
        warnings.warn(
            f"{path}: this {what} has no checksum (written by an older nasprune), so damage to it cannot be detected",
            stacklevel=4,
        )
        return
    if stored != content_sha256({k: v for k, v in data.items() if k != "sha256"}):
        raise CheckpointError(
            f"{path}: damaged {what}: its content does not match the sha256 checksum stored in it (the file was "
            "corrupted or edited after it was written); use an intact copy or write it again"
        )


def content_sha256(obj: Any) -> str:
    """sha256 of a file's content (tensors, dicts, lists, str, int, float, bool, None), independent of how
    torch.save laid it out: tensors by dtype, shape and bytes, mappings in sorted key order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{list(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


@contextlib.contextmanager
def exclusive_lock(path: Path, hint: str) -> Iterator[Path]:
    """Hold an exclusive lock (fcntl.flock on `<path>.lock`) for the with-block; CheckpointError with `hint` when
    another process or handle holds it. The lock file holds the owner's pid and is removed on release."""
    lock = path.with_name(f"{path.name}.lock")
    if fcntl is None:  # pragma: no cover - no advisory locks on this platform
        yield lock
        return
    fd = _acquire(lock, path, hint)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # before unlocking: a waiter that opened this file sees it is gone and retries
        os.close(fd)  # releases the lock


def _acquire(lock: Path, path: Path, hint: str) -> int:
    """Open and lock `lock`; retried when the previous holder removed the file between our open and our lock."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, normal_file_mode())
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot create the lock file {lock} ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(f"{path}: in use by another process (pid {holder} holds {lock}); {hint}") from None
        except OSError as exc:
            os.close(fd)
            raise CheckpointError(f"{path}: cannot lock {lock} ({exc.strerror or exc})") from exc
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
