"""--checkpoint-every: a run killed (os._exit in a subprocess, no clean-up) after a mid-epoch checkpoint and resumed
ends with the same weights, bit for bit, as one straight run: the batch order, RNG states and optimizer come back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasprune_cli.training import TrainSettings, finetune
from nasprune_cli.training.state import load_train_state
from tests.unit.test_training_resume import PER_EPOCH, data, same_weights, small_model

STEPS, EVERY, KILL_AT = 8, 2, 5  # 3 batches per epoch: the checkpoint of step 4 is inside the second epoch

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def settings(checkpoint: Path | None = None) -> TrainSettings:
    path = str(checkpoint) if checkpoint is not None else None
    return TrainSettings(steps=STEPS, loss="ce+kd", seed=3, checkpoint=path, checkpoint_every=EVERY, device="cpu")


def child(checkpoint: str) -> None:
    """The process that is killed: fine-tunes and exits at once (os._exit: no finally, no atexit) after step KILL_AT."""
    torch.set_num_threads(1)

    def on_progress(stage: str, done: int, total: int) -> None:
        if done == KILL_AT:
            os._exit(9)

    finetune(small_model(), small_model(), data(), settings(Path(checkpoint)), on_progress=on_progress)


def test_killed_mid_epoch_and_resumed_equals_one_run(tmp_path: Path) -> None:
    ck = tmp_path / "ck.pt"
    code = f"from tests.unit.test_training_midepoch import child; child({str(ck)!r})"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    state = load_train_state(ck, torch.load(ck, weights_only=True)["fingerprint"])
    last = KILL_AT // EVERY * EVERY
    assert state["step"] == last and last % PER_EPOCH != 0  # a checkpoint inside an epoch
    assert sorted(state["order"]) == list(range(PER_EPOCH))
    straight = finetune(small_model(), small_model(), data(), settings()).model
    resumed = finetune(small_model(), small_model(), data(), settings(ck))
    assert resumed.log.resumed_from == last
    assert len(resumed.log.losses) == STEPS
    assert same_weights(resumed.model, straight)


def test_checkpoint_every_sets_when_the_file_is_written(tmp_path: Path) -> None:
    steps: list[int] = []
    ck = tmp_path / "ck.pt"

    def on_progress(stage: str, done: int, total: int) -> None:
        if ck.exists():
            steps.append(torch.load(ck, weights_only=True)["step"])
            ck.unlink()

    finetune(small_model(), small_model(), data(), settings(ck), on_progress=on_progress)
    assert steps == [2, 4, 6, 8]
    ck_epochs = TrainSettings(**{**settings(ck).to_dict(), "checkpoint_every": None, "steps": 7})
    steps.clear()
    finetune(small_model(), small_model(), data(), ck_epochs, on_progress=on_progress)
    assert steps == [3, 6, 7]  # every epoch's end, and the last step
