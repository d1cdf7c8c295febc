"""Search-space files written by `nasprune convert` (model spec, recipe, input shape, hparams) and their rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasprune_cli.errors import CheckpointError
from nasprune_cli.fileio import FORMAT_VERSION, atomic_save, check_kind, check_output, read_torch_file
from nasprune_cli.recipe.load import recipe_to_dict
from nasprune_cli.recipe.schema import Recipe

if TYPE_CHECKING:
    from torch import nn

    from nasprune_cli.space import SearchSpace

KIND = "nasprune-space"
__all__ = ["FORMAT_VERSION", "KIND", "load_space", "restore_space", "save_space"]


def save_space(
    path: str | Path,
    space: Any,
    model_spec: dict[str, Any],
    recipe: Recipe,
    overwrite: bool = False,
) -> Path:
    """Write a search-space file atomically (tmp file + os.replace); refuses to replace a file unless overwrite."""
    path = Path(path)
    check_output(path, overwrite)
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
    atomic_save(data, path)
    return path


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search-space file (weights_only) and check its kind and format version."""
    path = Path(path)
    data = read_torch_file(path, "search-space file")
    check_kind(path, data, KIND, "search-space file")
    return data


def restore_space(path: str | Path, model: nn.Module | None = None, dummy_input: Any = None) -> SearchSpace:
    """Rebuild the converted model of a search-space file (None model: built from the stored entry point)."""
    # e.g. to train the converted model for AutoNAS; the hparams must come out as stored, the stored subnet is active
    import warnings

    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import make_dummy_input
    from nasprune_cli.loading import build_model
    from nasprune_cli.recipe.load import recipe_from_dict

    path = Path(path)
    data = load_space(path)
    entry_point = data["model"]["entry_point"]
    if model is None:
        model = build_model(entry_point, dict(data["model"].get("kwargs") or {}))
    recipe = recipe_from_dict(data["recipe"], f"{path}: recipe")
    if dummy_input is None:
        dummy_input = make_dummy_input(list(data["input"]["shape"]), data["input"].get("dtype", "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused recipe patterns were reported by `nasprune convert`
        space = convert(model, recipe, dummy_input)
    stored = {hp["name"]: list(hp["choices"]) for hp in data["hparams"]}
    found = {name: list(hp.choices) for name, hp in space.hparams.items()}
    if stored != found:
        diff = sorted(set(stored) ^ set(found)) or sorted(n for n in stored if stored[n] != found[n])
        raise CheckpointError(
            f"{path}: the model converts to other hparams than the stored ones (first difference: {diff[0]}); pass a "
            f"fresh instance of {entry_point} with the stored kwargs {data['model'].get('kwargs') or {}}"
        )
    space.select(data["config"])
    return space
