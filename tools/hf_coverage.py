"""Regenerate the transformers section of docs/COVERAGE.md: what nasprune prunes in each supported family, on
randomly initialised models at real widths (fewer layers where a full model would not fit a CI machine).

Usage: python tools/hf_coverage.py [--models LlamaForCausalLM ...] [--output docs/COVERAGE.md]
docs/COVERAGE_HF.json: every row's figures; a run with --models updates those rows and keeps the others.
The section runs from MARKER to the end of the file; tools/coverage.py keeps it when it rewrites the table above.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune_cli import convert, load_recipe, search
from nasprune_cli.inputs import dummy_input_for
from nasprune_cli.metrics.flops import fvcore_flops

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- transformers section: python tools/hf_coverage.py -->"
SEQUENCE = 32
LAYERS = 2  # the widths are real, the depth is not: a CI machine searches these in minutes


def _families() -> dict[str, tuple[Any, dict[str, Any], str]]:
    """name -> (builder, input section, what the config is)."""
    import transformers as hf

    tokens = {"shape": [1, SEQUENCE], "dtype": "int64"}
    bert = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    return {
        "BertForSequenceClassification": (
            lambda: hf.BertForSequenceClassification(hf.BertConfig(**bert, num_hidden_layers=LAYERS)),
            tokens,
            "bert-base widths, 2 of 12 layers",
        ),
        "RobertaForSequenceClassification": (
            lambda: hf.RobertaForSequenceClassification(
                hf.RobertaConfig(**bert, num_hidden_layers=LAYERS, vocab_size=50265)
            ),
            tokens,
            "roberta-base widths, 2 of 12 layers",
        ),
        "LlamaForCausalLM": (
            lambda: hf.LlamaForCausalLM(
                hf.LlamaConfig(
                    hidden_size=2048,
                    num_attention_heads=32,
                    num_key_value_heads=8,
                    intermediate_size=8192,
                    num_hidden_layers=LAYERS,
                    vocab_size=32000,
                )
            ),
            tokens,
            "Llama-3.2-1B widths (GQA 32/8), 2 of 16 layers, vocab 32000",
        ),
        "Qwen2ForCausalLM": (
            lambda: hf.Qwen2ForCausalLM(
                hf.Qwen2Config(
                    hidden_size=896,
                    num_attention_heads=14,
                    num_key_value_heads=2,
                    intermediate_size=4864,
                    num_hidden_layers=LAYERS,
                    vocab_size=151936,
                )
            ),
            tokens,
            "Qwen2-0.5B widths (GQA 14/2), 2 of 24 layers",
        ),
        "GPT2LMHeadModel": (
            lambda: hf.GPT2LMHeadModel(hf.GPT2Config(n_embd=768, n_head=12, n_layer=LAYERS, vocab_size=50257)),
            tokens,
            "gpt2 (124M) widths, 2 of 12 layers, tied LM head",
        ),
        "ViTForImageClassification": (
            lambda: hf.ViTForImageClassification(hf.ViTConfig(**bert, num_hidden_layers=LAYERS)),
            {"shape": [1, 3, 224, 224]},
            "vit-base-patch16-224 widths, 2 of 12 layers",
        ),
    }


def prunable_params(space: Any) -> int:
    """Parameters of the layers that have a side in a prunable group (attention: its projections)."""
    prunable_ids = torch.zeros(len(space.grouping.group_of), dtype=torch.bool)
    for g in space._group_hparams.values():
        prunable_ids |= space.grouping.group_of == g
    names = {m for (m, _), vec in space._sides.items() if bool(prunable_ids[vec[vec >= 0]].any())}
    modules = dict(space.model.named_modules())
    seen: set[int] = set()
    total = 0
    for name in names:
        for p in modules[name].parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def run_family(build: Any, section: dict[str, Any]) -> dict[str, Any]:
    """Convert, profile and search one model to 60% of its FLOPs; the figures of its row."""
    torch.manual_seed(0)
    model: nn.Module = build().eval()
    recipe = load_recipe("fastnas", {"input": section}, "coverage")
    x = dummy_input_for(recipe, model)
    start = time.perf_counter()
    space = convert(model, recipe, x)
    kinds: dict[str, int] = {}
    for hp in space.hparams.values():
        kind = "heads" if hp.name.endswith(".head_features") else "widths" if hp.kind == "width" else hp.kind
        kinds[kind] = kinds.get(kind, 0) + 1
    original = space.original_cost
    smallest = space.cost(space.min())
    ratio: float | None = None
    if smallest.flops <= 0.6 * original.flops:  # else what is frozen (an LM head over a large vocabulary) weighs more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = search(space, {"flops": "60%"}, x, {"recipe": copy.deepcopy(recipe), "max_batches": 1})
        ratio = fvcore_flops(result.model, x) / original.flops
    return {
        "params": original.params,
        "kinds": kinds,
        "prunable": prunable_params(space) / original.params,
        "min_params": smallest.params / original.params,
        "min_flops": smallest.flops / original.flops,
        "result": ratio,
        "seconds": time.perf_counter() - start,
    }


def render(rows: dict[str, dict[str, Any]], notes: dict[str, str]) -> str:
    """The markdown section."""
    lines = [
        MARKER,
        "## transformers",
        "",
        "Randomly initialised models at the widths named (nothing is downloaded), converted with "
        f"`recipes/fastnas.yaml` on {SEQUENCE} token ids (ViT: one 224x224 image) and searched to 60% of the FLOPs "
        "with the default label-free score. Prunable: attention heads (`<attention>.head_features`: with "
        "grouped-query attention whole key/value groups with their query heads; GPT-2: the same heads in the q, k "
        "and v parts of its fused `c_attn`) and the MLP's intermediate width (Llama / Mistral / Qwen2: gate and up "
        "projections together). With `recipes/autonas.yaml` whole decoder / encoder layers are depth choices too "
        "(not in this table). The hidden size (embeddings, residual "
        "stream, LayerNorm / RMSNorm, the model's output) stays whole: transformers' attention and embeddings "
        "read it from the config. *hparams*: head groups and the other widths (MLPs, BERT's pooler); *prunable "
        "params*: share of all parameters in layers with a prunable side (the embeddings and the LM head are not, "
        "and with 2 layers they weigh more than in the full model); *min*: the smallest subnet's params and FLOPs "
        "/ original; *result*: fvcore FLOPs of the exported search result / original (not reachable where the "
        "frozen LM head over a large vocabulary weighs more than 60% with 2 layers).",
        "",
        "| model | config | params | hparams | prunable params | min params | min FLOPs | result | time s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | {notes[name]} | | | | | | **FAILED** {row['error']} | |")
            continue
        kinds = ", ".join(f"{n} {k}" for k, n in row["kinds"].items())
        result = "60% not reachable" if row["result"] is None else f"{row['result']:.3f}"
        lines.append(
            f"| {name} | {notes[name]} | {row['params'] / 1e6:.1f} M | {kinds} | {row['prunable']:.1%} | "
            f"{row['min_params']:.3f} | {row['min_flops']:.3f} | {result} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run every family and rewrite the section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    families = _families()
    parser.add_argument("--models", nargs="*", default=list(families), choices=list(families))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "COVERAGE.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = args.output.parent / "COVERAGE_HF.json"
    rows: dict[str, dict[str, Any]] = json.loads(store.read_text()) if store.is_file() else {}
    notes = {name: note for name, (_, _, note) in families.items()}
    for name in args.models:
        build, section, _ = families[name]
        print(f"{name} ...", flush=True)
        try:
            rows[name] = run_family(build, section)
        except Exception as exc:  # noqa: BLE001 - a failing model is a row of the table
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}".replace("|", "\\|")}
        print(f"{name}: {rows[name]}", flush=True)
    rows = {n: rows[n] for n in families if n in rows}
    store.write_text(json.dumps(rows, indent=1) + "\n")
    text = args.output.read_text() if args.output.is_file() else ""
    head = text.split(MARKER)[0].rstrip("\n")
    args.output.write_text((head + "\n\n" if head else "") + render(rows, notes))
    print(f"wrote {args.output}")
    return 0 if all("error" not in r for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
