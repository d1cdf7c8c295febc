"""`nasprune finetune`: train a pruned model (KD from the original model, CE on labels, or both) and write it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import JsonOpt, ModelKwargsOpt, ModelOpt, OutputOpt, OverwriteOpt
from nasprune_cli.cli.progress import progress_mode
from nasprune_cli.cli.search import CollectOpt, QuietOpt
from nasprune_cli.cli.train import (
    AmpOpt,
    CheckpointEveryOpt,
    EpochsOpt,
    LossOpt,
    LrOpt,
    OptimizerOpt,
    StepsOpt,
    TemperatureOpt,
    TrainCheckpointOpt,
    TrainDataOpt,
    TrainDeviceOpt,
    TrainMaxBatchesOpt,
    TrainProgress,
    TrainScoreOpt,
    TrainSeedOpt,
    WeightDecayOpt,
    attach_score_info,
    check_files,
    print_training,
    score_fields,
    start_world,
)

PrunedInOpt = Annotated[
    Path, typer.Option("--pruned", help="Pruned-model file written by `nasprune search --output`.", show_default=False)
]


def finetune_command(
    model: ModelOpt,
    pruned: PrunedInOpt,
    output_path: OutputOpt,
    data: TrainDataOpt,
    model_kwargs: ModelKwargsOpt = None,
    collect: CollectOpt = None,
    score: TrainScoreOpt = None,
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
    """Fine-tune a pruned model, distilled from the original --model (kd), on labels (ce) or both; writes a pruned
    file that `export` and `restore` accept, and shows the score before and after."""
    from nasprune_cli.checkpoint import load_pruned, restore, save_finetuned
    from nasprune_cli.inputs import make_dummy_input
    from nasprune_cli.loading import build_model, parse_kwargs
    from nasprune_cli.searching.prepare import seed_everything
    from nasprune_cli.training import TrainSettings, finetune, training_data
    from nasprune_cli.training.data import training_device

    settings = TrainSettings(
        epochs=epochs, steps=steps, lr=lr, optimizer=optimizer, weight_decay=weight_decay, loss=loss,
        temperature=temperature, seed=seed, max_batches=max_batches,
        checkpoint=str(checkpoint) if checkpoint is not None else None, checkpoint_every=checkpoint_every,
        device=device, amp=amp,
    )  # fmt: skip
    kwargs = parse_kwargs(model_kwargs)
    check_files(output_path, checkpoint, overwrite, {"--pruned": pruned})
    stored = load_pruned(pruned)
    world = start_world(settings)
    seed_everything(seed)
    student = restore(build_model(model, kwargs), pruned)
    teacher = build_model(model, kwargs) if "kd" in loss.split("+") else None
    dummy = make_dummy_input(list(stored["input"]["shape"]), stored["input"].get("dtype", "float32"))
    prepared = training_data(data, dummy, score, collect, training_device(settings))
    with TrainProgress(progress_mode(quiet or not world.is_main)) as on_progress:
        attach_score_info(on_progress, prepared.score, prepared.score_name)
        result = finetune(student, teacher, prepared, settings, on_progress)
    if not world.is_main:  # rank 0 writes the file and reports
        return
    result.model.cpu()
    summary = {**result.summary(), **score_fields(prepared.score, prepared.score_name)}
    save_finetuned(output_path, stored, result.model, summary, overwrite=overwrite)
    if json_out:
        output.print_json({**summary, "output": str(output_path)})
    else:
        print_training(summary)
    output.info(f"wrote {output_path}")


def register(app: typer.Typer) -> None:
    """Add the `finetune` command to the app."""
    app.command("finetune")(finetune_command)
