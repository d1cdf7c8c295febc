"""Table 1, quality at equal FLOPs: ResNet20 on digits pruned to 50% / 30% of its FLOPs by each method.

Methods, each on its own copy of the same trained baseline:
  nasprune          nasprune_cli.search, FastNAS (binary searcher, default settings: the kept weights are refitted
                    by least squares on the calibration batches after the search)
  nasprune-norefit  the same with reconstruct=False: the kept weights as they were (the search alone)
  nasprune-norival  the same with rival_floor=0: no balanced rival (threshold and descent subnets only)
  nasprune-floor    width_floor=0.5: no layer narrower than half its width in the uniform prune, in every step
                    (not run by default: --methods ... nasprune-floor)
  nasprune-v1       the first version's defaults: sensitivity=full, descent=False (fill on), no refit
  nasprune-seed     the same with fill=False: the plain threshold subnet (the seed algorithm, as modelopt does it)
  modelopt          modelopt.torch.prune fastnas, the budget as a percentage (its FLOP unit is not fvcore's)
  torch-pruning     Torch-Pruning, L1 magnitude, one uniform ratio found by bisection on fvcore FLOPs, widths
                    rounded to the shared divisor (the same widths the searchers may pick)
  torch-pruning-r1  the same without rounding (finer FLOPs steps: the stronger uniform baseline)
  nasprune-consumer nasprune with importance=consumer (not run by default: --methods ... nasprune-consumer)
Shared: the channel divisor, the score function (validation accuracy), the BN-calibration batches. Every pruned
model gets the same BN recalibration, then the same short fine-tune. FLOPs are counted by fvcore on the final
plain model. A second part repeats the comparison on baselines trained with other seeds (--robust-seeds, the
same fine-tunes): one baseline's after-pruning accuracy swings by several points with small changes of the subnet.
A third part (--sweep-lrs) fine-tunes nasprune, the two stronger peers and the unpruned baseline at other learning
rates as well: the fine-tune column depends on the fine-tune, and the unpruned model shows what it can recover.
Run: python bench/quality.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import digits_resnet20 as task  # noqa: E402
from common import Timer, count_params, fvcore_flops, log, quiet, set_threads, write_result  # noqa: E402

METHODS = (
    "nasprune",
    "nasprune-norefit",
    "nasprune-norival",
    "nasprune-v1",
    "nasprune-seed",
    "modelopt",
    "torch-pruning",
    "torch-pruning-r1",
)
OPTIONAL_METHODS = ("nasprune-floor", "nasprune-consumer")
ROBUST_METHODS = ("nasprune", "nasprune-norefit", "nasprune-v1", "modelopt", "torch-pruning-r1")
# the fine-tune learning-rate sweep: these methods and the unpruned baseline, fine-tuned at every sweep rate too
SWEEP_METHODS = ("nasprune", "modelopt", "torch-pruning-r1")
# search settings of the nasprune rows (defaults for the rest)
NASPRUNE_SETTINGS: dict[str, dict[str, Any]] = {
    "nasprune": {},
    "nasprune-norefit": {"reconstruct": False},
    "nasprune-norival": {"rival_floor": 0.0},
    "nasprune-floor": {"width_floor": 0.5},
    "nasprune-v1": {
        "importance": "magnitude",
        "sensitivity": "full",
        "descent": False,
        "fill": True,
        "reconstruct": False,
    },
    "nasprune-seed": {
        "importance": "magnitude",
        "sensitivity": "full",
        "descent": False,
        "fill": False,
        "reconstruct": False,
    },
    "nasprune-consumer": {"importance": "consumer"},
}


@dataclass
class Pruned:
    """A method's pruned plain model and what the search cost."""

    model: nn.Module
    search_s: float
    evaluations: int
    extra: dict[str, Any] = field(default_factory=dict)


# ---- methods -----------------------------------------------------------------------------------------------
def nasprune_recipe(divisor: int) -> Any:
    """FastNAS rules with the benchmark's channel divisor for every type the ResNet uses."""
    from nasprune_cli.recipe import recipe_from_dict

    rules = {
        "nn.Conv2d": {"channel_divisor": divisor},
        "nn.BatchNorm2d": {"feature_divisor": divisor},
        "nn.Linear": {"feature_divisor": divisor},
    }
    return recipe_from_dict({"mode": "fastnas", "rules": rules})


