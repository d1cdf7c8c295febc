"""Render BENCHMARKS.md from bench/results/*.json (stdlib only, so it runs without the bench extra).

Run: python bench/report.py [--results DIR] [--output BENCHMARKS.md] [--suffix _quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LATENCY_GOAL = 1.15  # latency ratio / FLOPs ratio
OVERHEAD_GOAL = 0.5  # nasprune time / modelopt time
FLOPS_WINDOW = (0.95, 1.0)  # achieved / target FLOPs

METHOD_NAMES = {
    "nasprune": "nasprune fastnas",
    "nasprune-norefit": "nasprune fastnas without the refit (reconstruct=False)",
    "nasprune-norival": "nasprune fastnas without the balanced rival (rival_floor=0)",
    "nasprune-floor": "nasprune fastnas, width_floor=0.5",
    "nasprune-v1": "nasprune fastnas, first version (sensitivity=full, descent=False, no refit)",
    "nasprune-consumer": "nasprune fastnas, importance=consumer",
    "nasprune-seed": "nasprune fastnas, seed algorithm (first version with fill=False)",
    "modelopt": "modelopt fastnas",
    "torch-pruning": "Torch-Pruning L1, uniform ratio, widths rounded to the divisor",
    "torch-pruning-r1": "Torch-Pruning L1, uniform ratio, no rounding",
}


def load_results(results: Path, suffix: str = "") -> dict[str, dict[str, Any]]:
    """{"quality": ..., "overhead": ..., "latency": ...} from <results>/<name><suffix>.json (missing ones left out)."""
    out = {}
    for name in ("quality", "overhead", "latency", "training", "scale", "map_cut", "text"):
        path = results / f"{name}{suffix}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    if "scale" in out and not suffix:  # named reruns (`bench/scale.py --name scale_...`) get rows of their own
        files = [p for p in sorted(results.glob("scale_*.json")) if not p.stem.endswith("_quick")]
        reruns = [json.loads(p.read_text()) for p in files]
        out["scale"] = {**out["scale"], "reruns": [r for r in reruns if r.get("runs")]}
    return out


# ---- formatting helpers ------------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _machine(data: Mapping[str, Any]) -> str:
    m = data.get("machine", {})
    parts = [
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
        f"({m.get('torch_threads', '?')} thread(s)), load average {m.get('load_avg_1m', '?')} at the start",
        f"nasprune {m.get('nasprune', '?')}, nvidia-modelopt {m.get('nvidia-modelopt', '?')}, "
        f"torch-pruning {m.get('torch-pruning', '?')}, fvcore {m.get('fvcore', '?')}",
    ]
    return "; ".join(parts)


def _provenance(data: Mapping[str, Any]) -> str:
    return f"Produced by `{data.get('command', '?')}` on {data.get('date', '?')}.  \nMachine: {_machine(data)}."


# ---- table 1 -----------------------------------------------------------------------------------------------
def render_quality(data: Mapping[str, Any]) -> str:
    """Table 1: one block per FLOPs target, one row per method, plus the goal check."""
    base = data["baseline"]
    s = data.get("settings", {})
    out = [
        "## 1. Quality at equal FLOPs (ResNet20 on digits)",
        "",
        _provenance(data),
        "",
        f"Baseline: {base['flops'] / 1e6:.2f} MFLOPs (fvcore, input {s.get('input')}), {base['params']:,} params, "
        f"test accuracy {_pct(base['test_acc'])} (val {_pct(base['val_acc'])}), trained {s.get('epochs')} epochs "
        f"in {_num(base.get('train_s'), 1)} s. Shared by every method: channel divisor {s.get('divisor')}, score = "
        f"{s.get('score')}, {s.get('calib_batches')} BN-calibration batches of 64 train images; every pruned model "
        f"is BN-recalibrated on those batches, then fine-tuned {s.get('finetune_epochs')} epoch(s)"
        + (f" (SGD, learning rate {s['finetune_lr']:g}, cosine schedule)." if "finetune_lr" in s else "."),
        "",
    ]
    targets = sorted({r["target_pct"] for r in data["rows"]}, reverse=True)
    header = [
        "method",
        "FLOPs ratio (fvcore)",
        "test acc after pruning",
        "test acc after fine-tune",
        "search s",
        "score evals",
        "narrowest layer (kept/orig)",
    ]
    for target in targets:
        rows = [r for r in data["rows"] if r["target_pct"] == target]
        out += [f"**Target {target:g}% FLOPs**", ""]
        out.append(
            _table(
                header,
                [
                    [
                        METHOD_NAMES.get(r["method"], r["method"])
                        + (" *" if r["method"].startswith("nasprune") else ""),
                        _num(r["flops_ratio"], 3),
                        _pct(r["test_acc_pruned"]),
                        _pct(r["test_acc_finetuned"]),
                        _num(r["search_s"], 1),
                        str(r["score_evaluations"]),
                        r.get("narrowest_layer", "-"),
                    ]
                    for r in rows
                ],
            )
        )
        out += ["", _quality_verdict(rows, target), ""]
    out.append(
        '\\* nasprune rows; "nasprune fastnas" is the default: the search, then the least-squares refit of the kept '
        "weights on the calibration batches. Accuracy is on the 360-image test split: one image is 0.28 points."
    )
    if data.get("robust"):
        out += ["", render_robust(data)]
    if data.get("unpruned"):
        out += ["", render_lr_sweep(data)]
    return "\n".join(out)


def render_robust(data: Mapping[str, Any]) -> str:
    """Table 1b: the same comparison on several baselines (the main one plus those trained with other seeds)."""
    robust = data["robust"]
    seeds = sorted({r["train_seed"] for r in robust})
    methods = list(dict.fromkeys(r["method"] for r in robust))
    base_seed = data.get("settings", {}).get("seed", 0)
    rows_by = {(base_seed, r["target_pct"], r["method"]): r for r in data["rows"] if r["method"] in methods}
    rows_by.update({(r["train_seed"], r["target_pct"], r["method"]): r for r in robust})
    all_seeds = [base_seed, *seeds]
    out = [
        f"**Across {len(all_seeds)} baselines** (train seeds {', '.join(str(s) for s in all_seeds)}; seed {base_seed} "
        "is the baseline above, the others are trained and fine-tuned the same way with another seed). Mean over the "
        "baselines, range in brackets.",
        "",
    ]
    header = ["target", "method", "FLOPs ratio", "test acc after pruning", "test acc after fine-tune"]
    table, verdicts = [], []
    for target in sorted({r["target_pct"] for r in robust}, reverse=True):
        for method in methods:
            rs = [rows_by[(s, target, method)] for s in all_seeds if (s, target, method) in rows_by]
            if not rs:
                continue
            cells = [f"{target:g}%", METHOD_NAMES.get(method, method) + (" *" if method.startswith("nasprune") else "")]
            cells.append(_num(sum(r["flops_ratio"] for r in rs) / len(rs), 3))
            for key in ("test_acc_pruned", "test_acc_finetuned"):
                vals = [r[key] for r in rs]
                cells.append(f"{_pct(sum(vals) / len(vals))} ({_pct(min(vals))}-{_pct(max(vals))})")
            table.append(cells)
        verdicts.append(_robust_verdict(rows_by, all_seeds, target, methods))
    out += [_table(header, table), ""]
    out += [v for v in verdicts if v]
    return "\n".join(out)


def render_lr_sweep(data: Mapping[str, Any]) -> str:
    """The fine-tune learning-rate sweep: mean fine-tuned accuracy per rate, and nasprune vs the better peer."""
    s = data.get("settings", {})
    base_seed = s.get("seed", 0)
    swept = [{**r, "train_seed": base_seed} for r in data["rows"] if "finetuned_by_lr" in r]
    swept += [r for r in data.get("robust", []) if "finetuned_by_lr" in r]
    unpruned = data["unpruned"]
    lrs = sorted({lr for r in [*swept, *unpruned] for lr in r["finetuned_by_lr"]}, key=float)
    main_lr = f"{s.get('finetune_lr', 0.02):g}"
    seeds = sorted({r["train_seed"] for r in unpruned})
    out = [
        f"**Fine-tune learning rate** ({len(seeds)} baselines, {s.get('finetune_seeds')} fine-tunes each, "
        f"{s.get('finetune_epochs')} epoch(s), cosine schedule; {main_lr} is the rate of the tables above). Mean test "
        "accuracy after the fine-tune; the unpruned baseline gets the same fine-tunes.",
        "",
    ]
    header = ["target", "method", *[f"lr {lr}" + (" (above)" if lr == main_lr else "") for lr in lrs]]

    def mean_at(rs: list[Mapping[str, Any]], lr: str) -> str:
        vals = [r["finetuned_by_lr"][lr] for r in rs if lr in r["finetuned_by_lr"]]
        return _pct(sum(vals) / len(vals), 2) if vals else "-"

    table = [["-", "unpruned baseline", *[mean_at(unpruned, lr) for lr in lrs]]]
    verdicts = []
    for target in sorted({r["target_pct"] for r in swept}, reverse=True):
        at = [r for r in swept if r["target_pct"] == target]
        methods = list(dict.fromkeys(r["method"] for r in at))
        for method in methods:
            name = METHOD_NAMES.get(method, method) + (" *" if method.startswith("nasprune") else "")
            table.append([f"{target:g}%", name, *[mean_at([r for r in at if r["method"] == method], lr) for lr in lrs]])
        verdicts.append(_sweep_verdict(at, target, lrs))
    out += [_table(header, table), ""]
    out += [v for v in verdicts if v]
    return "\n".join(out)


def _sweep_verdict(rows: list[Mapping[str, Any]], target: float, lrs: list[str]) -> str:
    """Per learning rate: nasprune minus the peer with the higher mean there, paired by baseline, with a 95% CI."""
    seeds = sorted({r["train_seed"] for r in rows})
    peers = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("nasprune")))
    parts = []
    for lr in lrs:
        values = {(r["train_seed"], r["method"]): r["finetuned_by_lr"][lr] for r in rows if lr in r["finetuned_by_lr"]}
        paired = _vs_better_peer(values, seeds, peers)
        if paired is None:
            continue
        best_peer, deltas = paired
        mean, half = paired_ci(deltas)
        parts.append(
            f"lr {lr}: {mean * 100:+.2f} pts vs {METHOD_NAMES.get(best_peer, best_peer)} (95% CI "
            f"{(mean - half) * 100:+.2f} to {(mean + half) * 100:+.2f}, {sum(d >= 0 for d in deltas)} of {len(deltas)})"
        )
    return (
        f"- {target:g}%, nasprune fastnas after the fine-tune vs the better peer at each rate: "
        + "; ".join(parts)
        + "."
        if parts
        else ""
    )


def _vs_better_peer(
    values: Mapping[tuple[int, str], float], seeds: list[int], peers: list[str]
) -> tuple[str, list[float]] | None:
    """The peer with the highest mean of `values` ({(baseline seed, method): value}) and nasprune minus it on every
    baseline that has both; None when no peer or no pair has a value."""
    best_peer, best_mean = None, -1.0
    for p in peers:
        vals = [values[(s, p)] for s in seeds if (s, p) in values]
        if vals and sum(vals) / len(vals) > best_mean:
            best_peer, best_mean = p, sum(vals) / len(vals)
    if best_peer is None:
        return None
    deltas = [
        values[(s, "nasprune")] - values[(s, best_peer)]
        for s in seeds
        if (s, "nasprune") in values and (s, best_peer) in values
    ]
    return (best_peer, deltas) if deltas else None


# two-sided 95% Student t quantiles by degrees of freedom (stdlib has no t distribution)
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20}
_T95.update({12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 24: 2.06, 29: 2.05})


def paired_ci(deltas: list[float]) -> tuple[float, float]:
    """Mean of paired differences and the half-width of its 95% confidence interval (Student t)."""
    mean = sum(deltas) / len(deltas)
    if len(deltas) < 2:
        return mean, float("inf")
    df = len(deltas) - 1
    t = _T95.get(df) or next((v for k, v in sorted(_T95.items(), reverse=True) if k <= df), 1.96)
    return mean, t * statistics.stdev(deltas) / len(deltas) ** 0.5


def _robust_verdict(rows_by: Mapping[tuple, Mapping[str, Any]], seeds: list[int], target: float, methods: list) -> str:
    """Per accuracy column: nasprune minus the peer with the higher mean, paired by baseline, with a 95% CI."""
    peers = [m for m in methods if not m.startswith("nasprune")]
    parts = []
    for key, label in (("test_acc_pruned", "after pruning"), ("test_acc_finetuned", "after fine-tune")):
        values = {(s, m): r[key] for (s, t, m), r in rows_by.items() if t == target}
        paired = _vs_better_peer(values, seeds, peers)
        if paired is None:
            continue
        best_peer, deltas = paired
        mean, half = paired_ci(deltas)
        wins = sum(d >= 0 for d in deltas)
        if mean >= 0:
            verdict = "at least as good"
        elif mean + half >= 0:
            verdict = "behind, but within noise"
        else:
            verdict = "behind"
        parts.append(
            f"{label} vs the better peer on average ({METHOD_NAMES.get(best_peer, best_peer)}): "
            f"{mean * 100:+.1f} pts (95% CI {(mean - half) * 100:+.1f} to {(mean + half) * 100:+.1f}, "
            f"{wins} of {len(deltas)} baselines at least as good): **{verdict}**"
        )
    return f"- {target:g}%: nasprune fastnas " + "; ".join(parts) + "." if parts else ""


def _quality_verdict(rows: list[Mapping[str, Any]], target: float) -> str:
    mine = next((r for r in rows if r["method"] == "nasprune"), None)
    peers = [r for r in rows if not r["method"].startswith("nasprune")]
    if mine is None or not peers:
        return "Goal check: pending (nasprune or peer rows missing)."
    lo, hi = FLOPS_WINDOW
    in_window = lo * target / 100 <= mine["flops_ratio"] <= hi * target / 100 + 1e-9
    parts = [f"FLOPs {mine['flops_ratio']:.3f} {'within' if in_window else 'OUTSIDE'} {lo:.0%}-{hi:.0%} of target"]
    ok = in_window
    for key, label in (("test_acc_pruned", "after pruning"), ("test_acc_finetuned", "after fine-tune")):
        best = max(peers, key=lambda r: r[key])
        delta = mine[key] - best[key]
        ok &= delta >= 0
        parts.append(f"{label} {delta * 100:+.1f} pts vs the better peer ({METHOD_NAMES.get(best['method'])})")
    return f"Goal check ({'met' if ok else 'NOT met'}): " + "; ".join(parts) + "."


# ---- table 2 -----------------------------------------------------------------------------------------------
def render_overhead(data: Mapping[str, Any]) -> str:
    """Table 2: wall time side by side, the ratio, and where the time goes."""
    s = data.get("settings", {})
    out = [
        "## 2. Search overhead (nasprune vs modelopt FastNAS)",
        "",
        _provenance(data),
        "",
        f"Random-init torchvision models at {s.get('size')}x{s.get('size')}, FLOPs budget {s.get('budget')}, default "
        f"FastNAS rules for both (ratios 0.05..1.0, divisor 32), score = {s.get('score')}, "
        f"{s.get('calib_batches')} BN-calibration batch of 1 image before every score (modelopt: recalibrated in "
        "its score function, see the notes), 1 torch thread. Each run is a fresh process (imports and a warm-up "
        f"search excluded from the time), methods alternating, median of {s.get('repeats')} repeat(s). "
        "'score forward' is the time spent inside the score's own forward pass.",
        "",
    ]
    header = [
        "model",
        "nasprune s",
        "modelopt s",
        "ratio (goal <= 0.5)",
        "score evals (np / mo)",
        "score forward s (np / mo)",
        "FLOPs ratio of result (np / mo)",
    ]
    rows = []
    for r in data["rows"]:
        n, m = r["nasprune"], r["modelopt"]
        rows.append(
            [
                r["model"],
                _num(n["search_s"], 1),
                _num(m["search_s"], 1),
                f"**{r['time_ratio']:.2f}x**" + ("" if r["time_ratio"] <= OVERHEAD_GOAL else " (not met)"),
                f"{n['score_calls']} / {m['score_calls']}",
                f"{n['score_forward_s']:.1f} / {m['score_forward_s']:.1f}",
                f"{n['flops_ratio']:.3f} / {m['flops_ratio']:.3f}",
            ]
        )
    out.append(_table(header, rows))
    profiles = data.get("profiles") or {}
    if profiles:
        out += ["", "### Where the time goes (cProfile, top self time)", ""]
        for framework, prof in profiles.items():
            out += [
                f"**{framework}** on {prof.get('model')} ({_num(prof.get('total_s'), 1)} s profiled; full cumulative "
                f"listing in `bench/results/{data['name']}_profile_{framework}_{prof.get('model')}.txt`):",
                "",
                _table(
                    ["function", "calls", "self s", "cumulative s"],
                    [
                        [
                            f"`{_short_function(e['function'])}`",
                            str(e["calls"]),
                            _num(e["self_s"], 2),
                            _num(e["cum_s"], 2),
                        ]
                        for e in prof.get("by_self_time", [])[:10]
                    ],
                ),
                "",
            ]
    return "\n".join(out).rstrip()


def _short_function(text: str) -> str:
    """A profiled function without the checkout's absolute path (it differs between machines and worktrees)."""
    for marker in ("/nasprune_cli/", "/bench/"):
        if text.startswith("/") and marker in text:
            return text[text.index(marker) + 1 :]
    return text


