"""Table 2, search overhead: nasprune vs modelopt FastNAS wall time on torchvision CNNs at 224 (random init).

Both get the same cheap score (one forward of one fixed 1x3x224x224 image, minus the output MSE against the
original model), the same single BN-calibration batch, their default FastNAS rules (ratios 0.05..1.0, divisor
32) and a 60% FLOPs budget. Each (model, method, repeat) runs in a fresh subprocess, methods alternating, so
neither pays for the other's imports or memory; after its imports and a small warm-up search (resnet18 at 64x64,
untimed) a run reports its search wall time, score calls, time inside the score's forward, and RSS: after the
imports, before the search, and the peak (VmHWM). A last pair of runs per framework is profiled with cProfile.
Run: python bench/overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    RESULTS,
    Timer,
    current_rss_mb,
    fvcore_flops,
    log,
    peak_rss_mb,
    quiet,
    set_threads,
    write_result,
)
from digits_resnet20 import recalibrate_bn  # noqa: E402

MODELS = ("resnet18", "resnet50", "mobilenet_v2")
FRAMEWORKS = ("nasprune", "modelopt")
BUDGET = "60%"


def build(name: str) -> nn.Module:
    """A torchvision model with random weights (seeded): no download."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


class ForwardScore:
    """-MSE of the output on one fixed image against the original output, relative to the output's mean square.

    Relative, so that score drops are O(0.1..1) and not below modelopt's 1e-5 "no drop" cut-off (random-init
    logits are tiny; with a raw MSE modelopt skips most of its sensitivity map). Times its own forward.
    """

    def __init__(self, model: nn.Module, size: int, calib: list, recalibrate: bool = False) -> None:
        self.calib = [b[0] for b in calib]
        self.recalibrate = recalibrate
        self.x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        reference = copy.deepcopy(model)
        recalibrate_bn(reference, [b[0] for b in calib])  # the unpruned model as both searchers will score it
        with torch.no_grad():
            self.ref = reference.eval()(self.x)
        self.scale = float((self.ref**2).mean())
        self.calls = 0
        self.forward_s = 0.0

    def __call__(self, model: nn.Module) -> float:
        if self.recalibrate:  # modelopt recalibrates BN itself only once its data queue holds 50 batches
            import modelopt.torch.nas as mtn

            with mtn.no_modelopt_patches():  # else its forward hook queues the batch (see quality.run_modelopt)
                recalibrate_bn(model, self.calib)
        model.eval()
        self.calls += 1
        start = time.perf_counter()
        with torch.no_grad():
            value = -float(((model(self.x) - self.ref) ** 2).mean()) / self.scale
        self.forward_s += time.perf_counter() - start
        return value


def search_once(framework: str, name: str, size: int) -> tuple[nn.Module, dict[str, Any]]:
    """One search from a plain model to a plain pruned model; returns it and the timing figures."""
    model = build(name)
    calib = [(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)),)]
    # modelopt skips BN recalibration unless its data queue holds 50 batches: the score does it (same batch)
    score = ForwardScore(model, size, calib, recalibrate=framework == "modelopt")
    dummy = torch.zeros(1, 3, size, size)
    rss_before = current_rss_mb()
    if framework == "nasprune":
        from nasprune_cli import search

        # the same work as modelopt's search: no least-squares refit of the weights afterwards
        config = {"score": score, "data": calib, "max_batches": 1, "searcher": "binary", "reconstruct": False}
        with Timer() as t, quiet(f"overhead_{framework}"):
            pruned = search(model, {"flops": BUDGET}, dummy, config=config).model
    else:
        import modelopt.torch.prune as mtp

        with tempfile.TemporaryDirectory() as tmp, Timer() as t, quiet(f"overhead_{framework}"):
            pruned, state = mtp.prune(
                model,
                mode="fastnas",
                constraints={"flops": BUDGET},
                dummy_input=dummy,
                config={
                    "score_func": score,
                    "data_loader": calib,
                    "max_iter_data_loader": 1,
                    "checkpoint": os.path.join(tmp, "search.pth"),
                    "verbose": False,
                },
            )
    return pruned, {
        "search_s": t.seconds,
        "score_calls": score.calls,
        "score_forward_s": score.forward_s,
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak_rss_mb(),
    }


