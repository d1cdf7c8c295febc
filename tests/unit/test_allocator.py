"""The allocator setting: freed memory kept for reuse (no page faults per forward), NASPRUNE_MALLOC checked."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from nasprune_cli.allocator import configure, malloc_mode
from nasprune_cli.errors import NasPruneError

ROOT = Path(__file__).resolve().parents[2]
GLIBC = platform.libc_ver()[0] == "glibc"

# a fresh process (mallopt is process-wide): 10 forward passes whose activations (64 MiB each) are above glibc's
# largest mmap threshold; print the minor page faults of the last 8
_FAULTS = """
import resource, sys, torch
import nasprune_cli
if sys.argv[1] == "caching":
    assert nasprune_cli.keep_freed_memory()
torch.set_num_threads(1)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 1)
).eval()
x = torch.randn(8, 3, 256, 256)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.no_grad():
    for i in range(10):
        if i == 2:
            start = faults()
        model(x).sum()
print(faults() - start)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_memory_stops_the_page_faults_of_a_large_block() -> None:
    system, caching = _faults("system"), _faults("caching")
    pages = 8 * (64 << 20) // 4096
    assert system > pages  # glibc's default maps every activation afresh and unmaps it when freed
    # kept: the freed activations' memory is reused (at times the heap grows by a block as it fragments)
    assert caching < system // 8


def test_mode_from_the_environment() -> None:
    assert malloc_mode({}) == "caching"
    assert malloc_mode({"NASPRUNE_MALLOC": " System "}) == "system"
    assert configure({"NASPRUNE_MALLOC": "system"}) == "system"  # nothing applied
    with pytest.raises(NasPruneError) as info:
        malloc_mode({"NASPRUNE_MALLOC": "jemalloc"})
    message = str(info.value)
    assert "NASPRUNE_MALLOC='jemalloc'" in message and "caching, system" in message and "unset it" in message


def test_cli_refuses_a_bad_allocator_mode_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nasprune_cli", "recipe", "show", "fastnas"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NASPRUNE_MALLOC": "fast", "NASPRUNE_DEBUG": ""},
    )
    assert done.returncode == 1
    assert "NASPRUNE_MALLOC='fast'" in done.stderr and "Traceback" not in done.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "nasprune_cli", "recipe", "show", "fastnas"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NASPRUNE_MALLOC": "system"},
    )
    assert ok.returncode == 0, ok.stderr
