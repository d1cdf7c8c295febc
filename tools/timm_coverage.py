"""Measure nasprune on the timm models of tools/timm_models.py (and a small GPT-2) and print docs/COVERAGE.md's timm
section: share of conv / linear parameters in prunable groups, smallest reachable FLOPs, the 60% result.

    python tools/timm_coverage.py [--size 224] [--write] [MODEL ...]

--write replaces the section in docs/COVERAGE.md (from MARKER to the transformers section of tools/hf_coverage.py,
or the end; tools/coverage.py keeps both). Given some models, it replaces their rows only and keeps the others', and
the header names the rows measured last.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasprune_cli import convert, load_recipe, search  # noqa: E402
from nasprune_cli.metrics.flops import fvcore_flops  # noqa: E402
from tools.timm_models import TIMM_ZOO  # noqa: E402
from tools.zoo_models import with_ratios  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fastnas.yaml"
COVERAGE = Path(__file__).resolve().parents[1] / "docs" / "COVERAGE.md"
MARKER = "<!-- timm section: written by tools/timm_coverage.py --write -->"
NEXT_MARKER = "<!-- transformers section: python tools/hf_coverage.py -->"  # the section after this one
NOTES = Path(__file__).resolve().with_name("timm_coverage_notes.md")


def weight_layers(model: nn.Module) -> dict[str, int]:
    """Parameters of every conv / linear-like layer (a weight with 2 or more dims), by module name."""
    return {
        name: sum(p.numel() for p in m.parameters(recurse=False))
        for name, m in model.named_modules()
        if getattr(m, "weight", None) is not None and m.weight.dim() >= 2 and name
    }


def measure(name: str, size: int) -> str:
    """One markdown row."""
    entry = TIMM_ZOO[name]
    model, x = entry.build(size), entry.input(size)
    layers = weight_layers(model)
    start = time.perf_counter()
    recipe = with_ratios(load_recipe(RECIPE), [0.25, 0.5, 0.75, 1.0])
    space = convert(copy.deepcopy(model), recipe, x)
    prunable = {m.rsplit(".", 1)[0] for hp in space.hparams.values() if hp.kind == "width" for m in hp.members}
    share = sum(n for layer, n in layers.items() if layer in prunable) / max(sum(layers.values()), 1)
    smallest = space.cost(space.min()).flops / space.original_cost.flops
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            result = search(space, {"flops": "60%"}, x, {"recipe": recipe, "max_batches": 1})
            pruned = result.model.eval()
            same = torch.allclose(pruned(x), space.model(x), rtol=1e-4, atol=1e-4)
            outcome = f"{fvcore_flops(pruned, x) / space.original_cost.flops:.3f}" + ("" if same else " (MISMATCH)")
        except Exception as exc:  # noqa: BLE001 - the table says why
            outcome = f"fails: {type(exc).__name__}: {str(exc)[:80]}"
            if "constraints cannot be met" in str(exc):
                outcome = f"fails: the smallest subnet is {smallest:.0%} of the FLOPs"
    seconds = time.perf_counter() - start
    frozen = sorted({f.reason.split(" (")[0][:90] for f in space.frozen if "model output" not in f.reason})
    shown = "<br>".join(frozen[:3]) + (f"<br>... {len(frozen) - 3} more reasons" if len(frozen) > 3 else "")
    size_note = entry.fixed_size or size
    gflops = space.original_cost.flops / 1e9
    return (
        f"| {name} | {size_note} | {gflops:.3f} | {len(space.hparams)} | {share:.0%} | {smallest:.3f} | {outcome} | "
        f"{seconds:.0f} | {shown or '-'} |"
    )


def main() -> None:
    """Print the section (and write it into docs/COVERAGE.md with --write)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("models", nargs="*", default=list(TIMM_ZOO))
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns = ["model", "input", "GFLOPs", "hparams", "conv/linear params prunable", "min", "60% result", "time s"]
    lines = [
        "| " + " | ".join([*columns, "frozen (besides the output)"]) + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.models:
        size = TIMM_ZOO[name].small if name.startswith("gpt2") else args.size
        lines.append(measure(name, size))
        print(lines[-1], flush=True)
    if args.write:
        write_section(lines, args.size, args.models)


def write_section(lines: list[str], size: int, models: list[str]) -> None:
    """Write the section into docs/COVERAGE.md; rows of models not measured now are kept from the file."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = COVERAGE.read_text() if COVERAGE.is_file() else ""
    before, _, after = text.partition(MARKER)
    rest = after[after.index(NEXT_MARKER) :] if NEXT_MARKER in after else ""  # hf_coverage.py's section
    measured = {line.split("|")[1].strip(): line for line in lines[2:]}
    if set(measured) == set(TIMM_ZOO):
        run = f"{stamp}, every model"
    else:
        kept = {line.split("|")[1].strip(): line for line in after.splitlines() if line.startswith("| ")}
        measured = {name: measured.get(name, kept.get(name)) for name in TIMM_ZOO if name in measured or name in kept}
        run = f"rows of {', '.join(models)} measured {stamp} by `... --write {' '.join(models)}`, the others earlier"
    header = (
        f"{MARKER}\n\n## timm models and a small GPT-2\n\nMeasured by `python tools/timm_coverage.py --size "
        f"{size} --write` ({run}; torch {torch.__version__}, 1 torch thread on two shared cores: the times are "
        "long).\n"
    )
    notes = NOTES.read_text().format(size=size)
    table = "\n".join([*lines[:2], *(row for row in measured.values() if row is not None)])
    section = f"{before.rstrip()}\n\n{header}\n{table}\n\n{notes}"
    COVERAGE.write_text(f"{section.rstrip()}\n\n{rest}" if rest else section)


if __name__ == "__main__":
    main()
