"""Table 3, real speedup: CPU latency of nasprune's exported model vs the original, next to its FLOPs ratio.

Every model of the coverage zoo (tools/zoo_models.py) at its full input size, random init; the latency goal
applies to the CNNs, the transformers (vit_b_16, swin_t, maxvit_t) are measured alongside. Pruned to 60% of its
FLOPs with nasprune's space API: convert (default FastNAS rules), sort_parameters, then one uniform width ratio
for every hparam found by bisection on `space.cost`, then the relatively narrowest hparams grown one choice at a
time while the budget allows (no score: latency depends on the shapes, not on the
weights), export. Latency: torch.inference_mode, fixed threads, warm-up runs, median of repeated runs, at
batch 1 and 32, with glibc's allocator set to keep freed memory (bench/common.py CACHING_MALLOC; the script restarts
itself with it, --system-malloc to time the default).

Latency-aware (the CNNs, at each batch size): a latency table (nasprune_cli.metrics.latency) is measured for the
space at that batch size, and the FLOPs budget goes to the widths that run fastest on this machine: from a uniform
prune at half the width ratio that meets the budget (the same floor as FastNAS's balanced rival), the width step
that adds the most FLOPs per predicted millisecond is taken while the FLOPs stay within the budget. FLOPs stand in
for the score here (random weights); `nasprune search --latency` trades the score per predicted millisecond instead.
The space is converted with depth search on (recipes/autonas.yaml with `skippable: blocks`, channel divisor 8 instead of
its 32: --aware-divisor), and the one table serves
two prunes: widths only (every block kept), and widths plus blocks (each skippable run keeps at least half of its
blocks, and a step may also add a block back).
Run: python bench/latency.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ (the zoo list)

from common import (  # noqa: E402
    Timer,
    fvcore_flops,
    log,
    quiet,
    reexec_with_caching_malloc,
    set_threads,
    write_result,
)

# used when tools/zoo_models.py is absent: (name, input size)
FALLBACK = [
    ("resnet18", 224),
    ("resnet50", 224),
    ("mobilenet_v2", 224),
    ("densenet121", 224),
    ("vgg11_bn", 224),
    ("efficientnet_b0", 224),
    ("regnet_y_400mf", 224),
    ("resnext50_32x4d", 224),
    ("squeezenet1_0", 224),
]
QUICK = [("resnet18", 224), ("mobilenet_v2", 224)]


def zoo_models() -> list[tuple[str, int, dict[str, Any]]]:
    """(name, full input size, builder kwargs) of every zoo model."""
    try:
        from tools.zoo_models import ZOO
    except ImportError:
        return [(n, s, {}) for n, s in FALLBACK]
    return [(m.name, m.full, dict(m.kwargs)) for m in ZOO.values()]


def is_transformer(name: str) -> bool:
    """Whether a zoo model is one of the transformers (the latency goal is for CNNs)."""
    try:
        from tools.zoo_models import ZOO
    except ImportError:
        return False
    return name in ZOO and ZOO[name].transformer


def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A torchvision model with random weights (seeded): no download."""
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(**kwargs).eval()


def uniform_config(space: Any, ratio: float) -> dict[str, int]:
    """Every width hparam at the smallest choice >= ratio * original (others at their original value)."""
    config = {}
    for name, hp in space.hparams.items():
        if hp.kind != "width":
            config[name] = hp.original
            continue
        target = ratio * hp.original
        config[name] = min((c for c in hp.choices if c >= target - 1e-9), default=hp.choices[-1])
    return config


def prune_uniform(space: Any, flops_ratio: float, steps: int = 30) -> tuple[dict[str, int], float]:
    """The largest uniform ratio whose cost-model FLOPs are within the budget, grown by fill_balanced."""
    ratio = uniform_ratio(space, flops_ratio, steps)
    return fill_balanced(space, uniform_config(space, ratio), flops_ratio * space.original_cost.flops), ratio


def uniform_ratio(space: Any, flops_ratio: float, steps: int = 30) -> float:
    """The largest uniform width ratio whose cost-model FLOPs are within the budget (bisection)."""
    budget = flops_ratio * space.original_cost.flops
    lo, hi = 0.0, 1.0  # lo fits, hi does not (or is the original)
    if space.cost(uniform_config(space, 0.0)).flops > budget:
        raise RuntimeError("even the smallest uniform subnet is over budget")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if space.cost(uniform_config(space, mid)).flops <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def fill_balanced(space: Any, config: dict[str, int], budget: float) -> dict[str, int]:
    """Grow the relatively narrowest width hparam by one choice while the budget allows (the uniform ratio alone
    can land far below the budget: with divisor 32 a 64-channel layer jumps from 32 to 64)."""
    config = dict(config)
    while True:
        grown = False
        for name in sorted(space.hparams, key=lambda n: config[n] / space.hparams[n].original):
            hp = space.hparams[name]
            idx = hp.choices.index(config[name])
            if hp.kind != "width" or idx == len(hp.choices) - 1:
                continue
            step = {**config, name: hp.choices[idx + 1]}
            if space.cost(step).flops <= budget:
                config, grown = step, True
                break
        if not grown:
            return config


