"""Search-space files written by `nasprune convert` (model spec, recipe, input shape, hparams) and their rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from nasprune_cli.checkpoint import StoredModel, rebuild_space
from nasprune_cli.errors import CheckpointError
from nasprune_cli.fileio import (
    FORMAT_VERSION,
    add_checksum,
    atomic_save,
    check_output,
    read_nasprune_file,
)
from nasprune_cli.recipe.load import recipe_to_dict
from nasprune_cli.recipe.schema import Recipe

if TYPE_CHECKING:
    from torch import nn

    from nasprune_cli.space import SearchSpace

KIND = "nasprune-space"
__all__ = ["FORMAT_VERSION", "KIND", "load_space", "restore_space", "save_space"]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StoredHparam(_Schema):
    """One hparam of the converted model, as `convert` found it."""

    name: str
    kind: str
    choices: Annotated[list[int], Field(min_length=1)]
    original: int
    members: list[str]


class StoredFrozen(_Schema):
    """A layer kept whole, and why."""

    name: str
    reason: str


class StoredTraining(_Schema):
    """A trained space (`nasprune train --output`): the converted model's weights, the channel order its subnets were
    trained in, and what the training did."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    state_dict: dict[str, torch.Tensor]
    orders: dict[str, list[int]]
    summary: dict[str, Any] = Field(default_factory=dict)


class SpaceFile(StoredModel):
    """A search-space file (`nasprune convert --output`, or `nasprune train --output` with `training`)."""

    hparams: list[StoredHparam]
    frozen: list[StoredFrozen]
    training: StoredTraining | None = None  # absent: the space of an untrained (converted) model
    sha256: str | None = None


def save_space(
    path: str | Path,
    space: Any,
    model_spec: dict[str, Any],
    recipe: Recipe,
    overwrite: bool = False,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a search-space file atomically (tmp file + os.replace); refuses to replace a file unless overwrite.

    `training` (a trained space): the training summary; the weights and the channel order are stored with it."""
    path = Path(path)
    check_output(path, overwrite)
    data = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "model": {"entry_point": model_spec["entry_point"], "kwargs": dict(model_spec.get("kwargs") or {})},
        "recipe": recipe_to_dict(recipe),
        "input": recipe_to_dict(recipe)["input"],
        "config": dict(space.config()),
        "hparams": [
            {
                "name": hp.name,
                "kind": hp.kind,
                "choices": list(hp.choices),
                "original": hp.original,
                "members": list(hp.members),
            }
            for hp in space.hparams.values()
        ],
        "frozen": [{"name": f.name, "reason": f.reason} for f in space.frozen],
    }
    if training is not None:
        data["training"] = {
            "state_dict": {k: v.detach().cpu().clone() for k, v in space.model.state_dict().items()},
            "orders": space.channel_orders(),
            "summary": dict(training),
        }
    atomic_save(add_checksum(data), path)
    return path


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search-space file (weights_only) and check its kind, format version, checksum and every field."""
    path = Path(path)
    hint = "use an intact copy or run `nasprune convert` again"
    return read_nasprune_file(path, KIND, "search-space file", SpaceFile, hint)


def restore_space(
    path: str | Path, model: nn.Module | None = None, dummy_input: Any = None, *, trust_entry_point: bool = False
) -> SearchSpace:
    """Rebuild the converted model of a search-space file. None model: built from the stored entry point, only with
    `trust_entry_point=True` (calling what a file names runs code; check it is the model you expect first)."""
    # e.g. to train the converted model for AutoNAS; the hparams must come out as stored, the stored subnet is active
    path = Path(path)
    data = load_space(path)
    hint = "restore_space(path, model), or restore_space(path, trust_entry_point=True)"
    space = rebuild_space(path, data, model, dummy_input, trust_entry_point=trust_entry_point, hint=hint)
    stored = {hp["name"]: list(hp["choices"]) for hp in data["hparams"]}
    found = {name: list(hp.choices) for name, hp in space.hparams.items()}
    if stored != found:
        spec = data["model"]
        diff = sorted(set(stored) ^ set(found)) or sorted(n for n in stored if stored[n] != found[n])
        raise CheckpointError(
            f"{path}: the model converts to other hparams than the stored ones (first difference: {diff[0]}); pass a "
            f"fresh instance of {spec['entry_point']} with the stored kwargs {spec.get('kwargs') or {}}"
        )
    if data.get("training") is not None:
        _load_training(path, space, data["training"])
    space.select(data["config"])
    return space


def _load_training(path: Path, space: SearchSpace, training: dict[str, Any]) -> None:
    """Put a trained space's weights and channel order (locked: a search keeps it) into the rebuilt space."""
    from nasprune_cli.errors import NasPruneError

    try:
        space.set_channel_orders(training["orders"], lock=True)
        space.model.load_state_dict(training["state_dict"], strict=True)
    except (NasPruneError, RuntimeError) as exc:
        detail = " ".join(str(exc).strip().splitlines()[:2])[:300]
        raise CheckpointError(
            f"{path}: the trained weights do not fit the rebuilt model ({detail}); pass a fresh instance of the "
            "model the space was trained from"
        ) from exc
