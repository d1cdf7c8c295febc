"""Where the latency of table 3 goes: per-op CPU self time of the original and the pruned model (torch.profiler).

The model is pruned exactly as in bench/latency.py (uniform width ratio + balanced fill to the FLOPs budget).
Prints a markdown table (op, original ms, pruned ms, ratio) and the pruned conv widths, and writes the same to
bench/results/latency_profile_<model>_b<batch>.md.
Run: python bench/latency_profile.py --model resnet18 --batch 32
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import latency  # noqa: E402
from common import fvcore_flops, quiet, reexec_with_caching_malloc, set_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@torch.inference_mode()
def op_times_ms(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Self CPU time per aten op of one forward pass (after one warm-up pass), in milliseconds."""
    model(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") and event.self_cpu_time_total > 0:
            times[event.key] += event.self_cpu_time_total / 1e3
    return dict(times)


def conv_widths(model: nn.Module) -> list[str]:
    """`name in->out` of every convolution."""
    return [
        f"{name} {m.in_channels}->{m.out_channels}" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
    ]


def main(argv: list[str] | None = None) -> int:
    """Profile one zoo model before and after pruning and print where the time goes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--flops", type=float, default=60.0, help="FLOPs budget in %% of the original")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="ops shown, by original self time")
    args = parser.parse_args(argv)
    if argv is None:
        reexec_with_caching_malloc()  # the allocator table 3 is timed with
    set_threads(args.threads)
    from nasprune_cli.conversion import convert

    original = latency.build(args.model, {})
    dummy = torch.zeros(1, 3, args.size, args.size)
    with quiet(f"latency_profile_{args.model}"):
        space = convert(latency.build(args.model, {}), None, dummy)
        space.sort_parameters()
        config, _ = latency.prune_uniform(space, args.flops / 100.0)
        space.select(config)
        pruned = space.export().eval()
    flops_ratio = fvcore_flops(pruned, dummy) / fvcore_flops(original, dummy)
    x = torch.randn(args.batch, 3, args.size, args.size)
    before, after = op_times_ms(original, x), op_times_ms(pruned, x)
    total_before, total_after = sum(before.values()), sum(after.values())
    lines = [
        f"`python bench/latency_profile.py --model {args.model} --batch {args.batch}`: {args.model} at "
        f"{args.size}, batch {args.batch}, {args.threads} thread(s), FLOPs ratio {flops_ratio:.3f}, profiled "
        f"self time {total_before:.0f} -> {total_after:.0f} ms ({total_after / total_before:.3f}).",
        "",
        "| op | original ms | pruned ms | ratio | share of original |",
        "|---|---|---|---|---|",
    ]
    for op in sorted(before, key=lambda k: -before[k])[: args.top]:
        b, a = before[op], after.get(op, 0.0)
        lines.append(f"| `{op}` | {b:.1f} | {a:.1f} | {a / b:.2f} | {b / total_before:.0%} |")
    lines += ["", "Pruned convolutions: " + "; ".join(conv_widths(pruned))]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"latency_profile_{args.model}_b{args.batch}.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
