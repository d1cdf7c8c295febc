"""Training: a search space for AutoNAS (sandwich rule or random sampling) and fine-tuning pruned models (KD / CE).

For your own loop, `sample_during_training(space)` makes every training forward run a random subnet, and
`sandwich_step` / `distill_loss` are the built-in strategy's pieces; `train_space` and `finetune` run the whole loop.
"""

from nasprune_cli.training.autonas import SpaceTrainResult, subnet_scores, train_space
from nasprune_cli.training.data import TrainingData, training_data
from nasprune_cli.training.finetune import FinetuneResult, finetune
from nasprune_cli.training.loop import TrainLog, run_training
from nasprune_cli.training.losses import distill_loss, task_loss
from nasprune_cli.training.sampler import sample_during_training, sandwich_configs
from nasprune_cli.training.settings import LOSSES, OPTIMIZERS, SAMPLINGS, TrainSettings
from nasprune_cli.training.steps import SandwichStep, sandwich_step

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SAMPLINGS",
    "FinetuneResult",
    "SandwichStep",
    "SpaceTrainResult",
    "TrainLog",
    "TrainSettings",
    "TrainingData",
    "distill_loss",
    "finetune",
    "run_training",
    "sample_during_training",
    "sandwich_configs",
    "sandwich_step",
    "subnet_scores",
    "task_loss",
    "train_space",
    "training_data",
]
