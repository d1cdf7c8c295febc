"""`nasprune train`: train a model's search space (every subnet at once) for AutoNAS and write the trained space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import (
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
from nasprune_cli.cli.progress import Progress, progress_mode
from nasprune_cli.cli.search import CollectOpt, QuietOpt

TrainDataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Training batches: a data function 'pkg.module:fn' returning an iterable of batches, imagefolder:DIR or "
        "tensors:FILE; (inputs, labels) batches for --loss ce.",
        show_default=False,
    ),
]
TrainScoreOpt = Annotated[
    str | None,
    typer.Option(
        "--score",
        help="Score to report before and after: top1 / top5 / loss on the labelled --data batches, or a score "
        "function 'pkg.module:fn', fn(model) -> float (e.g. accuracy on held-out data). Default: none.",
        show_default=False,
    ),
]
EpochsOpt = Annotated[
    int | None, typer.Option("--epochs", help="Passes over the data (default 1; --steps wins).", show_default=False)
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Optimizer steps in total.", show_default=False)]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr", help="Peak learning rate, cosine-decayed to 0 (default 1e-3 adamw, 1e-2 sgd).", show_default=False
    ),
]
OptimizerOpt = Annotated[str, typer.Option("--optimizer", help="adamw or sgd (momentum 0.9, nesterov).")]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="Weight decay of the optimizer.")]
LossOpt = Annotated[
    str,
    typer.Option(
        "--loss",
        help="kd (distill from the original model: KL on softened logits, MSE for other outputs), ce (cross-entropy "
        "on the batch labels) or ce+kd.",
    ),
]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="kd: softmax temperature T (loss scaled by T^2).")]
TrainMaxBatchesOpt = Annotated[
    int | None, typer.Option("--max-batches", help="Batches of --data per epoch (default: all).", show_default=False)
]
TrainSeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (batch order, subnet sampling, dropout).")]
TrainCheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Training-state file, written every --checkpoint-every steps; re-running the same command (also after "
        "a kill mid-epoch) resumes from it exactly.",
        show_default=False,
    ),
]
CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--checkpoint-every",
        help="Optimizer steps between two writes of --checkpoint (default: at the end of every epoch).",
        show_default=False,
    ),
]
TrainDeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the model, the teacher and the batches run: auto (the first CUDA GPU, else the CPU; under torchrun "
        "the LOCAL_RANK GPU), cpu, cuda, cuda:N or mps. Files written hold CPU tensors.",
    ),
]
AmpOpt = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help="Mixed precision (autocast to float16 + GradScaler). Default: on for CUDA, off elsewhere (CUDA only).",
        show_default=False,
    ),
]
SamplingOpt = Annotated[
    str,
    typer.Option(
        "--sampling",
        help="sandwich (largest subnet on --loss, smallest and 2 random ones distilled from it, every step) or random "
        "(one random subnet per step).",
    ),
]


class TrainProgress(Progress):
    """The search's progress display (bars on a terminal, lines in logs), counting training steps, with the mean loss
    of the last steps."""

    LABELS = {"train": "train"}
    UNITS = {"train": "steps"}
    WINDOW = 10  # steps in the mean loss shown

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.losses: list[float] = []
        self.epoch_text = ""  # the scores at the end of the last epoch

    def on_epoch(self, epoch: int, epochs: int, scores: dict[str, float]) -> None:
        """The scores at the end of an epoch (the library calls it when there is a score): shown next to the loss,
        and a line of its own in logs."""
        fmt = self.info.format if self.info is not None else (lambda v: f"{v:.4g}")
        label = self.info.label if self.info is not None else "score"
        values = ", ".join(fmt(v) if k == "model" else f"{k} {fmt(v)}" for k, v in scores.items())
        self.epoch_text = f"epoch {epoch}/{epochs} {label}: {values}"
        if self.mode == "lines":
            output.info(self.epoch_text)

    def on_loss(self, losses: dict[str, float]) -> None:
        """A step's losses (the library calls it after every optimizer step)."""
        if "loss" in losses:
            self.losses = [*self.losses[-(self.WINDOW - 1) :], losses["loss"]]

    def score_text(self, prefix: str = "") -> str:
        """e.g. 'loss 0.4321 (mean of the last 10 steps), epoch 2/4 val accuracy: 97.10%'."""
        if not self.losses:
            return ""
        text = f"{prefix}loss {sum(self.losses) / len(self.losses):.4f} (mean of the last {len(self.losses)} steps)"
        return text + (f", {self.epoch_text}" if self.epoch_text else "")


