"""Training benchmark on table 1's task (ResNet20 on digits): fine-tuning losses, AutoNAS sampling, step cost.

Per baseline seed (trained like table 1's baselines):
  1. FastNAS (nasprune, default settings) at 30% and 50% FLOPs, then no fine-tune / CE / KD / CE+KD for the same
     epochs (`nasprune_cli.training.finetune`, SGD, cosine schedule).
  2. AutoNAS at 50% FLOPs: the space trained with sandwich sampling, with random sampling, or not trained, each
     searched by the evolve searcher with the same evaluations and fine-tuned the same way (CE+KD); and FastNAS on
     the untrained model fine-tuned for the space training's epochs plus the fine-tune's (the same data passes).
  3. Time per training step: the plain model (one forward / backward), the space's largest subnet, a random-sampling
     step and a sandwich step (four subnets), on CPU.
Test accuracy is reported as the mean over seeds with a 95% t-interval. Writes bench/results/training.json and
bench/results/training.md (included in BENCHMARKS.md by bench/report.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import digits_resnet20 as task  # noqa: E402
from common import RESULTS, quiet, set_threads, write_result  # noqa: E402

T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
LOSSES = ("none", "ce", "kd", "ce+kd")
AUTONAS = ("sandwich", "random", "untrained")


def recipe(mode: str) -> Any:
    """Table 1's rules (channel divisor 8 on convs, norms and the classifier)."""
    from nasprune_cli.recipe import recipe_from_dict

    rules = {"nn.Conv2d": {"channel_divisor": 8}, "nn.BatchNorm2d": {}, "nn.Linear": {"feature_divisor": 8}}
    return recipe_from_dict({"mode": mode, "rules": rules, "input": {"shape": [1, 1, 8, 8]}})