def run_nasprune(
    model: nn.Module, flops_pct: float, score: task.CountingScore, calib: list, divisor: int, settings: dict[str, Any]
) -> Pruned:
    """nasprune_cli.search (FastNAS binary searcher) under a FLOPs budget given as a percentage."""
    from nasprune_cli import search

    config = {
        "recipe": nasprune_recipe(divisor),
        "score": score,
        "data": calib,
        "max_batches": len(calib),
        "searcher": "binary",
        **settings,
    }
    with Timer() as t, quiet("quality_nasprune"):
        result = search(model, {"flops": f"{flops_pct:g}%"}, task.dummy_input(), config=config)
    pruned, state = result.model, result.state
    winner = next((c["source"] for c in state["candidates"] if c["config"] == state["best"]["config"]), None)
    refit = result.reconstruction.to_dict()
    extra = {
        "searcher_evaluations": state["evaluations"],
        "settings": settings,
        "winner": winner,
        "refit": {k: refit[k] for k in ("applied", "reason", "score_before", "score_after", "seconds") if k in refit},
    }
    return Pruned(pruned, t.seconds, score.calls, extra)


def modelopt_rules(divisor: int) -> dict[str, Any]:
    """modelopt fastnas rules with the same divisor (its default ratios 0.05..1.0 equal nasprune's)."""
    return {
        "nn.Conv2d": {"*": {"channel_divisor": divisor}},
        "nn.BatchNorm2d": {"*": {"feature_divisor": divisor}},
        "nn.Linear": {"*": {"feature_divisor": divisor}},
    }


def run_modelopt(model: nn.Module, flops_pct: float, score: task.CountingScore, calib: list, divisor: int) -> Pruned:
    """modelopt.torch.prune.prune(mode fastnas), BN recalibrated on the same batches before every score.

    modelopt recalibrates BN before a score only once its data queue holds 50 batches; with fewer it warns
    ("modelopt data queue not filled") and scores every subnet with the full model's statistics. The score
    function therefore recalibrates on the shared batches itself, exactly as nasprune does before each score,
    with modelopt's patches off (its train-mode forward hook would otherwise queue these batches, and once 50 are
    queued modelopt recalibrates on all 50 again inside `model.eval()`).
    """
    import modelopt.torch.nas as mtn
    import modelopt.torch.prune as mtp

    images = [b[0] for b in calib]

    def recalibrated_score(m: nn.Module) -> float:
        with mtn.no_modelopt_patches():
            task.recalibrate_bn(m, images)
        return score(m)

    with tempfile.TemporaryDirectory() as tmp, Timer() as t, quiet("quality_modelopt"):
        pruned, state = mtp.prune(
            model,
            mode=[("fastnas", modelopt_rules(divisor))],
            constraints={"flops": f"{flops_pct:g}%"},
            dummy_input=task.dummy_input(),
            config={
                "score_func": recalibrated_score,
                "data_loader": calib,
                "max_iter_data_loader": len(calib),
                "checkpoint": os.path.join(tmp, "modelopt_search.pth"),
                "verbose": False,
            },
        )
    plain = _plain_copy(pruned)
    return Pruned(plain, t.seconds, score.calls, {"modelopt_flops_unit": "2 x MACs, BN ignored (torchprofile)"})


def _plain_copy(model: nn.Module) -> nn.Module:
    """A fresh ResNet20 with the pruned shapes and weights (drops modelopt's patched methods and metadata)."""
    plain = task.ResNet20()
    for name, module in list(plain.named_modules()):
        src = model.get_submodule(name) if name else model
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding, bias=src.bias is not None
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(src.num_features)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(src.in_features, src.out_features)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(plain.get_submodule(parent) if parent else plain, attr, new)
    plain.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()}, strict=True)
    return plain.eval()


