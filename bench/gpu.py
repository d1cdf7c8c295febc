"""On a GPU machine: nasprune on the GPU vs modelopt FastNAS on the same GPU vs nasprune on the CPU.

resnet50 (random init, seeded) at 224x224, data: 8 batches of 32 random images, FLOPs budget 50%, FastNAS (binary)
in both tools, the same score in both (minus the relative mean squared error of the outputs against the original
model's on the data batches; BN recalibrated on the same batches before every score), no weight refit (modelopt has
none). Each arm runs in a fresh process; the wall time of the search (prune) call is measured with the GPU
synchronised, and the pruned model's FLOPs ratio and score are recorded.

Run (a prepared script; it cannot run without a GPU): python bench/gpu.py            -> bench/results/gpu.json
Check it on the CPU:  python bench/gpu.py --dry-run  (resnet18 at 64x64, 2 batches of 4, every arm on the CPU)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import fvcore_flops, log, machine_info, write_result  # noqa: E402

FULL = {"model": "resnet50", "size": 224, "batches": 8, "batch_size": 32}
DRY = {"model": "resnet18", "size": 64, "batches": 2, "batch_size": 4}
ARMS = ("nasprune-gpu", "modelopt-gpu", "nasprune-cpu")
BUDGET = 0.5


class OutputScore:
    """-MSE of the model's outputs on the batches against the original's, relative to their mean square."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor], recalibrate: bool) -> None:
        from nasprune_cli.metrics.score import recalibrate_bn

        self.batches, self.recalibrate = batches, recalibrate
        reference = copy.deepcopy(model)
        recalibrate_bn(reference, batches, lambda b: b)
        with torch.no_grad():
            self.refs = [reference.eval()(x) for x in batches]
        self.scale = sum(float((r**2).mean()) for r in self.refs) / len(self.refs)
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        from nasprune_cli.metrics.score import recalibrate_bn

        if self.recalibrate:  # modelopt recalibrates BN only once its data queue holds 50 batches
            import modelopt.torch.nas as mtn

            with mtn.no_modelopt_patches():
                recalibrate_bn(model, self.batches, lambda b: b)
        self.calls += 1
        model.eval()
        with torch.no_grad():
            err = sum(float(((model(x) - r) ** 2).mean()) for x, r in zip(self.batches, self.refs, strict=True))
        return -err / len(self.batches) / self.scale


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def arm(name: str, shape: dict[str, Any], device_name: str, out: Path) -> None:
    """One arm in this process: build, search / prune, time it, write the figures."""
    import torchvision

    device = torch.device(device_name)
    torch.manual_seed(0)
    model = getattr(torchvision.models, shape["model"])().to(device)
    gen = torch.Generator().manual_seed(0)
    size, bs = shape["size"], shape["batch_size"]
    batches = [torch.randn(bs, 3, size, size, generator=gen).to(device) for _ in range(shape["batches"])]
    dummy = torch.randn(1, 3, size, size, generator=gen).to(device)
    score = OutputScore(model, batches, recalibrate=name.startswith("modelopt"))
    original_flops = fvcore_flops(copy.deepcopy(model).cpu(), dummy.cpu())
    synchronize(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = _search(name, model, dummy, batches, score, device_name)
    synchronize(device)
    seconds = time.perf_counter() - start
    pruned = pruned.to(device)
    figures = {
        "arm": name,
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "search_s": round(seconds, 2),
        "score_calls": score.calls,
        "flops_ratio": fvcore_flops(copy.deepcopy(pruned).cpu(), dummy.cpu()) / original_flops,
        "score": score(pruned),
    }
    out.write_text(json.dumps(figures))


def _search(name: str, model: nn.Module, dummy: torch.Tensor, batches: list, score: Any, device: str) -> nn.Module:
    data = [(x,) for x in batches]  # both tools take a batch's first element as the model input
    if name.startswith("nasprune"):
        from nasprune_cli import search

        config = {
            "score": score,
            "data": data,
            "max_batches": len(data),
            "searcher": "binary",
            "reconstruct": False,
            "device": device,
        }
        return search(model, {"flops": f"{BUDGET:.0%}"}, dummy, config=config).model
    import modelopt.torch.prune as mtp

    with tempfile.TemporaryDirectory() as tmp:
        pruned, _ = mtp.prune(
            model,
            mode="fastnas",
            constraints={"flops": f"{BUDGET:.0%}"},
            dummy_input=dummy,
            config={
                "score_func": score,
                "data_loader": data,
                "max_iter_data_loader": len(batches),
                "checkpoint": os.path.join(tmp, "search.pth"),
                "verbose": False,
            },
        )
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every arm on the CPU with a small model")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    shape = DRY if args.dry_run else FULL
    if args.arm:
        on_gpu = args.arm.endswith("gpu") and not args.dry_run
        arm(args.arm, shape, "cuda" if on_gpu else "cpu", Path(args.out))
        return
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); try --dry-run")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ARMS:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, __file__, "--arm", name, "--out", str(out)]
            command += ["--dry-run"] if args.dry_run else []
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(out.read_text()))
            log(f"{name}: {rows[-1]}")
    write_result("gpu_dry_run" if args.dry_run else "gpu", {"machine": machine_info(), "shape": shape, "arms": rows})


if __name__ == "__main__":
    main()
