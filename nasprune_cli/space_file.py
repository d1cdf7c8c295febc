"""Search-space files written by `nasprune convert`: model spec, recipe, input shape and the hparam config."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nasprune_cli.errors import CheckpointError
from nasprune_cli.recipe.load import recipe_to_dict
from nasprune_cli.recipe.schema import Recipe

KIND = "nasprune-space"
FORMAT_VERSION = 1


def save_space(
    path: str | Path,
    space: Any,
    model_spec: dict[str, Any],
    recipe: Recipe,
    overwrite: bool = False,
) -> Path:
    """Write a search-space file atomically (tmp file + os.replace); refuses to replace a file unless overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory '{path.parent}' does not exist")
    data = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "model": {"entry_point": model_spec["entry_point"], "kwargs": dict(model_spec.get("kwargs") or {})},
        "recipe": recipe_to_dict(recipe),
        "input": {"shape": recipe.input.shape, "dtype": recipe.input.dtype},
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search-space file (weights_only) and check its kind and format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt / foreign files fail in many ways
        raise CheckpointError(f"{path}: not a readable nasprune file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a nasprune search-space file (kind {found!r}, expected {KIND!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {data.get('format_version')!r} (this nasprune reads {FORMAT_VERSION})"
        )
    return data