def tp_prune(model: nn.Module, ratio: float, round_to: int | None) -> nn.Module:
    """Torch-Pruning with L1 magnitude importance at one uniform ratio (classifier output kept)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    if ratio <= 0:
        return model
    with quiet("quality_torch_pruning"):
        pruner = tp.pruner.BasePruner(
            model,
            task.dummy_input(),
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=False,
            ignored_layers=[model.fc],
            round_to=round_to,
        )
        pruner.step()
    return model


def run_torch_pruning(model: nn.Module, flops_pct: float, round_to: int | None, steps: int = 14) -> Pruned:
    """Bisection on the uniform ratio: the smallest ratio whose fvcore FLOPs are within the budget."""
    budget = fvcore_flops(model, task.dummy_input()) * flops_pct / 100.0
    lo, hi = 0.0, 0.99  # lo does not fit, hi fits
    with Timer() as t:
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            if fvcore_flops(tp_prune(model, mid, round_to), task.dummy_input()) <= budget:
                hi = mid
            else:
                lo = mid
        pruned = tp_prune(model, hi, round_to)
    return Pruned(pruned, t.seconds, 0, {"ratio": round(hi, 5), "bisection_steps": steps, "round_to": round_to})


def prune(method: str, baseline: nn.Module, target: float, splits: task.Splits, calib: list, divisor: int) -> Pruned:
    """One method on its own copy of the baseline."""
    torch.manual_seed(0)
    model = task.clone(baseline)
    score = task.CountingScore(task.val_score(splits))
    if method in NASPRUNE_SETTINGS:
        return run_nasprune(model, target, score, calib, divisor, NASPRUNE_SETTINGS[method])
    if method == "modelopt":
        return run_modelopt(model, target, score, calib, divisor)
    return run_torch_pruning(model, target, divisor if method == "torch-pruning" else None)


# ---- evaluation --------------------------------------------------------------------------------------------
def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv (shows where a method put its bottlenecks)."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def fine_tuned(model: nn.Module, splits: task.Splits, epochs: int, lr: float, seeds: int) -> list[float]:
    """Test accuracy after each of `seeds` short fine-tunes (seeds SEED..SEED+seeds-1) of copies of the model."""
    out = []
    for seed in range(seeds):
        tuned = task.fine_tune(copy.deepcopy(model), splits, epochs=epochs, lr=lr, seed=task.SEED + seed)
        out.append(task.accuracy(tuned, splits.x_test, splits.y_test))
    return out


def lr_sweep(model: nn.Module, splits: task.Splits, args: argparse.Namespace, main_acc: float) -> dict[str, float]:
    """Mean fine-tuned test accuracy at the main learning rate (already measured) and at every sweep rate."""
    out = {f"{args.finetune_lr:g}": main_acc}
    for lr in args.sweep_lrs:
        accs = fine_tuned(model, splits, args.finetune_epochs, lr, args.finetune_seeds)
        out[f"{lr:g}"] = sum(accs) / len(accs)
    return out


def evaluate(
    method: str,
    pruned: Pruned,
    base_flops: float,
    base_widths: dict[str, int],
    splits: task.Splits,
    calib: list,
    target_pct: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """FLOPs ratio, accuracy after BN recalibration and after the fine-tune, search cost, narrowest layer."""
    model = pruned.model
    flops = fvcore_flops(model, task.dummy_input())
    task.recalibrate_bn(model, [b[0] for b in calib])
    test_pruned = task.accuracy(model, splits.x_test, splits.y_test)
    val_pruned = task.accuracy(model, splits.x_val, splits.y_val)
    with Timer() as ft:
        tuned_acc = fine_tuned(model, splits, args.finetune_epochs, args.finetune_lr, args.finetune_seeds)
    tuned_mean = sum(tuned_acc) / len(tuned_acc)
    widths = conv_widths(model)
    narrowest = min(widths, key=lambda n: widths[n] / base_widths[n])
    row = {
        "method": method,
        "target_pct": target_pct,
        "flops": flops,
        "flops_ratio": flops / base_flops,
        "params": count_params(model),
        "val_acc_pruned": val_pruned,
        "test_acc_pruned": test_pruned,
        "test_acc_finetuned": tuned_mean,
        "test_acc_finetuned_all": tuned_acc,
        "search_s": pruned.search_s,
        "finetune_s": ft.seconds / max(args.finetune_seeds, 1),
        "score_evaluations": pruned.evaluations,
        "narrowest_layer": f"{narrowest} {widths[narrowest]}/{base_widths[narrowest]}",
        "widths": widths,
        **pruned.extra,
    }
    if args.sweep_lrs and method in args.sweep_methods:
        row["finetuned_by_lr"] = lr_sweep(model, splits, args, tuned_mean)
    return row


def unpruned_row(
    baseline: nn.Module, test_acc: float, splits: task.Splits, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """The unpruned baseline fine-tuned like the pruned models, at the main and every sweep learning rate."""
    main_acc = fine_tuned(baseline, splits, args.finetune_epochs, args.finetune_lr, args.finetune_seeds)
    return {
        "train_seed": seed,
        "test_acc": test_acc,
        "finetuned_by_lr": lr_sweep(baseline, splits, args, sum(main_acc) / len(main_acc)),
    }


def prune_and_evaluate(
    method: str,
    baseline: nn.Module,
    base_flops: float,
    base_widths: dict[str, int],
    target: float,
    splits: task.Splits,
    calib: list,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One method's pruned copy of the baseline, evaluated with the run's divisor and fine-tune settings."""
    pruned = prune(method, baseline, target, splits, calib, args.divisor)
    return evaluate(method, pruned, base_flops, base_widths, splits, calib, target, args)


