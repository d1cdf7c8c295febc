"""`nasprune report`: the HTML report of a finished search, from its pruned-model file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import OutputOpt, OverwriteOpt

PrunedArg = Annotated[
    Path, typer.Argument(help="Pruned-model file written by `nasprune search --output`.", show_default=False)
]


def report_command(pruned: PrunedArg, output_path: OutputOpt, overwrite: OverwriteOpt = False) -> None:
    """Write the self-contained HTML report of the search that wrote PRUNED (e.g. --output report.html)."""
    from nasprune_cli.checkpoint import load_pruned
    from nasprune_cli.fileio import check_output
    from nasprune_cli.report import missing_parts, require_matplotlib, write_report

    require_matplotlib()
    check_output(output_path, overwrite, inputs={"PRUNED": pruned})
    data = load_pruned(pruned)
    stored = data.get("report") or {}
    summary = {"searcher": stored.get("searcher"), "metrics": data.get("metrics") or {}}
    write_report(output_path, summary, stored)
    missing = missing_parts(stored)
    if missing:
        output.warn(
            f"{pruned}: written before reports were stored, the report lacks {', '.join(missing)}; run the search "
            "again with --report for the full one"
        )
    output.info(f"wrote {output_path}")


def register(app: typer.Typer) -> None:
    """Add the `report` command to the app."""
    app.command("report")(report_command)