# ---- table 3 -----------------------------------------------------------------------------------------------
def _malloc_line(data: Mapping[str, Any]) -> str:
    """A sentence on how the run's allocator was set ("" for results from before the setting existed)."""
    mode = data.get("machine", {}).get("malloc")
    if mode == "caching":
        return (
            "glibc's allocator keeps freed memory in the process (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2^40`, "
            "as jemalloc or tcmalloc would), so no forward pass page-faults its activations in again. "
        )
    if mode == "system":
        return "glibc's default allocator (`--system-malloc`): large activations are page-faulted in on every pass. "
    return ""


def render_latency(data: Mapping[str, Any]) -> str:
    """Table 3: latency of the exported model vs the original next to the FLOPs ratio."""
    s = data.get("settings", {})
    batches = s.get("batches", [1, 32])
    out = [
        "## 3. Real speedup (CPU latency of the exported model)",
        "",
        _provenance(data),
        "",
        f"Each model of the coverage zoo (`tools/zoo_models.py`), random init, pruned to {s.get('flops')}% FLOPs with "
        "nasprune's space API: `sort_parameters`, one uniform width ratio found by bisection on the cost model, then "
        "the relatively narrowest hparams grown while the budget allows; exported to plain torch modules. Latency: "
        f"`torch.inference_mode`, {s.get('threads')} thread(s); batch 1: {s.get('warmup')} warm-up runs, then the "
        f"median of {s.get('repeats')} runs; larger batches: {s.get('warmup_large', 1)} warm-up, median of "
        f"{s.get('repeats_large')} run(s); original and pruned alternate for {s.get('rounds', 2)} rounds and each "
        f"keeps its best round. {_malloc_line(data)}Goal: latency ratio / FLOPs ratio <= {LATENCY_GOAL} for the "
        "CNNs; the transformers (marked *) are measured alongside.",
        "",
    ]
    header = ["model", "input", "GFLOPs", "FLOPs ratio"]
    for b in batches:
        header += [f"b{b} ms (orig -> pruned)", f"b{b} latency ratio", f"b{b} lat/FLOPs"]
    rows, failed = [], []
    for r in data["rows"]:
        if "error" in r:
            failed.append(r)
            continue
        label = f"{r['model']} *" if r.get("transformer") else r["model"]
        row = [label, str(r["input"]), _num(r["gflops"], 2), _num(r["flops_ratio"], 3)]
        for b in batches:
            v = r.get(f"b{b}")
            if v is None:
                row += ["-", "-", "-"]
                continue
            flag = "" if v["latency_over_flops"] <= LATENCY_GOAL else " (over)"
            row += [
                f"{v['original_ms']:.1f} -> {v['pruned_ms']:.1f}",
                _num(v["latency_ratio"], 3),
                f"{v['latency_over_flops']:.2f}{flag}",
            ]
        rows.append(row)
    out.append(_table(header, rows))
    ok = [r for r in data["rows"] if "error" not in r and not r.get("transformer")]
    if ok:
        met = sum(all(r[f"b{b}"]["latency_over_flops"] <= LATENCY_GOAL for b in batches if f"b{b}" in r) for r in ok)
        out += ["", f"Goal met (every batch size) for {met} of {len(ok)} CNNs."]
    if failed:
        out += ["", "Not measured (pruning or export failed):", ""]
        out += [f"- {r['model']}: {r['error']}" for r in failed]
    for key in AWARE_TITLES:
        aware = render_latency_aware(data, batches, key)
        if aware:
            out += ["", aware]
    return "\n".join(out)