def train_batches(splits: task.Splits, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The train split in fixed batches (the training loop shuffles their order every epoch)."""
    return list(task.batches(splits.x_train, splits.y_train, batch_size, seed=1))


def tune(model: nn.Module, teacher: nn.Module, splits: task.Splits, loss: str, epochs: int, lr: float, seed: int):
    """Fine-tune a copy with nasprune's loop; returns (test accuracy, seconds)."""
    from nasprune_cli.training import TrainingData, TrainSettings, finetune

    model = copy.deepcopy(model)
    if loss == "none":
        return task.accuracy(model, splits.x_test, splits.y_test), 0.0
    data = TrainingData(train_batches(splits), lambda b: b[0], None, "digits", None)
    settings = TrainSettings(epochs=epochs, loss=loss, optimizer="sgd", lr=lr, weight_decay=5e-4, seed=seed)
    result = finetune(model, teacher if "kd" in loss else None, data, settings)
    return task.accuracy(result.model, splits.x_test, splits.y_test), result.log.seconds


def fastnas(baseline: nn.Module, target: float, splits: task.Splits, calib: list) -> nn.Module:
    """nasprune FastNAS (default settings, with the refit) at a FLOPs budget."""
    from nasprune_cli import search

    config = {"recipe": recipe("fastnas"), "score": task.val_score(splits), "data": calib, "max_batches": len(calib)}
    with quiet("training_fastnas"):
        return search(copy.deepcopy(baseline), {"flops": f"{target:g}%"}, task.dummy_input(), config).model


def autonas(
    baseline: nn.Module, sampling: str, splits: task.Splits, calib: list, args: argparse.Namespace, seed: int
) -> tuple[nn.Module, float]:
    """Convert, train the space (unless untrained), search it with evolve at 50%; returns (subnet, train seconds)."""
    from nasprune_cli import convert, search
    from nasprune_cli.training import TrainingData, TrainSettings, train_space

    space = convert(copy.deepcopy(baseline), recipe("autonas"), task.dummy_input())
    seconds = 0.0
    if sampling != "untrained":
        data = TrainingData(train_batches(splits), lambda b: b[0], None, "digits", None)
        settings = TrainSettings(
            epochs=args.space_epochs, loss="ce+kd", sampling=sampling, optimizer="sgd", lr=args.lr, seed=seed
        )
        seconds = train_space(space, data, settings).log.seconds
    config = {
        "score": task.val_score(splits),
        "data": calib,
        "max_batches": len(calib),
        "searcher": "evolve",
        "iterations": args.iterations,
        "reconstruct": False,
        "seed": seed,
    }
    with quiet("training_autonas"):
        return search(space, {"flops": "50%"}, task.dummy_input(), config).model, seconds


def step_times(baseline: nn.Module, splits: task.Splits, repeats: int) -> dict[str, float]:
    """Median ms per training step: plain model, the space's largest subnet, a random subnet, a sandwich step."""
    import torch.nn.functional as F

    from nasprune_cli import convert
    from nasprune_cli.training import TrainSettings
    from nasprune_cli.training.steps import random_step, sandwich_step

    batch = train_batches(splits)[0]
    plain = copy.deepcopy(baseline).train()
    space = convert(copy.deepcopy(baseline), recipe("autonas"), task.dummy_input())
    space.model.train()
    settings = TrainSettings(loss="ce")

    def plain_step(step: int) -> None:
        F.cross_entropy(plain(batch[0]), batch[1]).backward()

    def largest(step: int) -> None:
        space.select(space.max())
        F.cross_entropy(space.model(batch[0]), batch[1]).backward()

    runs = {
        "plain model": plain_step,
        "space, largest subnet": largest,
        "space, random sampling (1 subnet)": lambda s: random_step(space, batch, s, settings),
        "space, sandwich (4 subnets)": lambda s: sandwich_step(space, batch, s, settings),
    }
    out = {}
    for name, fn in runs.items():
        times = []
        for step in range(repeats):
            start = time.perf_counter()
            fn(step)
            times.append(1000 * (time.perf_counter() - start))
        out[name] = statistics.median(times[1:] or times)
    return out


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one baseline."""
    splits = task.load_splits()
    baseline, _ = task.trained_model(splits, epochs=args.epochs, seed=seed)
    calib = [(xb,) for xb in task.calib_batches(splits, 8)]
    row: dict[str, Any] = {"seed": seed, "baseline": task.accuracy(baseline, splits.x_test, splits.y_test)}
    for target in args.targets:
        pruned = fastnas(baseline, target, splits, calib)
        for loss in LOSSES:
            row[f"ft {target:g}% {loss}"] = tune(pruned, baseline, splits, loss, args.epochs_ft, args.lr, seed)[0]
        if target == 50:
            budget = args.space_epochs + args.epochs_ft
            acc, _ = tune(pruned, baseline, splits, "ce+kd", budget, args.lr, seed)
            row[f"fastnas {budget} epochs ce+kd"] = acc
    for sampling in AUTONAS:
        subnet, seconds = autonas(baseline, sampling, splits, calib, args, seed)
        row[f"autonas {sampling} searched"] = task.accuracy(subnet, splits.x_test, splits.y_test)
        row[f"autonas {sampling} tuned"] = tune(subnet, baseline, splits, "ce+kd", args.epochs_ft, args.lr, seed)[0]
        row[f"autonas {sampling} train s"] = seconds
    return row


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T_95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def render(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    rows, args = data["rows"], data["args"]
    n = len(rows)

    def cell(key: str) -> str:
        mean, half = interval([100 * r[key] for r in rows])
        return f"{mean:.1f}% ± {half:.1f}"

    out = [
        "## 4. Training: fine-tuning losses and AutoNAS (ResNet20 on digits)",
        "",
        f"Produced by `{data['command']}` on {data['date']}, {n} baseline seed(s) "
        f"({', '.join(str(r['seed']) for r in rows)}), trained like table 1's ({args['epochs']} epochs). Test "
        "accuracy, mean ± half-width of the 95% t-interval "
        f"over the seeds. Fine-tunes: nasprune's loop (`nasprune finetune`), SGD lr {args['lr']}, cosine schedule, "
        f"{args['epochs_ft']} epochs, KD temperature 4 from the unpruned baseline.",
        "",
        f"Unpruned baseline: {cell('baseline')}.",
        "",
        "| FLOPs target | no fine-tune | CE | KD | CE+KD |",
        "|---|---|---|---|---|",
    ]
    for target in args["targets"]:
        out.append(
            f"| {target:g}% (nasprune fastnas) | " + " | ".join(cell(f"ft {target:g}% {x}") for x in LOSSES) + " |"
        )
    budget = args["space_epochs"] + args["epochs_ft"]
    out += [
        "",
        f"AutoNAS at 50% FLOPs: the space trained {args['space_epochs']} epochs (CE+KD on the largest subnet), "
        f"searched by the evolve searcher ({args['iterations']} evaluations, no refit), then the same CE+KD fine-tune; "
        f"FastNAS (with its refit) on the untrained baseline fine-tuned {budget} epochs (the same data passes).",
        "",
        "| method | after the search | after the fine-tune | space training s |",
        "|---|---|---|---|",
    ]
    for sampling in AUTONAS:
        train_s = statistics.fmean(r[f"autonas {sampling} train s"] for r in rows)
        out.append(
            f"| AutoNAS, {sampling} | {cell(f'autonas {sampling} searched')} | {cell(f'autonas {sampling} tuned')} | "
            f"{train_s:.1f} |"
        )
    tuned = cell(f"fastnas {budget} epochs ce+kd")
    out.append(f"| FastNAS, {budget}-epoch CE+KD fine-tune | {cell('ft 50% none')} | {tuned} | 0 |")
    times = data["step_ms"]
    plain = times["plain model"]
    out += [
        "",
        "Time per training step (batch 64, CPU, 1 thread, median):",
        "",
        "| step | ms | vs the plain model |",
        "|---|---|---|",
        *(f"| {name} | {ms:.1f} | {ms / plain:.2f}x |" for name, ms in times.items()),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="baseline seeds 0..N-1")
    parser.add_argument("--targets", type=float, nargs="+", default=[50.0, 30.0])
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs (table 1's)")
    parser.add_argument("--epochs-ft", type=int, default=2, help="fine-tune epochs")
    parser.add_argument("--space-epochs", type=int, default=4, help="AutoNAS space training epochs")
    parser.add_argument("--iterations", type=int, default=60, help="evolve searcher evaluations")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="training")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    started = time.perf_counter()
    splits = task.load_splits()
    baseline, _ = task.trained_model(splits, epochs=args.epochs, seed=0)
    step_ms = step_times(baseline, splits, 12)
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):  # the results are written after every seed: a cut-short run keeps what it did
        rows.append(one_seed(seed, args))
        data = {"args": vars(args), "rows": rows, "step_ms": step_ms, "seconds": time.perf_counter() - started}
        path = write_result(args.name, data)
        (RESULTS / f"{args.name}.md").write_text(render(json.loads(path.read_text())) + "\n")
        print(f"seed {seed} done after {time.perf_counter() - started:.0f} s; wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