def block_depths(space: Any) -> list[str]:
    """Depth hparams whose children are all blocks with a weight matrix (not a trailing norm or activation)."""
    names = []
    for name, hp in space.hparams.items():
        if hp.kind != "depth":
            continue
        modules = [space.model.get_submodule(m) for m in hp.members]
        if all(
            any(getattr(x, "weight", None) is not None and x.weight.dim() >= 2 for x in m.modules()) for m in modules
        ):
            names.append(name)
    return sorted(names)


def prune_latency_aware(
    space: Any, flops_ratio: float, floor: float = 0.5, depths: tuple[str, ...] | list[str] = ()
) -> dict[str, int]:
    """At the FLOPs budget, the widths (and blocks of `depths`) with the most FLOPs per predicted ms (the space has a
    latency table attached). Widths start at `floor` x the uniform ratio that meets the budget, each depth hparam of
    `depths` at half of its skippable children; other hparams stay at their original value."""
    budget = flops_ratio * space.original_cost.flops
    config = uniform_config(space, floor * uniform_ratio(space, flops_ratio))
    for name in depths:
        hp = space.hparams[name]
        config[name] = hp.choices[0] + len(hp.members) // 2
    current = space.cost(config)
    while True:
        best = None
        for name in sorted(space.hparams):
            hp = space.hparams[name]
            idx = hp.choices.index(config[name])
            if (hp.kind != "width" and name not in depths) or idx == len(hp.choices) - 1:
                continue
            step = {**config, name: hp.choices[idx + 1]}
            cost = space.cost(step)
            if cost.flops > budget:
                continue
            slower = max(cost.latency - current.latency, 1e-9 * space.original_cost.latency)
            gain = (cost.flops - current.flops) / slower
            if best is None or gain > best[0]:
                best = (gain, step, cost)
        if best is None:
            return config
        _, config, current = best


@torch.inference_mode()
def latency_ms(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median wall time of a forward pass, in milliseconds."""
    model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def depth_recipe(divisor: int | None = None) -> Any:
    """recipes/autonas.yaml (FastNAS widths plus depth) with inner runs of blocks skippable too, and every
    channel / feature divisor set to `divisor` (None: the recipe's 32)."""
    import yaml

    from nasprune_cli.recipe.load import recipe_from_dict

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "recipes", "autonas.yaml")) as f:
        data = yaml.safe_load(f)
    data["rules"]["nn.Sequential"] = {"*": {"min_depth": 1, "skippable": "blocks"}}
    if divisor is not None:
        for patterns in data["rules"].values():
            for rule in (patterns or {}).values():
                for key in ("channel_divisor", "feature_divisor"):
                    if isinstance(rule, dict) and key in rule:
                        rule[key] = divisor
    return recipe_from_dict(data)


def skipped_blocks(space: Any, config: dict[str, int]) -> int:
    """Number of children skipped by the depth hparams of a config."""
    return sum(space.hparams[n].original - v for n, v in config.items() if space.hparams[n].kind == "depth")


