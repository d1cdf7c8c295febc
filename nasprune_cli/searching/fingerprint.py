"""The fingerprint that ties a checkpoint to one search: everything its result depends on, as plain values."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasprune_cli.recipe.schema import AFTER_SEARCH_SETTINGS, SearchSettings

# settings that are fingerprinted on their own (constraints as bounds, entry points by name, the latency table by
# its digest) or that only locate files; the device is not part of it, so a search stopped on one device resumes on
# another (a GPU and the CPU may round the scores differently)
NOT_SETTINGS = ("constraints", "latency_table", "latency_batch", "checkpoint", "score", "data", "collect", "device")


def fingerprint(
    *,
    model: Mapping[str, Any],
    recipe: Mapping[str, Any] | None,
    settings: SearchSettings,
    bounds: Mapping[str, float],
    input_spec: Mapping[str, Any],
    hparams: Mapping[str, list[int]],
    score: str,
    data: str,
    collect: str,
    weights: str | None = None,
    latency: str | None = None,
) -> dict[str, Any]:
    """Everything a search result depends on, as plain JSON-able values (compared key by key on resume).

    `weights` is a digest of the model's parameters: a retrained (or freshly initialised) model is another model.
    `latency` is a digest of the latency table a "latency" constraint was measured with.
    """
    rules = None
    if recipe is not None:
        rules = {k: v for k, v in recipe.items() if k not in ("search", "description")}
    spec = {"entry_point": model.get("entry_point"), "kwargs": dict(model.get("kwargs") or {})}
    if weights is not None:
        spec["weights"] = weights
    result = {
        "model": spec,
        "recipe": rules,
        "settings": settings.model_dump(exclude={*NOT_SETTINGS, *AFTER_SEARCH_SETTINGS}),
        "constraints": {k: float(v) for k, v in sorted(bounds.items())},
        "input": dict(input_spec),
        "hparams": {k: list(v) for k, v in hparams.items()},
        "score": score,
        "data": data,
        "collect": collect,
    }
    if latency is not None:
        result["latency_table"] = latency
    return result


def weights_digest(model: nn.Module) -> str:
    """A short hash of a model's parameters (names, shapes, dtypes and values; buffers are left out)."""
    sha = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().cpu().contiguous()
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        sha.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]
