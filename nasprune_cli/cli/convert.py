"""`nasprune convert`: turn a model into a search space, save it and show its hparams and frozen layers."""

from __future__ import annotations

from typing import Any

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import (
    InputDtypeOpt,
    InputShapeOpt,
    JsonOpt,
    ModelKwargsOpt,
    ModelOpt,
    OutputOpt,
    OverwriteOpt,
    RecipeOpt,
    SetOpt,
    recipe_overrides,
)

_MAX_CHOICES_SHOWN = 8
_MAX_LAYERS_SHOWN = 6


def convert_command(
    model: ModelOpt,
    output_path: OutputOpt,
    model_kwargs: ModelKwargsOpt = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    input_shape: InputShapeOpt = None,
    input_dtype: InputDtypeOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a model into a search space (recipe rules) and save it; prints the hparams and frozen layers."""
    from nasprune_cli import convert
    from nasprune_cli.fileio import check_output
    from nasprune_cli.inputs import dummy_input_for
    from nasprune_cli.loading import build_model, parse_kwargs
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.space_file import save_space

    kwargs = parse_kwargs(model_kwargs)
    loaded = load_recipe(
        recipe, recipe_overrides(input_shape=input_shape, input_dtype=input_dtype), "command line", sets=sets or ()
    )
    check_output(output_path, overwrite, inputs={"--recipe": recipe})  # fail before the slow part
    net = build_model(model, kwargs)
    space = convert(net, loaded, dummy_input_for(loaded, net))
    save_space(output_path, space, {"entry_point": model, "kwargs": kwargs}, loaded, overwrite=overwrite)

    rows = space_rows(space)
    frozen = [{"name": f.name, "reason": f.reason} for f in space.frozen]
    if json_out:
        output.print_json(
            {
                "output": str(output_path),
                "size": space.size(),
                "num_hparams": len(rows),
                "hparams": rows,
                "frozen": frozen,
            }
        )
        return
    print_space(rows, frozen, space.size())
    output.info(f"wrote {output_path}")


def space_rows(space: Any) -> list[dict[str, Any]]:
    """One JSON-able row per hparam: name, kind, choices, original, layers and group members."""
    return [
        {
            "hparam": hp.name,
            "kind": hp.kind,
            "choices": list(hp.choices),
            "original": hp.original,
            "layers": layers_of(hp.members),
            "members": list(hp.members),
        }
        for hp in space.hparams.values()
    ]


def layers_of(members: Any) -> list[str]:
    """Layer names of group members ('layer1.0.conv1.out' -> 'layer1.0.conv1'), in order, without repeats."""
    layers: dict[str, None] = {}
    for member in members:
        layer, _, side = member.rpartition(".")
        layers[layer if side in ("in", "out", "features", "channels") else member] = None
    return list(layers)


def print_space(rows: list[dict[str, Any]], frozen: list[dict[str, str]], size: int) -> None:
    """Print the hparam table, the frozen layers and the size of the space."""
    table_rows = [(r["hparam"], r["kind"], _choices(r["choices"]), r["original"], _layers(r["layers"])) for r in rows]
    output.print_table(
        output.table("Search space", ["hparam", "kind", "choices", "original", "layers (group members)"], table_rows)
    )
    if frozen:
        output.print_table(
            output.table("Frozen layers (kept whole)", ["layer", "reason"], [(f["name"], f["reason"]) for f in frozen])
        )
    output.print_text(f"{len(rows)} hparams, {size} subnets, {len(frozen)} frozen layers")


def _choices(choices: list[int]) -> str:
    if len(choices) <= _MAX_CHOICES_SHOWN:
        return ", ".join(map(str, choices))
    return f"{', '.join(map(str, choices[:3]))}, ..., {choices[-1]} ({len(choices)} choices)"


def _layers(layers: list[str]) -> str:
    shown = ", ".join(layers[:_MAX_LAYERS_SHOWN])
    return shown if len(layers) <= _MAX_LAYERS_SHOWN else f"{shown} (+{len(layers) - _MAX_LAYERS_SHOWN} more)"


def register(app: typer.Typer) -> None:
    """Add the `convert` command to the app."""
    app.command("convert")(convert_command)