AWARE_TITLES = {
    "aware": (
        "### Latency-aware prune (latency table)",
        "The same CNNs and FLOPs budget, pruned with a latency table measured at each batch size "
        "(`nasprune_cli/metrics/latency.py`; `nasprune search --latency` uses the same table): from a uniform prune "
        "at half the width ratio that meets the budget, the width step that adds the most FLOPs per predicted "
        "millisecond is taken while the FLOPs stay within the budget; every block is kept.",
    ),
    "deep": (
        "### Latency-aware prune with depth (latency table, AutoNAS space)",
        "The same table and budget, and the same greedy prune, but blocks may be skipped too: the space is converted "
        "with depth search (`recipes/autonas.yaml` with `nn.Sequential: {min_depth: 1, skippable: blocks}`), every "
        "run of skippable blocks starts at half of its blocks, and a step either widens a layer or adds a block back. "
        "Models marked † have no skippable block in that space, so the prune is the width-only one of the table above "
        "(the same subnet and timings).",
    ),
}


def _deep_or_aware(row: Mapping[str, Any], batches: list[int]) -> dict[str, Any]:
    """A table-3 row whose "deep" results are the width-only ones when the model has no skippable block (marked †)."""
    if any("deep" in row.get(f"b{b}", {}) for b in batches):
        return dict(row)
    out = {**row, "model": f"{row['model']} †"}
    for b in batches:
        if "aware" in row.get(f"b{b}", {}):
            out[f"b{b}"] = {**row[f"b{b}"], "deep": {**row[f"b{b}"]["aware"], "skipped_blocks": "-"}}
    return out


