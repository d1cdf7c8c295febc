"""Scaling out on the CPU: one nasprune search across 1 and 2 processes (torchrun, gloo, one thread per process).

resnet18 (random init, seeded) at 224x224, with data: 8 batches of 16 random images (BN recalibration, the default
score and the weight refit run on them), FLOPs budget 50%, the binary (FastNAS) searcher. For every channel divisor
(more choices per hparam with a smaller one) and process count it records: the wall time of the whole search (the
torchrun command, start-up included, and the search() call alone), the evaluations and seconds per evaluation, the
subnet (it must be the same for every process count), and rank 0's time evaluating its share vs waiting in the gather
for the slowest rank, and the evaluations computed ahead that the search did not use. The weight refit is shared out
among the ranks (its batches and its ridge fits): its seconds on 1 and 2 processes are recorded apart.

Every process keeps freed memory for reuse, as `nasprune` does (nasprune_cli/allocator.py; --system-malloc: glibc's
default, under which every large activation is page-faulted in afresh and the two processes slow each other down).

Run: python bench/scale.py [--quick] [--divisors 64] [--system-malloc]
(--quick: 112x112, 4 batches of 8: about 5 minutes; full size, both divisors: about 45 minutes on two idle cores)
Writes bench/results/scale.json (scale_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import log, machine_info, write_result  # noqa: E402

FULL = {"size": 224, "batches": 8, "batch_size": 16, "divisors": [64, 32]}
QUICK = {"size": 112, "batches": 4, "batch_size": 8, "divisors": [64, 32]}


def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): build resnet18 and the data, search, rank 0 writes the figures."""
    import torchvision

    from nasprune_cli.allocator import keep_freed_memory
    from nasprune_cli.distributed import init_world
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching import search

    malloc = "system" if args.system_malloc else ("caching" if keep_freed_memory() else "system")  # as the CLI does
    torch.set_num_threads(1)
    world = init_world("cpu")
    start = time.perf_counter()
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.size, args.size)
    data = [
        (torch.randn(shape, generator=gen), torch.randint(0, 1000, (args.batch_size,), generator=gen))
        for _ in range(args.batches)
    ]
    recipe = load_recipe("fastnas", None, "bench/scale.py", sets=[f"defaults.divisor={args.divisor}"])
    config = {"recipe": recipe, "device": "cpu", "data": data, "max_batches": args.batches, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(model, {"flops": "50%"}, torch.randn(1, 3, args.size, args.size), config)
    seconds = time.perf_counter() - start
    if world.is_main:
        searched = result.state
        figures = {
            "search_s": round(seconds, 2),
            "evaluations": result.evaluations,
            "s_per_evaluation": round(
                (seconds - (result.reconstruction.seconds or 0.0)) / max(result.evaluations, 1), 3
            ),
            "hparams": len(result.config),
            "choices": sum(len(v) for v in searched["sensitivity_map"].values()) + len(result.config),
            "config": result.config,
            "score": result.pruned.score,
            "search_score": searched["best"]["score"],
            "flops_ratio": result.pruned.flops / result.original.flops,
            "parallel": result.parallel,
            "malloc": malloc,
            "refit_s": round(result.reconstruction.seconds or 0.0, 2),
            "search_without_refit_s": round(seconds - (result.reconstruction.seconds or 0.0), 2),
        }
        Path(args.out).write_text(json.dumps(figures))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(procs: int, divisor: int, shape: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Time one torchrun search with `procs` processes."""
    out = tmp / f"scale_{procs}_{divisor}.json"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(procs),
        "--master_port",
        str(free_port()),
        __file__,
        "--worker",
        "--out",
        str(out),
        "--divisor",
        str(divisor),
        "--size",
        str(shape["size"]),
        "--batches",
        str(shape["batches"]),
        "--batch-size",
        str(shape["batch_size"]),
        *(["--system-malloc"] if shape.get("system_malloc") else []),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    figures = json.loads(out.read_text())
    log(
        f"divisor {divisor}, {procs} process(es): {wall:.1f} s wall, {figures['search_s']} s search, "
        f"{figures['evaluations']} evaluations, parallel {figures['parallel']}"
    )
    return {"procs": procs, "divisor": divisor, "wall_s": round(wall, 2), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    parser.add_argument("--divisor", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--divisors", type=int, nargs="+", help="channel divisors to run (default: 64 32)")
    parser.add_argument("--name", help="results file name (default: scale, scale_quick)")
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default allocator (the CLI and this benchmark keep freed memory: nasprune_cli.allocator)",
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    shape = dict(QUICK if args.quick else FULL)
    if args.divisors:
        shape["divisors"] = args.divisors
    if args.system_malloc:
        shape["system_malloc"] = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for divisor in shape["divisors"]:
            for procs in (1, 2):
                rows.append(run(procs, divisor, shape, Path(tmp)))
    for divisor in shape["divisors"]:
        one, two = (next(r for r in rows if r["divisor"] == divisor and r["procs"] == p) for p in (1, 2))
        two["speedup_wall"] = round(one["wall_s"] / two["wall_s"], 2)
        two["speedup_search"] = round(one["search_s"] / two["search_s"], 2)
        two["speedup_without_refit"] = round(one["search_without_refit_s"] / two["search_without_refit_s"], 2)
        two["same_subnet"] = one["config"] == two["config"] and one["score"] == two["score"]
        two["speedup_refit"] = round(one["refit_s"] / max(two["refit_s"], 1e-9), 2)
        log(
            f"divisor {divisor}: speedup {two['speedup_wall']}x wall, {two['speedup_search']}x search, "
            f"{two['speedup_without_refit']}x without the refit, {two['speedup_refit']}x the refit; "
            f"same subnet: {two['same_subnet']}"
        )
    for row in rows:
        row["complete_map"] = complete_map(row["divisor"], shape["size"])
    name = args.name or ("scale_quick" if args.quick else "scale") + ("_system_malloc" if args.system_malloc else "")
    write_result(name, {"machine": machine_info(), "shape": shape, "runs": rows})


def complete_map(divisor: int, size: int) -> int:
    """The choices of every hparam (what "choices" counts when a complete sensitivity map scores them all; the
    budget map scores those the budget can reach)."""
    import torchvision

    from nasprune_cli.conversion import convert
    from nasprune_cli.recipe.load import load_recipe

    recipe = load_recipe("fastnas", None, "bench/scale.py", sets=[f"defaults.divisor={divisor}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = convert(torchvision.models.resnet18(), recipe, torch.randn(1, 3, size, size))
    return sum(len(hp.choices) for hp in space.hparams.values())  # as "choices": the maxima counted too


if __name__ == "__main__":
    main()