def robust_rows(
    args: argparse.Namespace, splits: task.Splits, calib: list, unpruned: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The comparison again on baselines trained with seeds SEED+1 .. SEED+robust_seeds (the same fine-tunes);
    with a sweep, each baseline's unpruned row is appended to `unpruned`."""
    out = []
    methods = [m for m in args.robust_methods if m in args.methods]
    for k in range(1, args.robust_seeds + 1):
        seed = task.SEED + k
        log(f"baseline {k}/{args.robust_seeds}: training with seed {seed}")
        baseline, _ = task.trained_model(splits, epochs=args.epochs, seed=seed)
        base_flops = fvcore_flops(baseline, task.dummy_input())
        base_widths = conv_widths(baseline)
        base_acc = task.accuracy(baseline, splits.x_test, splits.y_test)
        if args.sweep_lrs:
            unpruned.append(unpruned_row(baseline, base_acc, splits, args, seed))
        for target in args.targets:
            for method in methods:
                row = prune_and_evaluate(method, baseline, base_flops, base_widths, target, splits, calib, args)
                row.update({"train_seed": seed, "baseline_test_acc": base_acc})
                row.pop("widths", None)
                log(
                    f"  seed {seed} {method} @ {target:g}%: flops {row['flops_ratio']:.3f}  test "
                    f"{row['test_acc_pruned']:.4f} -> {row['test_acc_finetuned']:.4f}"
                )
                out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short training, one target")
    parser.add_argument("--targets", type=float, nargs="+", default=[50.0, 30.0], help="FLOPs budgets in %%")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + OPTIONAL_METHODS)
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-seeds", type=int, default=5, help="fine-tunes per model (mean reported)")
    parser.add_argument("--finetune-lr", type=float, default=0.02, help="fine-tune learning rate (cosine to 0)")
    parser.add_argument(
        "--sweep-lrs", type=float, nargs="*", default=[0.005, 0.01, 0.05], help="more fine-tune learning rates"
    )
    parser.add_argument(
        "--sweep-methods",
        nargs="*",
        default=list(SWEEP_METHODS),
        choices=METHODS + OPTIONAL_METHODS,
        help="methods fine-tuned at every sweep learning rate (the unpruned baseline always is)",
    )
    parser.add_argument("--divisor", type=int, default=8, help="channel divisor shared by every method")
    parser.add_argument("--calib-batches", type=int, default=8, help="BN calibration batches of 64 train images")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the cores are shared; see BENCHMARKS.md)"
    )
    parser.add_argument(
        "--robust-seeds", type=int, default=9, help="extra baselines (train seeds 1..N) for the across-seeds table"
    )
    parser.add_argument("--robust-methods", nargs="+", default=list(ROBUST_METHODS), choices=METHODS + OPTIONAL_METHODS)
    parser.add_argument("--name", default="quality")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.targets, args.finetune_epochs, args.calib_batches, args.finetune_seeds = 3, [50.0], 1, 2, 1
        args.robust_seeds = min(args.robust_seeds, 1)
        args.sweep_lrs = args.sweep_lrs[:1]
        args.name = f"{args.name}_quick"
    set_threads(args.threads)

    splits = task.load_splits()
    log(f"training the baseline ResNet20 ({args.epochs} epochs)")
    baseline, train_s = task.trained_model(splits, epochs=args.epochs)
    base_flops = fvcore_flops(baseline, task.dummy_input())
    base_widths = conv_widths(baseline)
    calib = [(xb,) for xb in task.calib_batches(splits, args.calib_batches)]
    base = {
        "flops": base_flops,
        "params": count_params(baseline),
        "val_acc": task.accuracy(baseline, splits.x_val, splits.y_val),
        "test_acc": task.accuracy(baseline, splits.x_test, splits.y_test),
        "train_s": train_s,
    }
    log(f"baseline: {base}")
    unpruned = [unpruned_row(baseline, base["test_acc"], splits, args, task.SEED)] if args.sweep_lrs else []
    rows = []
    for target in args.targets:
        for method in args.methods:
            log(f"{method} @ {target:g}% FLOPs")
            row = prune_and_evaluate(method, baseline, base_flops, base_widths, target, splits, calib, args)
            log(
                f"  flops {row['flops_ratio']:.3f}  test {row['test_acc_pruned']:.4f} -> "
                f"{row['test_acc_finetuned']:.4f}"
                f"  search {row['search_s']:.1f}s  evals {row['score_evaluations']}  narrowest {row['narrowest_layer']}"
            )
            rows.append(row)
    robust = robust_rows(args, splits, calib, unpruned)
    settings = {k: v for k, v in vars(args).items() if k != "name"}
    settings.update({"input": list(task.dummy_input().shape), "score": "validation accuracy", "seed": task.SEED})
    path = write_result(
        args.name, {"settings": settings, "baseline": base, "rows": rows, "robust": robust, "unpruned": unpruned}
    )
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