def measure(name: str, size: int, kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Prune one model to the budget and time original vs exported at every batch size (and latency-aware)."""
    from nasprune_cli.conversion import convert
    from nasprune_cli.metrics.latency import measure_latency

    original = build(name, kwargs)
    pruned_src = build(name, kwargs)
    dummy = torch.zeros(1, 3, size, size)
    with Timer() as t, quiet(f"latency_{name}"):
        space = convert(pruned_src, None, dummy)
        space.sort_parameters()
        config, ratio = prune_uniform(space, args.flops / 100.0)
        space.select(config)
        pruned = space.export().eval()
    base_flops = fvcore_flops(original, dummy)
    row: dict[str, Any] = {
        "model": name,
        "input": size,
        "transformer": is_transformer(name),
        "prune_s": t.seconds,
        "uniform_ratio": ratio,
        "hparams": len(space.hparams),
        "flops_ratio": fvcore_flops(pruned, dummy) / base_flops,
        "params_ratio": sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in original.parameters()),
        "gflops": base_flops / 1e9,
    }
    deep = None
    if args.aware and not row["transformer"]:
        with quiet(f"latency_deep_{name}"):
            deep = convert(build(name, kwargs), depth_recipe(args.aware_divisor), dummy)
            deep.sort_parameters()
        row["depth_hparams"] = block_depths(deep)
    for batch in args.batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        repeats = args.repeats if batch == 1 else args.repeats_large
        warmup = args.warmup if batch == 1 else args.warmup_large
        models = {"original": original, "pruned": pruned}
        aware: dict[str, dict[str, Any]] = {}
        if deep is not None:
            try:
                with Timer() as t_table, quiet(f"latency_table_{name}_b{batch}"):
                    table = measure_latency(deep, batch, repeats=args.table_repeats if batch > 1 else None)
                deep.attach_latency(table)
                for key, depths in (("aware", ()), ("deep", row["depth_hparams"])):
                    if key == "deep" and not depths:
                        continue
                    aware_config = prune_latency_aware(deep, args.flops / 100.0, depths=depths)
                    predicted = deep.cost(aware_config)
                    deep.select(aware_config)
                    models[key] = deep.export().eval()
                    aware[key] = {
                        "table_s": t_table.seconds,
                        "flops_ratio": fvcore_flops(models[key], dummy) / base_flops,
                        "predicted_ratio": predicted.latency / table.original_ms,
                        "skipped_blocks": skipped_blocks(deep, aware_config),
                    }
            except Exception as exc:  # noqa: BLE001 - the uniform row still stands
                row.setdefault("aware_error", f"{type(exc).__name__}: {str(exc)[:300]}")
                log(f"  latency-aware prune failed: {row['aware_error']}")
                traceback.print_exc()
            finally:
                deep.attach_latency(None)
                deep.select(deep.max())
        # alternate the models so that a load change on the machine hits all of them; keep each one's best round
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(args.rounds):
            for key, model in models.items():
                times[key].append(latency_ms(model, x, repeats, warmup))
        best = {k: min(v) for k, v in times.items()}
        row[f"b{batch}"] = {
            "original_ms": best["original"],
            "pruned_ms": best["pruned"],
            "latency_ratio": best["pruned"] / best["original"],
        }
        row[f"b{batch}"]["latency_over_flops"] = row[f"b{batch}"]["latency_ratio"] / row["flops_ratio"]
        for key, result in aware.items():
            result["pruned_ms"] = best[key]
            result["latency_ratio"] = best[key] / best["original"]
            result["latency_over_flops"] = result["latency_ratio"] / result["flops_ratio"]
            row[f"b{batch}"][key] = result
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: two models, few repeats")
    parser.add_argument("--models", nargs="+", help="zoo names (default: every model of tools/zoo_models.py)")
    parser.add_argument("--flops", type=float, default=60.0, help="FLOPs budget in %% of the original")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs at batch 1 (median)")
    parser.add_argument("--repeats-large", type=int, default=3, help="timed runs at larger batches (median)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs at batch 1")
    parser.add_argument("--warmup-large", type=int, default=1, help="warm-up runs at larger batches")
    parser.add_argument("--rounds", type=int, default=2, help="alternating original / pruned rounds (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    parser.add_argument("--no-aware", dest="aware", action="store_false", help="skip the latency-aware prune")
    parser.add_argument("--table-repeats", type=int, default=2, help="latency table: timed runs at larger batches")
    parser.add_argument(
        "--aware-divisor",
        type=int,
        default=8,
        help="channel / feature divisor of the latency-aware prunes' space (the FLOPs-only prune keeps the default "
        "rules' 32): layers narrower than 32 channels, which a mobile model's first stages are, get width choices",
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="time with glibc's default allocator (page faults on every large activation) instead of a caching one",
    )
    parser.add_argument("--name", default="latency")
    args = parser.parse_args(argv)
    if not args.system_malloc and argv is None:
        reexec_with_caching_malloc()
    set_threads(args.threads)
    models = zoo_models()
    if args.quick:
        models = [(n, s, {}) for n, s in QUICK]
        args.repeats, args.repeats_large, args.batches, args.name = 5, 1, [1, 8], f"{args.name}_quick"
    if args.models:
        known = {n: (n, s, k) for n, s, k in zoo_models()}
        models = [known.get(n, (n, 224, {})) for n in args.models]
    rows = []
    for name, size, kwargs in models:
        log(f"{name} at {size}")
        try:
            row = measure(name, size, kwargs, args)
            b = {k: v for k, v in row.items() if k.startswith("b")}
            log(
                f"  flops {row['flops_ratio']:.3f}  "
                + "  ".join(
                    f"{k}: {v['original_ms']:.1f} -> {v['pruned_ms']:.1f} ms ({v['latency_ratio']:.3f})"
                    + (
                        "".join(
                            f" {key} flops {v[key]['flops_ratio']:.3f} latency {v[key]['latency_ratio']:.3f} "
                            f"(predicted {v[key]['predicted_ratio']:.3f})"
                            for key in ("aware", "deep")
                            if key in v
                        )
                    )
                    for k, v in b.items()
                )
            )
        except Exception as exc:  # noqa: BLE001 - one failing model is a row, not the end of the table
            row = {"model": name, "input": size, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log(f"  failed: {row['error']}")
            traceback.print_exc()
        rows.append(row)
    settings = {k: v for k, v in vars(args).items() if k != "name"}
    path = write_result(args.name, {"settings": settings, "rows": rows})
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
