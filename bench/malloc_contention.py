"""Why `nasprune` keeps freed memory: the same forward passes alone and with a second copy running, per allocator.

torchvision resnet18 (random init), one thread: 8 train-mode and 8 eval-mode forwards of 16 x 3 x 224 x 224 (what one
evaluation of bench/scale.py runs: the BN recalibration and the score), three repeats. Each mode runs one process
alone, then two at once; "caching" calls nasprune_cli.keep_freed_memory() first, "system" keeps glibc's defaults.
Records seconds per repeat, minor page faults per repeat and the peak resident memory.

Run: python bench/malloc_contention.py  (about 3 minutes on two idle cores; writes bench/results/malloc_contention.json)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import log, machine_info, write_result  # noqa: E402

REPEATS = 3


def child(mode: str) -> None:
    """One process: the forward passes, one JSON line of figures on stdout."""
    import resource
    import time

    import torch
    import torchvision

    from nasprune_cli.allocator import keep_freed_memory

    if mode == "caching" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() did not apply (not glibc?)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(16, 3, 224, 224, generator=gen) for _ in range(8)]
    seconds, faults = [], []
    with torch.no_grad():
        for _ in range(REPEATS):
            start, start_faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model.train()
            for x in data:
                model(x)
            model.eval()
            for x in data:
                model(x)
            seconds.append(round(time.perf_counter() - start, 2))
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    print(json.dumps({"seconds": seconds, "faults": faults, "peak_mib": peak}))


def run(mode: str, copies: int) -> list[dict]:
    """`copies` processes at once; their figures."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", mode], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(copies)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the {mode} child failed")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    rows = []
    for mode in ("system", "caching"):
        for copies in (1, 2):
            for i, figures in enumerate(run(mode, copies)):
                rows.append({"malloc": mode, "copies": copies, "process": i, **figures})
                log(f"{mode}, {copies} at once, process {i}: {figures}")
    write_result("malloc_contention", {"machine": machine_info(), "repeats": REPEATS, "runs": rows})


if __name__ == "__main__":
    main()
