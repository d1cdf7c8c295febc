"""`nasprune search`: find the best subnet within a FLOPs / params budget, save it and show before / after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import (
    FlopsOpt,
    InputDtypeOpt,
    InputShapeOpt,
    JsonOpt,
    LatencyOpt,
    ModelKwargsOpt,
    ModelOpt,
    OverwriteOpt,
    ParamsOpt,
    RecipeOpt,
    SeedOpt,
    SetOpt,
    recipe_overrides,
    setting_flags,
)
from nasprune_cli.cli.progress import Progress as _Progress  # the name the search's tests and subclasses knew
from nasprune_cli.cli.progress import progress_mode

SearcherOpt = Annotated[
    str | None,
    typer.Option(
        "--searcher", help="binary (FastNAS), evolve (AutoNAS) or random; default: the recipe's.", show_default=False
    ),
]
ScoreOpt = Annotated[
    str | None,
    typer.Option(
        "--score",
        help="top1 / top5 (accuracy, %) or loss (cross-entropy) on the labelled --data batches, or a score function "
        "'pkg.module:fn', fn(model) -> float, higher is better unless it says otherwise (see the README). Default: the "
        "recipe's, else output agreement (R^2) with the original model.",
        show_default=False,
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="imagefolder:DIR (a folder of images, one subfolder per class), tensors:FILE (.pt / .npz with inputs "
        "and labels), options after '?' (e.g. imagefolder:val?batch=32), or a data function 'pkg.module:fn' "
        "returning an iterable of batches. Used for BN recalibration and scoring. Default: the recipe's, else random "
        "inputs (with a warning).",
        show_default=False,
    ),
]
CollectOpt = Annotated[
    str | None,
    typer.Option(
        "--collect",
        help="Function 'pkg.module:fn' turning a batch into the model's inputs. Default: the first element of a "
        "tuple / list batch, else the batch.",
        show_default=False,
    ),
]
MaxBatchesOpt = Annotated[
    int | None,
    typer.Option("--max-batches", help="Data batches used per score evaluation.", show_default=False),
]
IterationsOpt = Annotated[
    int | None,
    typer.Option("--iterations", help="evolve / random: subnets scored in total.", show_default=False),
]
PopulationOpt = Annotated[
    int | None,
    typer.Option("--population-size", help="evolve: subnets per generation.", show_default=False),
]
ReconstructOpt = Annotated[
    bool | None,
    typer.Option(
        "--reconstruct/--no-reconstruct",
        help="After the search, refit the kept weights of every conv / linear layer by least squares so that its "
        "outputs on the --data batches match the original model's (kept only when the score does not drop). "
        "Default: on when --data is given; --no-reconstruct keeps the original weights, as modelopt does.",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Search-state file, written after every step; re-running the same command resumes from it.",
        show_default=False,
    ),
]
FillOpt = Annotated[
    bool | None,
    typer.Option(
        "--fill/--no-fill",
        help="binary: after the threshold search, grow layers greedily while the budget allows (default: on). "
        "--no-fill keeps the plain threshold subnet, as modelopt does.",
        show_default=False,
    ),
]
DescentOpt = Annotated[
    bool | None,
    typer.Option(
        "--descent/--no-descent",
        help="binary: also build a subnet by cost-aware greedy descent on the sensitivity map, score it against the "
        "threshold subnet and keep the better one (default: on).",
        show_default=False,
    ),
]
SensitivityOpt = Annotated[
    str | None,
    typer.Option(
        "--sensitivity",
        help="binary: 'budget' (default: drops monotone in the width, only the choices the budget can reach are "
        "scored) or 'full' (every choice scored, measured drops as they are).",
        show_default=False,
    ),
]
WidthFloorOpt = Annotated[
    float | None,
    typer.Option(
        "--width-floor",
        help="binary: no layer narrower than this share of the uniform width ratio that meets the budget "
        "(0: no floor, the search without it; 1: no layer narrower than a uniform prune).",
        show_default=False,
    ),
]
RivalFloorOpt = Annotated[
    float | None,
    typer.Option(
        "--rival-floor",
        help="binary: also score a balanced rival, the descent with no layer narrower than this share of the uniform "
        "width ratio that meets the budget, and keep it when it scores higher (default: 0.5; 0: no rival).",
        show_default=False,
    ),
]
ImportanceOpt = Annotated[
    str | None,
    typer.Option(
        "--importance",
        help="Channel order: 'magnitude' (default: L1 of every side of a group), 'consumer' (L2 of the weights "
        "that read a channel) or 'activation' (mean |activation| that the reading layers take in on the --data "
        "batches: neurons, heads; Minitron-style).",
        show_default=False,
    ),
]
LatencyTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--latency-table",
        help="--latency: JSON table of layer times, read when it exists (same model, input, batch, threads), else "
        "measured on this machine and written. Default: <output>.latency.json next to --output.",
        show_default=False,
    ),
]
LatencyBatchOpt = Annotated[
    int | None,
    typer.Option("--latency-batch", help="--latency: batch size to measure at (default 1).", show_default=False),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress on stderr: neither the bars (on a terminal) nor the progress lines (in logs, under nohup).",
    ),
]
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write a self-contained HTML report (sensitivity curves or scored candidates, kept widths, FLOPs and "
        "params before / after) to this path, e.g. report.html. Needs matplotlib: pip install 'nasprune[report]'.",
        show_default=False,
    ),
]
SpaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--space",
        help="Search a trained space (`nasprune train --output`) or a converted one (`nasprune convert --output`) of "
        "--model instead of converting --model; pass the --recipe it was made with.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where the model runs during the search: auto (the first CUDA GPU, else the CPU; under torchrun the "
        "LOCAL_RANK GPU), cpu, cuda, cuda:N or mps. Default: the recipe's, else auto.",
        show_default=False,
    ),
]
SearchOutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Pruned-model file to write (e.g. pruned.pt).", show_default=False),
]


def search_command(
    ctx: typer.Context,
    model: ModelOpt,
    model_kwargs: ModelKwargsOpt = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    flops: FlopsOpt = None,
    params: ParamsOpt = None,
    latency: LatencyOpt = None,
    latency_table: LatencyTableOpt = None,
    latency_batch: LatencyBatchOpt = None,
    input_shape: InputShapeOpt = None,
    input_dtype: InputDtypeOpt = None,
    searcher: SearcherOpt = None,
    score: ScoreOpt = None,
    data: DataOpt = None,
    collect: CollectOpt = None,
    max_batches: MaxBatchesOpt = None,
    iterations: IterationsOpt = None,
    population_size: PopulationOpt = None,
    seed: SeedOpt = None,
    fill: FillOpt = None,
    descent: DescentOpt = None,
    sensitivity: SensitivityOpt = None,
    width_floor: WidthFloorOpt = None,
    rival_floor: RivalFloorOpt = None,
    importance: ImportanceOpt = None,
    reconstruct: ReconstructOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    output_path: SearchOutputOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
    space: SpaceOpt = None,
) -> None:
    """Search the best subnet within --flops / --params / --latency and write the pruned model (--output)."""
    from nasprune_cli.distributed import init_world
    from nasprune_cli.inputs import dummy_input_for
    from nasprune_cli.loading import build_model, parse_kwargs
    from nasprune_cli.metrics.score import score_info
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching import search, search_options
    from nasprune_cli.searching.prepare import seed_everything

    kwargs = parse_kwargs(model_kwargs)
    overrides = recipe_overrides(
        input_shape=input_shape, input_dtype=input_dtype, flops=flops, params=params, latency=latency
    )
    settings = setting_flags(ctx.params)  # every flag named like a field of the recipe's search section
    if settings:
        overrides.setdefault("search", {}).update(settings)
    loaded = load_recipe(recipe, overrides, "command line", sets=sets or ())
    config: dict[str, Any] = {"recipe": loaded, "model_spec": {"entry_point": model, "kwargs": kwargs}}
    wants_latency = loaded.search.constraints.get("latency") is not None
    if wants_latency and loaded.search.latency_table is None and output_path is not None:
        config["latency_table"] = str(output_path.with_name(f"{output_path.stem}.latency.json"))
    table = config.get("latency_table", loaded.search.latency_table) if wants_latency else None
    check_files(output_path, loaded.search.checkpoint, table, recipe, overwrite)  # fail before the slow part
    if report is not None:
        check_report(report, overwrite, output_path, recipe)

    world = init_world(loaded.search.device)  # under torchrun: rank 0 writes and reports, the others follow
    if not world.is_main:
        quiet = True
        _follower()
    seed_everything(loaded.search.seed)  # a builder that initialises randomly builds the same model every run
    net = build_model(model, kwargs)
    dummy_input = dummy_input_for(loaded, net)  # from the plain model (a token model's vocabulary, its keywords)
    if space is not None:
        net = restore_space_for(space, net, loaded)
    progress = _Progress(progress_mode(quiet))
    with progress as on_progress:
        options = search_options({**config, "on_progress": on_progress})
        progress.info = score_info(options.score.value, options.score.name)
        result = search(net, None, dummy_input, options)
    if not world.is_main:
        return
    write_results(result, output_path, report, json_out, overwrite)


def write_results(result: Any, output_path: Path | None, report: Path | None, json_out: bool, overwrite: bool) -> None:
    """Save the pruned file and the report, print the summary (a table, or JSON) and say what was written."""
    from nasprune_cli.checkpoint import save_pruned

    if output_path is not None:
        save_pruned(output_path, result, overwrite=overwrite)

    summary = result.summary()
    if report is not None:
        from nasprune_cli.report import report_data, write_report

        data = report_data(result.state, summary["layers"], result.config, result.searcher, result.stages)
        write_report(report, summary, data)
    if json_out:
        output.print_json({**summary, "output": str(output_path) if output_path is not None else None})
    else:
        print_summary(summary)
    latency_info = summary.get("latency")
    if latency_info is not None:
        output.info(_latency_note(latency_info))
    if report is not None:
        output.info(f"wrote {report}")
    if output_path is not None:
        output.info(f"wrote {output_path}")
    elif not json_out:
        output.info("pass --output pruned.pt to save the pruned model")


def restore_space_for(path: Path, net: Any, recipe: Any) -> Any:
    """The space of a `--space` file rebuilt on `net`; refused when it was made with other layer rules or input than
    the --recipe (the pruned file stores the --recipe, and `restore` rebuilds from it)."""
    from nasprune_cli.errors import CheckpointError
    from nasprune_cli.recipe.load import recipe_to_dict
    from nasprune_cli.space_file import load_space, restore_space

    stored, given = load_space(path), recipe_to_dict(recipe)
    for key in ("mode", "defaults", "rules", "input"):
        if (stored.get("recipe") or {}).get(key) != given.get(key):
            raise CheckpointError(
                f"--space {path}: the space was made with another recipe ({key} differs from the --recipe's); pass "
                "the --recipe (and --set / --input-shape) it was converted or trained with"
            )
    return restore_space(path, net)


def _follower() -> None:
    """A rank other than 0 shows no warnings (rank 0 shows the same ones); its errors are still printed."""
    import warnings

    warnings.filterwarnings("ignore")


def check_files(output_path: Path | None, checkpoint: Any, table: Any, recipe: Path | None, overwrite: bool) -> None:
    """Before the search: every file it writes can be written, and none is another file it reads (the output is
    written at the end; the checkpoint after every step; the latency table when it does not exist yet)."""
    from nasprune_cli.errors import CheckpointError
    from nasprune_cli.fileio import check_output

    checkpoint = Path(checkpoint) if checkpoint is not None else None
    table = Path(table) if table is not None else None
    if output_path is not None:
        check_output(
            output_path, overwrite, inputs={"--checkpoint": checkpoint, "--latency-table": table, "--recipe": recipe}
        )
    if checkpoint is not None:  # an existing checkpoint is resumed
        check_output(checkpoint, overwrite=True, inputs={"--latency-table": table, "--recipe": recipe})
    if table is not None and table.is_dir():
        raise CheckpointError(f"{table}: is a directory, expected the latency table's file path")
    if table is not None and not table.exists():  # an existing table is only read
        check_output(table, overwrite=False, inputs={"--recipe": recipe})


def check_report(report: Path, overwrite: bool, output_path: Path | None, recipe: Path | None) -> None:
    """Before the search: matplotlib is installed and the report's path can be written."""
    from nasprune_cli.fileio import check_output
    from nasprune_cli.report import require_matplotlib

    require_matplotlib()
    check_output(report, overwrite, inputs={"--output": output_path, "--recipe": recipe})


