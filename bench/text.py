"""Text benchmark: a small BERT trained on a synthetic token task (bench/text_task.py), pruned to 50% of the params.

Per baseline seed: train BertForSequenceClassification (random init, 4 layers, hidden 64) to high accuracy, then prune
a copy of it to PARAMS_TARGET of the params with
  nasprune-magnitude   nasprune_cli.search, FastNAS, `importance: magnitude` (the default channel order);
  nasprune-activation  the same with `importance: activation` (Minitron-style: mean |activation| on the batches);
  ...-norefit          both without the least-squares refit of the kept weights (`reconstruct: False`);
  torch-pruning        Torch-Pruning's MetaPruner, L1 magnitude, whole heads (`prune_num_heads`) and MLP widths at one
                       uniform ratio, bisected on the params; the hidden size kept whole as in nasprune;
then fine-tune every pruned model the same way. Reports test accuracy after pruning and after the fine-tune, the params
ratio and the search time. Writes bench/results/text.json (`--quick`: text_quick.json, a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import text_task as task  # noqa: E402
from common import Timer, count_params, log, quiet, set_threads, write_result  # noqa: E402

# nasprune rows: search settings over the defaults; the no-refit rows show the channel order alone
NASPRUNE_SETTINGS = {
    "nasprune-magnitude": {"importance": "magnitude"},
    "nasprune-activation": {"importance": "activation"},
    "nasprune-magnitude-norefit": {"importance": "magnitude", "reconstruct": False},
    "nasprune-activation-norefit": {"importance": "activation", "reconstruct": False},
}
METHODS = (*NASPRUNE_SETTINGS, "torch-pruning")
DIVISOR = 16  # MLP width step (the heads are 16 wide)
# Torch-Pruning keeps every head of a layer when the ratio would remove all of them (ratio >= 0.8 with 4 heads), so
# the params jump back up and a bisection on the ratio fails; the head ratio is capped to keep one head of four
MAX_HEAD_RATIO = 0.75


@dataclass
class Pruned:
    """A pruned model, the seconds its method took, and what else the method reports."""

    model: nn.Module
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---- methods -----------------------------------------------------------------------------------------------
def nasprune_recipe() -> Any:
    """FastNAS defaults with token-id inputs and width step DIVISOR (whole heads, MLP widths in 16s)."""
    from nasprune_cli import load_recipe

    tokens = {"input": {"shape": [1, task.SEQ_LEN], "dtype": "int64"}}
    return load_recipe("fastnas", tokens, "bench", sets=[f"defaults.divisor={DIVISOR}"])


def run_nasprune(model: nn.Module, target: float, settings: dict[str, Any], val: task.Split, calib: list) -> Pruned:
    """nasprune_cli.search (FastNAS binary searcher, default settings but these) under a params budget."""
    from nasprune_cli import search

    recipe = nasprune_recipe()
    calls = [0]

    def score(m: nn.Module) -> float:
        calls[0] += 1
        return task.accuracy(m, val)

    config = {"recipe": recipe, "score": score, "data": calib, "max_batches": len(calib), **settings}
    with Timer() as t, quiet("text_nasprune"):
        result = search(model, {"params": f"{100 * target:g}%"}, calib[0][0][:1], config=config)
    refit = result.reconstruction.to_dict()
    extra = {"score_calls": calls[0], "refit_applied": refit.get("applied"), "refit_seconds": refit.get("seconds")}
    return Pruned(result.model, t.seconds, extra)


def tp_prune(model: nn.Module, ratio: float) -> nn.Module:
    """Torch-Pruning at one uniform ratio: whole heads and MLP widths by L1 magnitude, the hidden size kept whole."""
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    model = task.clone(model)
    attentions = [m for m in model.modules() if isinstance(m, BertSelfAttention)]
    num_heads = {getattr(a, p): a.num_attention_heads for a in attentions for p in ("query", "key", "value")}
    # every layer writing the hidden size is ignored: its group (the residual stream) stays whole, as in nasprune
    layers = model.bert.encoder.layer
    writers = [lay.attention.output.dense for lay in layers] + [lay.output.dense for lay in layers]
    with quiet("text_torch_pruning"):
        pruner = tp.pruner.MetaPruner(
            model,
            torch.zeros(1, task.SEQ_LEN, dtype=torch.long),
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=False,
            ignored_layers=[model.classifier, model.bert.pooler, *writers],
            num_heads=num_heads,
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=min(ratio, MAX_HEAD_RATIO),
            output_transform=lambda out: out.logits.sum(),
        )
        pruner.step()
    for a in attentions:  # head counts read by the forward: the head size is kept, the count follows the query
        a.num_attention_heads = a.query.out_features // a.attention_head_size
        a.all_head_size = a.query.out_features
    return model.eval()


def run_torch_pruning(model: nn.Module, target: float, steps: int) -> Pruned:
    """Bisection on the uniform ratio: the smallest ratio whose params are within the budget."""
    budget = count_params(model) * target
    lo, hi = 0.0, 0.95  # lo does not fit, hi fits
    with Timer() as t:
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            if count_params(tp_prune(model, mid)) <= budget:
                hi = mid
            else:
                lo = mid
        pruned = tp_prune(model, hi)
    return Pruned(pruned, t.seconds, {"ratio": round(hi, 5), "bisection_steps": steps})


def prune(method: str, baseline: nn.Module, target: float, val: task.Split, calib: list, steps: int) -> Pruned:
    """One method on its own copy of the baseline."""
    torch.manual_seed(0)
    model = task.clone(baseline)
    if method in NASPRUNE_SETTINGS:
        return run_nasprune(model, target, NASPRUNE_SETTINGS[method], val, calib)
    return run_torch_pruning(model, target, steps)


def widths(model: nn.Module) -> dict[str, list[int]]:
    """Heads and MLP width of every layer."""
    layers = model.bert.encoder.layer
    return {
        "heads": [lay.attention.self.query.out_features // lay.attention.self.attention_head_size for lay in layers],
        "mlp": [lay.intermediate.dense.out_features for lay in layers],
    }


# ---- the run -----------------------------------------------------------------------------------------------
def run_seed(seed: int, args: argparse.Namespace, splits: dict[str, task.Split]) -> list[dict[str, Any]]:
    """Train one baseline, prune it with every method, fine-tune each; one row per method (and the baseline)."""
    with Timer() as t:
        baseline = task.train(task.build_model(seed), splits["train"], args.train_steps, args.lr, seed)
    base_acc = task.accuracy(baseline, splits["test"])
    params = count_params(baseline)
    log(f"seed {seed}: baseline {100 * base_acc:.1f}% in {t.seconds:.0f} s ({params} params)")
    rows = [{"seed": seed, "method": "baseline", "params": params, "test_pruned": base_acc, "train_s": t.seconds}]
    calib = splits["train"].batches(args.batch_size, args.calib_batches)
    for target, method in [(t, m) for t in args.targets for m in args.methods]:
        pruned = prune(method, baseline, target, splits["val"], calib, args.bisection_steps)
        after = task.accuracy(pruned.model, splits["test"])
        tuned = task.train(task.clone(pruned.model), splits["train"], args.ft_steps, args.ft_lr, seed)
        row = {
            "seed": seed,
            "method": method,
            "target": target,
            "params": count_params(pruned.model),
            "params_ratio": count_params(pruned.model) / params,
            "test_pruned": after,
            "test_tuned": task.accuracy(tuned, splits["test"]),
            "search_s": pruned.seconds,
            "widths": widths(pruned.model),
            **pruned.extra,
        }
        tuned_pct = 100 * row["test_tuned"]
        log(f"  {target:g} {method}: params {row['params_ratio']:.3f}, {100 * after:.1f}% -> {tuned_pct:.1f}%")
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, short training; text_quick.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.3, 0.2], help="params budgets (shares)")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ft-steps", type=int, default=150, help="fine-tune steps after pruning (batch 32)")
    parser.add_argument("--ft-lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calib-batches", type=int, default=8, help="--data batches of the search (and refit)")
    parser.add_argument("--bisection-steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.targets, args.train_steps, args.ft_steps = args.seeds[:1], args.targets[:1], 150, 20
        args.bisection_steps = 6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    splits = {
        "train": task.make_split(20000, 100),
        "val": task.make_split(256, 101),
        "test": task.make_split(2000, 102),
    }
    shape = {k: v for k, v in task.CONFIG.items() if not k.endswith("_prob")}
    task_info = {"classes": task.CLASSES, "seq_len": task.SEQ_LEN, "own": task.OWN, "noise": task.NOISE, "model": shape}
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:  # written after every seed: an interrupted run keeps the seeds it finished
        rows += run_seed(seed, args, splits)
        data = {"args": vars(args), "task": task_info, "rows": rows}
        path = write_result("text_quick" if args.quick else "text", data)
        log(f"wrote {path} ({len({r['seed'] for r in rows})} seed(s))")
    return 0


# ---- BENCHMARKS.md section (called by bench/report.py) -----------------------------------------------------
def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def render(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    args, rows, info = data["args"], data["rows"], data["task"]
    seeds = sorted({r["seed"] for r in rows})
    base = [r for r in rows if r["method"] == "baseline"]
    model = info["model"]
    targets = ", ".join(f"{100 * t:g}%" for t in args["targets"])
    out = [
        "## 6. Text: a small BERT pruned by params (heads and MLP widths)",
        "",
        f"Produced by `{data['command']}` on {data['date']}, baseline seed(s) {', '.join(map(str, seeds))}. "
        f"BertForSequenceClassification (random init: {model['num_hidden_layers']} layers, hidden "
        f"{model['hidden_size']}, {model['num_attention_heads']} heads, MLP {model['intermediate_size']}, vocabulary "
        f"{model['vocab_size']}) trained {args['train_steps']} steps on a synthetic task ({info['classes']} classes: "
        f"the class with the most key tokens in a sequence of {info['seq_len']}, {info['own']} against "
        f"{info['noise']} of another class, `bench/text_task.py`). Pruned to {targets} of the params; then every "
        f"pruned model is fine-tuned {args['ft_steps']} steps (AdamW, lr {args['ft_lr']}). Test accuracy on 2000 "
        f"sequences, mean over the seeds. Unpruned: {100 * (_mean(base, 'test_pruned') or 0):.1f}%. Search s: the "
        "whole prune (nasprune: search and refit; Torch-Pruning: the bisection of its ratio).",
        "",
        "| params target | method | params | after pruning | after the fine-tune | search s | heads per layer | "
        "MLP width per layer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in args["targets"]:
        for method in args["methods"]:
            rs = [r for r in rows if r["method"] == method and r.get("target") == target]
            if not rs:
                continue
            first = rs[0]["widths"]
            out.append(
                f"| {100 * target:g}% | {method} | {_mean(rs, 'params_ratio'):.3f} | "
                f"{100 * _mean(rs, 'test_pruned'):.1f}% | {100 * _mean(rs, 'test_tuned'):.1f}% | "
                f"{_mean(rs, 'search_s'):.1f} | {'/'.join(map(str, first['heads']))} | "
                f"{'/'.join(map(str, first['mlp']))} |"
            )
    out += ["", "Widths are those of the first seed. Activation vs magnitude importance, per seed (after pruning, "]
    out[-1] += "then after the fine-tune, points):"
    out += [""] + [f"- {line}" for line in _pairs(rows, args)]
    return "\n".join(out)


def _pairs(rows: list[dict[str, Any]], args: dict[str, Any]) -> list[str]:
    """activation minus magnitude, per target and refit setting, per seed."""
    lines = []
    for target in args["targets"]:
        for suffix in ("", "-norefit"):
            diffs = []
            for seed in sorted({r["seed"] for r in rows}):
                pick = {r["method"]: r for r in rows if r["seed"] == seed and r.get("target") == target}
                act, mag = pick.get(f"nasprune-activation{suffix}"), pick.get(f"nasprune-magnitude{suffix}")
                if act and mag:
                    pruned, tuned = (round(100 * (act[k] - mag[k]), 1) + 0.0 for k in ("test_pruned", "test_tuned"))
                    diffs.append(f"{pruned:+.1f} / {tuned:+.1f}")
            if diffs:
                lines.append(f"{100 * target:g}%{' without the refit' if suffix else ''}: {', '.join(diffs)}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
