"""The training checkpoint: model and optimizer state, step, torch RNG and losses, with the run's fingerprint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from nasprune_cli.checkpoint import fingerprint_difference
from nasprune_cli.errors import CheckpointError
from nasprune_cli.fileio import FORMAT_VERSION, atomic_save, digest, read_nasprune_file

KIND = "nasprune-train-state"


class TrainStateFile(BaseModel):
    """A training `--checkpoint` file."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    kind: str
    format_version: int
    fingerprint: dict[str, Any]
    fingerprint_digest: str
    step: int = Field(ge=0)
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    torch_rng: torch.Tensor
    losses: list[dict[str, float]]


def save_train_state(
    path: str | Path,
    fingerprint: Mapping[str, Any],
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: list[dict[str, float]],
) -> Path:
    """Write the state a resumed run needs to continue exactly where this one stopped (atomically)."""
    data = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "fingerprint": dict(fingerprint),
        "fingerprint_digest": digest(fingerprint),
        "step": step,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "losses": [dict(x) for x in losses],
    }
    return atomic_save(data, path)


def load_train_state(path: str | Path, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored training state, None when the file does not exist; a checkpoint of another run is refused."""
    path = Path(path)
    if not path.exists():
        return None
    hint = "delete it (or pass another --checkpoint) to start anew"
    data = read_nasprune_file(path, KIND, "training checkpoint", TrainStateFile, hint, checksum=False)
    if data["fingerprint_digest"] != digest(fingerprint):
        diff = fingerprint_difference(data["fingerprint"], fingerprint) or "fingerprint"
        raise CheckpointError(
            f"{path}: this checkpoint belongs to a different training run ({diff} differs); delete it or pass "
            "another --checkpoint to start anew"
        )
    return data