def render_latency_aware(data: Mapping[str, Any], batches: list[int], key: str = "aware") -> str:
    """Table 3b / 3c: the latency-aware prune of every CNN (a latency table per batch size), widths only ("aware")
    or widths and blocks ("deep"), when it was run."""
    # "deep" lists every CNN of table 3b: one without skippable blocks has the width-only prune there
    source = "aware" if key == "deep" else key
    rows_in = [r for r in data["rows"] if "error" not in r and any(source in r.get(f"b{b}", {}) for b in batches)]
    if key == "deep":
        rows_in = [_deep_or_aware(r, batches) for r in rows_in]
    errors = [r for r in data["rows"] if "aware_error" in r] if key == "aware" else []
    if not rows_in and not errors:
        return ""
    s = data.get("settings", {})
    title, text = AWARE_TITLES[key]
    out = [
        title,
        "",
        text
        + (
            f" Channel divisor {s['aware_divisor']} in this space (the main table: the default rules' 32)."
            if s.get("aware_divisor")
            else ""
        )
        + " FLOPs stand in for the score (random weights). Timed in the same rounds as the original and the "
        "prune above. Predicted: the table's latency ratio; measured: the median of the timed runs (larger batches: "
        f"{s.get('table_repeats', 2)} timed runs per table sample).",
        "",
    ]
    header = ["model"]
    for b in batches:
        header += [f"b{b} FLOPs ratio", f"b{b} latency predicted / measured", f"b{b} lat/FLOPs"]
        header.append(f"b{b} blocks skipped" if key == "deep" else f"b{b} table s")
    rows = []
    for r in rows_in:
        row = [r["model"]]
        for b in batches:
            v = r.get(f"b{b}", {}).get(key)
            if v is None:
                row += ["-", "-", "-", "-"]
                continue
            flag = "" if v["latency_over_flops"] <= LATENCY_GOAL else " (over)"
            row += [
                _num(v["flops_ratio"], 3),
                f"{v['predicted_ratio']:.3f} / {v['latency_ratio']:.3f}",
                f"{v['latency_over_flops']:.2f}{flag}",
                str(v.get("skipped_blocks", "-")) if key == "deep" else f"{v['table_s']:.0f}",
            ]
        rows.append(row)
    out.append(_table(header, rows))
    if rows_in:
        met = sum(
            all(r[f"b{b}"][key]["latency_over_flops"] <= LATENCY_GOAL for b in batches if key in r[f"b{b}"])
            for r in rows_in
        )
        errs = [
            abs(r[f"b{b}"][key]["predicted_ratio"] / r[f"b{b}"][key]["latency_ratio"] - 1)
            for r in rows_in
            for b in batches
            if key in r[f"b{b}"]
        ]
        out += [
            "",
            f"Goal met (every batch size) for {met} of {len(rows_in)} CNNs. The table's prediction of the latency "
            f"ratio was off by {statistics.median(errs):.1%} (median), {max(errs):.1%} at most.",
        ]
    if errors:
        out += ["", "Latency-aware prune failed:", ""]
        out += [f"- {r['model']}: {r['aware_error']}" for r in errors]
    return "\n".join(out)