def _latency_note(info: dict[str, Any]) -> str:
    """Where the latency table came from, and how to make a rerun use the same one."""
    where = f"batch {info['batch']}, {info['threads']} thread(s)"
    if info["table"] is None:
        return f"measured a latency table ({where}) for this run only; pass --latency-table FILE to keep and reuse it"
    if info["measured"]:
        return f"measured a latency table ({where}) and wrote {info['table']}; reruns read it (delete it to re-measure)"
    return f"latency predicted from the table {info['table']} ({where})"


def _ratio(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "-"
    return f"{new / old:.1%}"


def _reconstruction_line(info: dict[str, Any], percent: bool = False) -> str:
    """One line on the least-squares refit of the kept weights: what it did to the score, or why it did not run."""
    from nasprune_cli.metrics.score import format_score

    if "score_after" not in info or not info.get("layers"):
        return f"weights not refitted: {info.get('reason', 'off')}"
    scores = f"score {format_score(info['score_before'], percent)} -> {format_score(info['score_after'], percent)}"
    if not info["applied"]:
        return f"weights not refitted: the refit lowered the {scores}; the searched weights are kept"
    return (
        f"weights refitted on the data: {info['layers']} layers, mean output error "
        f"{info['mean_error_before']:.1%} -> {info['mean_error_after']:.1%}, {scores} ({info['seconds']:.1f} s)"
    )


def print_summary(summary: dict[str, Any]) -> None:
    """Original vs pruned FLOPs, params and score, the per-layer channels and the subnet config."""
    from nasprune_cli.cli.profile import FLOPS_NOTE
    from nasprune_cli.metrics.score import format_score

    metrics = summary["metrics"]
    percent = bool(metrics.get("score_percent"))
    orig, pruned = metrics["original"], metrics["pruned"]
    rows = [
        (name, output.human(orig[key]), output.human(pruned[key]), _ratio(pruned[key], orig[key]))
        for name, key in (("FLOPs", "flops"), ("params", "params"))
    ]
    if "latency_ms" in metrics:
        lat = metrics["latency_ms"]
        rows.append(
            (
                "latency ms (predicted)",
                f"{lat['original']:.2f}",
                f"{lat['pruned']:.2f}",
                _ratio(lat["pruned"], lat["original"]),
            )
        )
        orig = {**orig, "latency": lat["original"]}
    scores = (format_score(orig["score"], percent), format_score(pruned["score"], percent))
    rows.append((metrics.get("score_measures", "score"), *scores, _ratio(pruned["score"], orig["score"])))
    output.print_table(output.table("Search result", ["", "original", "pruned", "pruned / original"], rows))
    output.print_text(f"{summary['searcher']} searcher, {metrics['evaluations']} score evaluations")
    limits = ", ".join(
        f"{name} <= {f'{bound:.3g} ms' if name == 'latency' else output.human(bound)} ({_ratio(bound, orig[name])})"
        for name, bound in summary["constraints"].items()
    )
    output.print_text(f"constraints: {limits}")
    direction = "higher is better" if metrics.get("score_higher_is_better", True) else "lower is better"
    label = metrics.get("score_label", metrics["score_name"])
    output.print_text(f"score: {label}, {direction} ({metrics['score_name']})")
    output.print_text(_reconstruction_line(summary.get("reconstruction") or {}, percent))
    output.print_text(FLOPS_NOTE)
    layers = summary["layers"]
    if layers:
        output.print_table(
            output.table(
                "Layers (channels kept; depth / kernel size for those hparams)",
                ["layer", "hparam", "original", "kept", "kept %"],
                [(r["layer"], r["hparam"], r["original"], r["kept"], _ratio(r["kept"], r["original"])) for r in layers],
            )
        )


def register(app: typer.Typer) -> None:
    """Add the `search` command to the app."""
    app.command("search")(search_command)
