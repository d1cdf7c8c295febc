"""`nasprune export`: rebuild a pruned model from its original and write it as a deployable file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import JsonOpt, ModelKwargsOpt, OutputOpt, OverwriteOpt

PrunedOpt = Annotated[
    Path,
    typer.Option("--pruned", "-p", help="Pruned-model file written by `nasprune search --output`.", show_default=False),
]
ExportModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Original model builder 'pkg.module:attr' (needed unless --trust-entry-point: nasprune does not call "
        "what a file names).",
        show_default=False,
    ),
]
TrustEntryPointOpt = Annotated[
    bool,
    typer.Option(
        "--trust-entry-point",
        help="Build the original model with the builder and kwargs stored in the pruned file (this runs code the "
        "file names: only for files you trust).",
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="state_dict (tensors only), torchscript, or onnx (checked against torch with onnxruntime).",
    ),
]


def export_command(
    pruned: PrunedOpt,
    output_path: OutputOpt,
    model: ExportModelOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    fmt: FormatOpt = "state_dict",
    overwrite: OverwriteOpt = False,
    trust_entry_point: TrustEntryPointOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rebuild the pruned model from a fresh original model and write it (state_dict, torchscript or onnx)."""
    from nasprune_cli.checkpoint import EXPORT_FORMATS, load_pruned, restore, write_deployable
    from nasprune_cli.errors import CheckpointError
    from nasprune_cli.fileio import check_output
    from nasprune_cli.inputs import dummy_input_from_spec
    from nasprune_cli.loading import build_model, parse_kwargs

    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"--format: unknown format {fmt!r} (expected one of {', '.join(EXPORT_FORMATS)})")
    check_output(output_path, overwrite, inputs={"--pruned": pruned})
    data = load_pruned(pruned)
    spec = data["model"]
    if model is None and not trust_entry_point:
        raise CheckpointError(
            f"{pruned}: no --model given, and nasprune does not call the model builder a file names (stored: "
            f"{spec['entry_point']} with kwargs {spec.get('kwargs') or {}}); pass --model {spec['entry_point']} after "
            "checking it is the model you expect, or --trust-entry-point"
        )
    entry_point = model or spec["entry_point"]
    kwargs = parse_kwargs(model_kwargs) if model_kwargs else dict(spec.get("kwargs") or {})
    original = build_model(entry_point, kwargs)
    dummy = dummy_input_from_spec(data["input"], original)  # before restore: the model's config and forward
    net = restore(original, pruned)
    result = write_deployable(net, output_path, fmt, dummy, overwrite=overwrite)
    params = sum(p.numel() for p in net.parameters())
    if json_out:
        output.print_json({**result, "params": params})
        return
    check = "" if result["max_abs_diff"] is None else f", max |difference| to torch {result['max_abs_diff']:.2e}"
    output.print_text(f"{fmt} model with {output.human(params)} params{check}")
    output.info(f"wrote {output_path}")


def register(app: typer.Typer) -> None:
    """Add the `export` command to the app."""
    app.command("export")(export_command)