def render_memory(data: Mapping[str, Any]) -> str:
    """Peak RSS of the searches of table 2 (same runs, each in its own process)."""
    out = [
        "### Peak memory of a search",
        "",
        "From the table 2 runs (one process per search): RSS after the framework's imports, peak RSS (VmHWM) of the "
        "process, and the peak over the RSS right before the timed search (model built, warm-up done). Goal: nasprune "
        "no worse than modelopt.",
        "",
    ]
    rows = []
    for r in data["rows"]:
        n, m = r["nasprune"], r["modelopt"]
        dn, dm = n["rss_peak_mb"] - n["rss_before_mb"], m["rss_peak_mb"] - m["rss_before_mb"]
        imports = f"{n['rss_imports_mb']:.0f} / {m['rss_imports_mb']:.0f}" if "rss_imports_mb" in n else "-"
        rows.append(
            [
                r["model"],
                imports,
                f"{n['rss_peak_mb']:.0f} / {m['rss_peak_mb']:.0f}",
                f"{dn:.0f} / {dm:.0f}",
                "yes" if n["rss_peak_mb"] <= m["rss_peak_mb"] else "no",
            ]
        )
    header = ["model", "after imports MiB (np / mo)", "peak MiB (np / mo)", "peak over pre-search MiB", "np <= mo"]
    out.append(_table(header, rows))
    return "\n".join(out)


