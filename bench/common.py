"""Shared helpers of the bench scripts: machine info, fvcore FLOPs, quiet peer calls, JSON results, peak RSS."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, load, library versions."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "malloc": malloc_mode(),
    }
    for dist in ("torchvision", "fvcore", "nvidia-modelopt", "torch-pruning", "nasprune"):
        try:
            from importlib.metadata import version

            info[dist] = version(dist)
        except Exception:  # noqa: BLE001 - a missing peer is reported as absent
            info[dist] = None
    return info


def fvcore_flops(model: nn.Module, dummy_input: torch.Tensor) -> float:
    """FLOPs as fvcore counts them (one per multiply-add), eval mode, batch of the dummy input."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, (dummy_input,))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            return float(analysis.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def quiet(log_name: str | None = None) -> Iterator[None]:
    """Silence a peer's prints, progress bars and warnings (appended to results/logs/<log_name>.log)."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            if log_name:
                LOGS.mkdir(parents=True, exist_ok=True)
                with open(LOGS / f"{log_name}.log", "a") as f:
                    f.write(buf.getvalue())


class Timer:
    """`with Timer() as t: ...; t.seconds` (perf_counter wall time)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident set size of this process now (VmRSS), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write results/<name>.json with the command line, machine info and date added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        **data,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def set_threads(threads: int) -> None:
    """Fix torch's intra-op threads (and inter-op to 1) so timings are comparable."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


# glibc keeps freed memory in the process instead of returning it to the OS (as a caching allocator such as jemalloc or
# tcmalloc does): by default every large activation is a fresh mmap, and its page faults swamp small models' forward
# time and move by 2x between processes (see BENCHMARKS.md, table 3)
CACHING_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def malloc_mode() -> str:
    """ "caching" when this process runs with CACHING_MALLOC, else "system"."""
    return "caching" if all(os.environ.get(k) == v for k, v in CACHING_MALLOC.items()) else "system"


def reexec_with_caching_malloc() -> None:
    """Restart this script with CACHING_MALLOC set (glibc reads it at start); no-op when set or not on glibc."""
    if malloc_mode() == "caching" or platform.libc_ver()[0] != "glibc":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CACHING_MALLOC})


def log(msg: str) -> None:
    """Progress line on stderr (stdout stays free)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
