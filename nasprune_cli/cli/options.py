"""Options shared by the commands (Annotated aliases) and the helpers that turn them into library inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from nasprune_cli.errors import NasPruneError

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model builder as 'pkg.module:attr', e.g. torchvision.models:resnet18.",
        show_default=False,
    ),
]
ModelKwargsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-kwargs", help="Keyword argument for the model builder as key=value (repeatable).", show_default=False
    ),
]
RecipeOpt = Annotated[
    Path | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Recipe YAML file (layer rules, search and input settings), or the name of a shipped recipe: fastnas, "
        "autonas, demo.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set a recipe key (repeatable), after the recipe file and before the other flags: a dotted key and a "
        "YAML value, e.g. --set search.fill=false, --set defaults.divisor=8, "
        "--set 'rules.nn.Conv2d.*.channel_divisor=8' (quote keys with glob patterns).",
        show_default=False,
    ),
]
InputShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Dummy input shape, e.g. 1,3,224,224 (';' between several inputs); overrides the recipe's input.shape.",
        show_default=False,
    ),
]
InputDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-dtype",
        help="Dummy input dtype: float32, float16, bfloat16 or int64 (token ids, drawn within the model's "
        "config.vocab_size or the recipe's input.high); overrides the recipe's input.dtype.",
        show_default=False,
    ),
]
FlopsOpt = Annotated[
    str | None,
    typer.Option(
        "--flops",
        help="FLOPs budget: a share of the original ('60%') or absolute ('450M', '4.5e8').",
        show_default=False,
    ),
]
ParamsOpt = Annotated[
    str | None,
    typer.Option(
        "--params",
        help="Parameter budget: a share of the original ('50%') or absolute ('5M', '5e6').",
        show_default=False,
    ),
]
LatencyOpt = Annotated[
    str | None,
    typer.Option(
        "--latency",
        help="Latency budget on this machine: a share of the original ('60%') or milliseconds ('25ms'), predicted "
        "from a latency table (see --latency-table).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Random seed (overrides the recipe's search.seed).", show_default=False)
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="File to write.", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")]

_DIMS = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*$")


def parse_input_shape(text: str) -> list[int] | list[list[int]]:
    """Parse '1,3,224,224' (or '1,3,224,224;1,10' for several inputs) into a shape or a list of shapes."""
    parts = [p for p in text.split(";")] if text.strip() else []
    if not parts or not all(_DIMS.match(p) for p in parts):
        raise NasPruneError(
            f"--input-shape: expected comma-separated positive integers such as 1,3,224,224 "
            f"(';' between several inputs) (got {text!r})"
        )
    if any(len(d.strip()) > 30 for p in parts for d in p.split(",")):
        raise NasPruneError(f"--input-shape: a dimension has more than 30 digits (got {text[:60]!r}...)")
    shapes = [[int(d) for d in p.split(",")] for p in parts]
    if any(d <= 0 for s in shapes for d in s):
        raise NasPruneError(f"--input-shape: every dimension must be positive (got {text!r})")
    return shapes[0] if len(shapes) == 1 else shapes


def recipe_overrides(
    input_shape: str | None = None,
    flops: str | None = None,
    params: str | None = None,
    latency: str | None = None,
    input_dtype: str | None = None,
) -> dict[str, Any]:
    """The recipe keys set on the command line, as nested overrides for `load_recipe`."""
    overrides: dict[str, Any] = {}
    if input_shape is not None:
        overrides["input"] = {"shape": parse_input_shape(input_shape)}
    if input_dtype is not None:
        overrides.setdefault("input", {})["dtype"] = input_dtype
    search: dict[str, Any] = {}
    given = (("flops", flops), ("params", params), ("latency", latency))
    constraints = {name: value for name, value in given if value is not None}
    if constraints:
        search["constraints"] = constraints
    if search:
        overrides["search"] = search
    return overrides


def setting_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The given command-line flags named like a search setting (a field of the recipe's `search` section)."""
    from nasprune_cli.recipe.schema import SearchSettings

    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in params.items()
        if name in SearchSettings.model_fields and value is not None
    }