def render_scale(data: Mapping[str, Any]) -> str:
    """Scaling out: one search across 1 and 2 CPU processes (bench/scale.py)."""
    shape, machine = data.get("shape", {}), data.get("machine", {})
    out = [
        "## 5. Scaling out (one search across CPU processes)",
        "",
        f"`python bench/scale.py{' --quick' if shape.get('size') != 224 else ''}`: resnet18 (random init) at "
        f"{shape.get('size')}x{shape.get('size')}, data {shape.get('batches')} batches of {shape.get('batch_size')} "
        "random images, FLOPs 50%, binary searcher, `torchrun --nproc_per_node N`, one thread per process. "
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, load average "
        f"{machine.get('load_avg_1m', '?')} at the end (the notes say what else ran).",
        "",
    ]
    rows = []
    runs = [("`bench/scale.py`", r) for r in data.get("runs", [])]
    for rerun in data.get("reruns", []):
        runs += [(f"`{rerun['command'].removeprefix('python ')}` ({rerun.get('date', '?')})", r) for r in rerun["runs"]]
    for command, r in runs:
        par = r.get("parallel") or {}
        rows.append(
            [
                command,
                str(r["divisor"]),
                str(r["procs"]),
                f"{r['hparams']} / {r['choices']}" + (f" of {r['complete_map']}" if "complete_map" in r else ""),
                _num(r["wall_s"], 1),
                _num(r["search_s"], 1),
                _num(r.get("search_without_refit_s"), 1),
                _num(r.get("refit_s"), 1),
                str(r["evaluations"]),
                _num(r["search_without_refit_s"] / max(r["evaluations"], 1), 2),
                _num(par.get("evaluating_s"), 1) if par else "-",
                _num(par.get("waiting_s"), 1) if par else "-",
                f"{par['evaluated'] - par['used']}" if par else "-",
                str(par.get("together", "-")) if par else "-",
                f"{r['speedup_wall']}x / {r['speedup_search']}x / {r.get('speedup_without_refit', '-')}x / "
                f"{r.get('speedup_refit', '-')}x"
                if "speedup_wall" in r
                else "-",
                ("yes" if r["same_subnet"] else "NO") if "same_subnet" in r else "-",
                r.get("malloc", "system"),
            ]
        )
    header = [
        "run",
        "divisor",
        "procs",
        "hparams / choices scored (of a complete map)",
        "wall s",
        "search s",
        "search s without the refit",
        "refit s",
        "evaluations",
        "s / evaluation (without the refit)",
        "rank 0 evaluating s",
        "rank 0 waiting s",
        "unused ahead",
        "scored by all ranks together",
        "speed-up wall / search / without the refit / refit",
        "same subnet",
        "allocator",
    ]
    out.append(_table(header, rows))
    out += [
        "",
        "`python bench/gpu.py` (resnet50 at 224, 8 batches of 32: nasprune on a GPU vs modelopt FastNAS on the same "
        "GPU vs nasprune on the CPU) needs a CUDA GPU and writes `bench/results/gpu.json`; `--dry-run` runs every arm "
        "on the CPU with resnet18 at 64x64.",
    ]
    return "\n".join(out)


