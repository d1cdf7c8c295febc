"""The training checkpoint: model, optimizer and GradScaler state, the step and the epoch's batch order (the position
inside the epoch), the torch RNG states (CPU and CUDA) and the losses, with the run's fingerprint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    cuda_rng: list[torch.Tensor] = Field(default_factory=list)
    order: list[int] = Field(default_factory=list)
    scaler: dict[str, Any] = Field(default_factory=dict)
    losses: list[dict[str, float]]
    epoch_scores: list[dict[str, float]] = Field(default_factory=list)


@dataclass(frozen=True)
class TrainState:
    """Where a run stands after a step: the step, the epoch's batch order, the losses so far, the scaler's state and
    the scores measured at the ends of the epochs so far."""

    step: int
    order: list[int]
    losses: list[dict[str, float]]
    scaler: dict[str, Any]
    epoch_scores: list[dict[str, float]] = field(default_factory=list)


def save_train_state(
    path: str | Path,
    fingerprint: Mapping[str, Any],
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Write the state a resumed run needs to continue exactly where this one stopped (atomically)."""
    data = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "fingerprint": dict(fingerprint),
        "fingerprint_digest": digest(fingerprint),
        "step": state.step,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else [],
        "order": list(state.order),
        "scaler": dict(state.scaler),
        "losses": [dict(x) for x in state.losses],
        "epoch_scores": [dict(x) for x in state.epoch_scores],
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


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set torch's CPU (and, when stored and present, CUDA) random generators to a checkpoint's states."""
    torch.set_rng_state(state["torch_rng"])
    cuda = state.get("cuda_rng") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _to_cpu(obj: Any) -> Any:
    """A nested state with every tensor on the CPU (a checkpoint file holds CPU tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