def one(framework: str, name: str, size: int, out: Path, profile: bool, threads: int) -> None:
    """Child process: warm up (imports, one small search), run one search (maybe profiled), write its JSON."""
    set_threads(threads)
    with quiet():  # imports and their one-time warnings are not part of the search
        if framework == "modelopt":
            import modelopt.torch.prune  # noqa: F401
        else:
            import nasprune_cli.searching  # noqa: F401
        import torchvision  # noqa: F401
    rss_imports = current_rss_mb()
    search_once(framework, "resnet18", 64)  # warm-up: one-time lazy imports and caches are not measured
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    pruned, figures = search_once(framework, name, size)
    if prof is not None:
        prof.disable()
        figures["profile"] = _profile_summary(prof)
    figures["rss_imports_mb"] = rss_imports
    dummy = torch.zeros(1, 3, size, size)
    figures["flops_ratio"] = fvcore_flops(pruned, dummy) / fvcore_flops(build(name), dummy)
    out.write_text(json.dumps(figures))


def _profile_summary(prof: cProfile.Profile, top: int = 25) -> dict[str, Any]:
    """Top entries by cumulative time (text) plus the biggest self-time functions (structured)."""
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short_path(filename)}:{line}({func})",
                "calls": ncalls,
                "self_s": tottime,
                "cum_s": cumtime,
            }
        )
    rows.sort(key=lambda r: -r["self_s"])
    return {"total_s": stats.total_tt, "by_self_time": rows[:top], "cumulative_text": text.getvalue()}  # type: ignore[attr-defined]


def _short_path(filename: str) -> str:
    root = str(Path(__file__).resolve().parents[1]) + "/"
    for marker in ("site-packages/", root, "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def run_child(framework: str, name: str, args: argparse.Namespace, profile: bool = False) -> dict[str, Any]:
    """Run `one` in a fresh interpreter and read its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--one",
            framework,
            name,
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
            "--out",
            str(out),
        ] + (["--profile"] if profile else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{framework} on {name} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: resnet18 at 64x64, one repeat")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="runs per model and framework (median reported)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the cores are shared; see BENCHMARKS.md)"
    )
    parser.add_argument("--profile-model", default="resnet18", help="model whose searches are profiled ('' = none)")
    parser.add_argument("--name", default="overhead")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_threads(args.threads)  # the children set it too; here it makes the recorded machine info right
    if args.one:
        one(args.one[0], args.one[1], args.size, args.out, args.profile, args.threads)
        return 0
    if args.quick:
        args.models, args.size, args.repeats, args.name = ["resnet18"], 64, 1, f"{args.name}_quick"

    rows = []
    for name in args.models:
        runs: dict[str, list[dict[str, Any]]] = {f: [] for f in FRAMEWORKS}
        for rep in range(args.repeats):
            order = FRAMEWORKS if rep % 2 == 0 else FRAMEWORKS[::-1]
            for framework in order:
                log(f"{framework} on {name} (repeat {rep + 1}/{args.repeats})")
                result = run_child(framework, name, args)
                log(f"  {result['search_s']:.1f}s, {result['score_calls']} scores, flops {result['flops_ratio']:.3f}")
                runs[framework].append(result)
        row: dict[str, Any] = {"model": name}
        for framework, results in runs.items():
            row[framework] = {
                "search_s": statistics.median(r["search_s"] for r in results),
                "search_s_all": [r["search_s"] for r in results],
                "score_calls": results[0]["score_calls"],
                "score_forward_s": statistics.median(r["score_forward_s"] for r in results),
                "rss_before_mb": max(r["rss_before_mb"] for r in results),
                "rss_imports_mb": max(r["rss_imports_mb"] for r in results),
                "rss_peak_mb": max(r["rss_peak_mb"] for r in results),
                "flops_ratio": results[0]["flops_ratio"],
            }
        row["time_ratio"] = row["nasprune"]["search_s"] / row["modelopt"]["search_s"]
        rows.append(row)

    profiles = {}
    if args.profile_model:
        for framework in FRAMEWORKS:
            log(f"profiling {framework} on {args.profile_model}")
            result = run_child(framework, args.profile_model, args, profile=True)
            profiles[framework] = {"model": args.profile_model, **result["profile"]}
            text_path = RESULTS / f"{args.name}_profile_{framework}_{args.profile_model}.txt"
            text_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.write_text(result["profile"]["cumulative_text"])
    settings = {k: v for k, v in vars(args).items() if k not in ("one", "out", "profile", "name")}
    settings.update({"budget": BUDGET, "score": "-MSE of one 1x3xHxW forward vs the original", "calib_batches": 1})
    path = write_result(args.name, {"settings": settings, "rows": rows, "profiles": profiles})
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