def render_map_cut(data: Mapping[str, Any]) -> str:
    """Evaluations the budget sensitivity map cuts against the complete map (bench/map_cut.py)."""
    rows = []
    for r in data.get("runs", []):
        same = r.get("same_subnet_as_complete")
        rows.append(
            [
                str(r["divisor"]),
                r["map"],
                str(r["hparams"]),
                str(r["choices_scored"]),
                str(r["evaluations"]),
                _num(r["seconds"], 1),
                _num(r["seconds"] / max(r["evaluations"], 1), 2),
                _num(r["flops_ratio"], 3),
                "-" if same is None else ("yes" if same else "NO"),
            ]
        )
    header = [
        "divisor",
        "map",
        "hparams",
        "choices scored",
        "evaluations",
        "search s",
        "s / evaluation",
        "FLOPs",
        "same subnet as the complete map",
    ]
    return "\n".join(
        [
            "### Evaluations cut by the budget sensitivity map",
            "",
            "`python bench/map_cut.py`: resnet18 (random init) at 112x112, 4 data batches of 8, FLOPs 50%, binary "
            "searcher without the refit, one thread; the default map (`budget`) against a complete monotone map that "
            "scores every choice.",
            "",
            _table(header, rows),
        ]
    )


def render(results: Mapping[str, Mapping[str, Any]], notes: str = "") -> str:
    """The whole BENCHMARKS.md."""
    out = [
        "# Benchmarks: nasprune vs NVIDIA modelopt and Torch-Pruning",
        "",
        "Generated by `make bench` (installs the `bench` extra, runs `bench/quality.py`, `bench/overhead.py`, "
        "`bench/latency.py`, `bench/training.py`, `bench/scale.py` and `bench/text.py`, each writing "
        "`bench/results/<name>.json`, then `bench/report.py`). Do not edit by hand: the analysis comes from "
        "`bench/notes.md`. The peers are used only in `bench/`.",
        "",
    ]
    if "quality" in results:
        out += [render_quality(results["quality"]), ""]
    else:
        out += ["## 1. Quality at equal FLOPs", "", "Not run.", ""]
    if "overhead" in results:
        out += [render_overhead(results["overhead"]), ""]
    else:
        out += ["## 2. Search overhead", "", "Not run.", ""]
    if "latency" in results:
        out += [render_latency(results["latency"]), ""]
    else:
        out += ["## 3. Real speedup", "", "Not run.", ""]
    if "overhead" in results:
        out += [render_memory(results["overhead"]), ""]
    if "training" in results:  # table 4, rendered by bench/training.py
        try:
            from training import render as render_training  # run as a script: bench/ is on the path
        except ImportError:
            from bench.training import render as render_training

        out += [render_training(results["training"]), ""]
    if "scale" in results:
        out += [render_scale(results["scale"]), ""]
    if "map_cut" in results:
        out += [render_map_cut(results["map_cut"]), ""]
    if "text" in results:  # table 6, rendered by bench/text.py
        try:
            from text import render as render_text  # run as a script: bench/ is on the path
        except ImportError:
            from bench.text import render as render_text

        out += [render_text(results["text"]), ""]
    if notes.strip():
        out += [notes.strip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--output", type=Path, default=HERE.parent / "BENCHMARKS.md")
    parser.add_argument("--suffix", default="", help="read <name><suffix>.json, e.g. _quick")
    parser.add_argument("--notes", type=Path, default=HERE / "notes.md")
    args = parser.parse_args(argv)
    results = load_results(args.results, args.suffix)
    notes = args.notes.read_text() if args.notes.is_file() else ""
    args.output.write_text(render(results, notes))
    print(f"wrote {args.output} from {', '.join(sorted(results)) or 'no results'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