def train_command(
    model: ModelOpt,
    output_path: OutputOpt,
    data: TrainDataOpt,
    model_kwargs: ModelKwargsOpt = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    input_shape: InputShapeOpt = None,
    collect: CollectOpt = None,
    score: TrainScoreOpt = None,
    sampling: SamplingOpt = "sandwich",
    loss: LossOpt = "kd",
    temperature: TemperatureOpt = 4.0,
    epochs: EpochsOpt = None,
    steps: StepsOpt = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = "adamw",
    weight_decay: WeightDecayOpt = 1e-4,
    max_batches: TrainMaxBatchesOpt = None,
    seed: TrainSeedOpt = 0,
    checkpoint: TrainCheckpointOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    device: TrainDeviceOpt = "auto",
    amp: AmpOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the search space of a model (AutoNAS) and write the trained space for `nasprune search --space`."""
    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import dummy_input_for
    from nasprune_cli.loading import build_model, parse_kwargs
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching.prepare import seed_everything
    from nasprune_cli.space_file import save_space
    from nasprune_cli.training import TrainSettings, train_space, training_data
    from nasprune_cli.training.data import training_device

    settings = TrainSettings(
        epochs=epochs, steps=steps, lr=lr, optimizer=optimizer, weight_decay=weight_decay, loss=loss,
        temperature=temperature, sampling=sampling, seed=seed, max_batches=max_batches,
        checkpoint=str(checkpoint) if checkpoint is not None else None, checkpoint_every=checkpoint_every,
        device=device, amp=amp,
    )  # fmt: skip
    kwargs = parse_kwargs(model_kwargs)
    loaded = load_recipe(recipe, recipe_overrides(input_shape=input_shape), "command line", sets=sets or ())
    check_files(output_path, checkpoint, overwrite, {"--recipe": recipe})
    world = start_world(settings)
    seed_everything(seed)
    dummy = dummy_input_for(loaded)
    space = convert(build_model(model, kwargs), loaded, dummy)
    prepared = training_data(data, dummy, score, collect, training_device(settings))
    with TrainProgress(progress_mode(quiet or not world.is_main)) as on_progress:
        attach_score_info(on_progress, prepared.score, prepared.score_name)
        result = train_space(space, prepared, settings, on_progress, importance=loaded.search.importance)
    if not world.is_main:  # rank 0 writes the file and reports
        return
    space.model.cpu()
    summary = {**result.summary(), **score_fields(prepared.score, prepared.score_name)}
    save_space(output_path, space, {"entry_point": model, "kwargs": kwargs}, loaded, overwrite, training=summary)
    if json_out:
        output.print_json({**summary, "output": str(output_path)})
    else:
        print_training(summary)
    output.info(f"wrote {output_path}; search it with `nasprune search --space {output_path} ...`")


def start_world(settings: Any) -> Any:
    """Under torchrun, join the process group (the same set-up as the search: one GPU per rank, or the CPU threads
    shared out); a rank other than 0 shows no warnings. A single process is left as it is."""
    from nasprune_cli.distributed import init_world

    world = init_world(settings.device)
    if not world.is_main:
        import warnings

        warnings.filterwarnings("ignore")
    return world


def check_files(output_path: Path, checkpoint: Path | None, overwrite: bool, inputs: dict[str, Any]) -> None:
    """Before training: the output can be written and is none of the inputs; the checkpoint neither."""
    from nasprune_cli.fileio import check_output

    check_output(output_path, overwrite, inputs={**inputs, "--checkpoint": checkpoint})
    if checkpoint is not None:  # an existing checkpoint is resumed
        check_output(checkpoint, overwrite=True, inputs=inputs)


def print_training(summary: dict[str, Any]) -> None:
    """A table of the training: steps, epochs, losses, time, and the scores before / after when scored."""
    rows: list[tuple[Any, ...]] = [
        ("steps", summary["steps"]),
        ("epochs", f"{summary['epochs']:.2f}"),
        ("seconds", f"{summary['seconds']:.1f}"),
    ]
    if summary["resumed_from_step"]:
        rows.append(("resumed from step", summary["resumed_from_step"]))
    rows += [(f"final {k} (mean of last 10 steps)", f"{v:.4f}") for k, v in summary["final_loss"].items()]
    output.print_table(output.table("Training", ["", "value"], rows))
    if not summary.get("score"):
        return
    pct = summary.get("score_percent", False)
    if "scores_before" in summary:  # a trained space: its largest and smallest subnets
        before, after = summary["scores_before"], summary["scores_after"]
        names = ("largest", "smallest")
        table = [(f"{name} subnet", _fmt(before[name], pct), _fmt(after[name], pct)) for name in names]
    else:
        table = [("model", _fmt(summary["score_before"], pct), _fmt(summary["score_after"], pct))]
    output.print_table(output.table("Score", ["", "before", "after"], table))
    print_epoch_scores(summary.get("epoch_scores") or [], pct)
    output.print_text(f"score: {summary['score_label']} ({summary['score']})")


def print_epoch_scores(epochs: list[dict[str, float]], percent: bool) -> None:
    """A table of the scores measured at the end of every epoch (model, or largest / smallest subnet)."""
    if not epochs:
        return
    names = [k for k in epochs[0] if k not in ("epoch", "step")]
    rows = [(int(e["epoch"]), int(e["step"]), *(_fmt(e.get(n), percent) for n in names)) for e in epochs]
    output.print_table(output.table("Score per epoch", ["epoch", "step", *names], rows))


def attach_score_info(progress: Any, score: Any, name: str | None) -> None:
    """Tell the progress display (None with --quiet) what the score measures, for its per-epoch scores."""
    if progress is None or score is None:
        return
    from nasprune_cli.metrics.score import score_info

    progress.info = score_info(score, name or "score")


def score_fields(score: Any, name: str | None) -> dict[str, Any]:
    """What the summary says of the score: its spec, its label and whether it is shown as a percent."""
    if score is None:
        return {"score": None, "score_label": None, "score_percent": False}
    from nasprune_cli.metrics.score import score_info

    info = score_info(score, name or "score")
    return {"score": name, "score_label": info.label, "score_percent": info.percent}


def _fmt(value: float | None, percent: bool = False) -> str:
    from nasprune_cli.metrics.score import format_score

    return format_score(value, percent)


def register(app: typer.Typer) -> None:
    """Add the `train` command to the app."""
    app.command("train")(train_command)
