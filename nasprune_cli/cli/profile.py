"""`nasprune profile`: FLOPs / params of the smallest, middle and largest subnets, and whether budgets fit."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import (
    FlopsOpt,
    InputDtypeOpt,
    InputShapeOpt,
    JsonOpt,
    ModelKwargsOpt,
    ModelOpt,
    ParamsOpt,
    RecipeOpt,
    SetOpt,
    recipe_overrides,
)

FLOPS_NOTE = "FLOPs: one per multiply-add, counted by fvcore on the dummy input in eval mode"
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit with status 1 when a constraint cannot be met.")]
ExplainOpt = Annotated[
    str | None,
    typer.Option(
        "--explain",
        metavar="LAYER",
        help="Explain one layer (e.g. layer1.0.conv1): the groups of coupled channels it creates or reads, the "
        "layers coupled with it, and why each group is prunable or frozen. Without --recipe the default rules apply.",
        show_default=False,
    ),
]


def profile_command(
    model: ModelOpt,
    model_kwargs: ModelKwargsOpt = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    flops: FlopsOpt = None,
    params: ParamsOpt = None,
    input_shape: InputShapeOpt = None,
    input_dtype: InputDtypeOpt = None,
    strict: StrictOpt = False,
    explain: ExplainOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Profile a model's search space (with --recipe) or the plain model: FLOPs, params, constraints."""
    from nasprune_cli import profile
    from nasprune_cli.inputs import dummy_input_for
    from nasprune_cli.loading import build_model, parse_kwargs
    from nasprune_cli.recipe.load import load_recipe

    kwargs = parse_kwargs(model_kwargs)
    overrides = recipe_overrides(input_shape=input_shape, input_dtype=input_dtype, flops=flops, params=params)
    # without --recipe (or --set) the plain model is profiled; the budgets are still validated like a recipe's
    loaded = load_recipe(recipe, overrides, "command line", sets=sets or ())
    space_recipe = loaded if recipe is not None or sets else None
    net = build_model(model, kwargs)
    if explain is not None:
        return explain_layer(net, space_recipe, dummy_input_for(loaded, net), explain, json_out)
    report = profile(
        net,
        recipe=space_recipe,
        dummy_input=dummy_input_for(loaded, net),
        constraints=dict(loaded.search.constraints),
    )

    data = report.to_dict()
    if json_out:
        output.print_json(data)
    else:
        print_report(data)
    if strict and not data.get("all_satisfiable", True):
        failed = [c["name"] for c in data["constraints"] if not c["satisfiable"]]
        output.error(f"--strict: constraint(s) {', '.join(failed)} cannot be met by any subnet of this search space")
        raise typer.Exit(1)


def print_report(data: dict[str, Any]) -> None:
    """Print the cost table, the search-space size, the constraints and the frozen layers."""
    flops, params = data["flops"], data["params"]
    title = "Search space cost" if data["converted"] else "Model cost (not converted: pass --recipe for a space)"
    output.print_table(
        output.table(
            title,
            ["", "min", "centroid", "max", "max/min"],
            [
                ("FLOPs", *(output.human(flops[k]) for k in ("min", "centroid", "max")), f"{data['flops_ratio']:.2f}x"),
                (
                    "params",
                    *(output.human(params[k]) for k in ("min", "centroid", "max")),
                    f"{data['params_ratio']:.2f}x",
                ),
            ],
        )
    )
    output.print_text(FLOPS_NOTE)
    output.print_text(f"search space: {data['size']} subnets, {data['num_hparams']} hparams")
    if data["constraints"]:
        output.print_table(
            output.table(
                "Constraints",
                ["constraint", "limit", "smallest achievable", "satisfiable"],
                [
                    (
                        c["name"],
                        output.human(c["limit"]),
                        output.human(c["min_value"]),
                        "yes" if c["satisfiable"] else "NO",
                    )
                    for c in data["constraints"]
                ],
            )
        )
    if data.get("frozen"):
        output.print_table(
            output.table(
                "Frozen layers (kept whole)", ["layer", "reason"], [(f["name"], f["reason"]) for f in data["frozen"]]
            )
        )


def explain_layer(net: Any, recipe: Any, dummy_input: Any, layer: str, json_out: bool) -> None:
    """Convert the model and print why one layer's channels are prunable or frozen."""
    from nasprune_cli.conversion import convert
    from nasprune_cli.explain import explain

    data = explain(convert(net, recipe, dummy_input), layer).to_dict()
    if json_out:
        output.print_json(data)
        return
    output.print_text(f"{data['layer']} ({data['layer_type']})")
    if not data["groups"]:
        output.print_text("its channels are not coupled to any convertible layer: nothing to prune here")
    for g in data["groups"]:
        output.print_table(
            output.table(
                f"{g['role']} {g['group']}: {g['status'].upper()}",
                ["", ""],
                [
                    ("why", g["reason"]),
                    ("channels", g["channels"]),
                    ("width choices", ", ".join(str(c) for c in g["choices"])),
                    ("created by", ", ".join(g["sources"])),
                    ("coupled layer sides", ", ".join(g["coupled"])),
                ],
            )
        )


def register(app: typer.Typer) -> None:
    """Add the `profile` command to the app."""
    app.command("profile")(profile_command)
