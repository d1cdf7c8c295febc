"""`search()`: find the best subnet within FLOPs / params budgets; `restore()`: rebuild a saved pruned model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune_cli.checkpoint import digest
from nasprune_cli.constraints import Cost, parse_constraints, satisfies
from nasprune_cli.errors import CheckpointError, LoadError, NasPruneError, SearchError
from nasprune_cli.inputs import inputs_as_given, random_batches
from nasprune_cli.metrics.latency import LATENCY_UNIT, latency_model_for
from nasprune_cli.metrics.score import (
    DEFAULT_SCORE_NAME,
    Evaluator,
    callable_name,
    load_batches,
)
from nasprune_cli.searchers import searcher_class
from nasprune_cli.searchers.base import unsatisfiable_message
from nasprune_cli.searchers.state import SearchSettings, fingerprint

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.int64: "int64"}
# modelopt's names for the same settings are accepted too
_ALIASES = {
    "score_func": "score",
    "data_loader": "data",
    "collect_func": "collect",
    "max_iter_data_loader": "max_batches",
}
_OTHER_KEYS = (
    "recipe",
    "model_spec",
    "score",
    "data",
    "collect",
    "checkpoint",
    "on_progress",
    "latency_table",
    "latency_batch",
)
NO_DATA_WARNING = (
    "no --data given: BatchNorm statistics are recalibrated, and subnets scored, on random inputs shaped like the "
    "dummy input; a subnet ranked on noise can rank differently on real inputs, so pass --data (a few training "
    "batches) for a meaningful search"
)


def config_keys() -> list[str]:
    """Every key `search(config=...)` accepts."""
    return sorted([*SearchSettings.names(), *_OTHER_KEYS, *_ALIASES])


def search(
    model: nn.Module | Any,
    constraints: Mapping[str, str | float | None] | None = None,
    dummy_input: Any = None,
    config: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Search the best subnet within the constraints; returns (exported plain pruned model, search state).

    `model` is a SearchSpace, or an nn.Module converted here with `config["recipe"]` (None: default rules).
    `config` keys: recipe (Recipe, path or dict), score / data / collect (callables or "pkg.mod:fn"; data may be
    an iterable of batches), checkpoint, on_progress(stage, done, total), model_spec ({entry_point, kwargs}),
    latency_table (JSON path: read when it exists, else measured and written) and latency_batch (default 1) for a
    "latency" constraint, and the search settings (searcher, seed, max_batches, fill, sensitivity, descent,
    width_floor, rival_floor, importance, reconstruct, iterations, population_size, candidate_size, mutation_prob,
    crossover_size, mutation_size). Unset settings come from the recipe's `search` section.
    The state's "summary" holds the subnet config, the original / pruned figures and a per-layer table.
    """
    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import dummy_input_for
    from nasprune_cli.space import SearchSpace

    options = _normalize(config or {})
    recipe = _recipe(options.get("recipe"))
    settings = _settings(options, recipe)

    if isinstance(model, SearchSpace):
        space = model
        dummy_input = space.dummy_input if dummy_input is None else dummy_input
        recipe = recipe if recipe is not None else getattr(space, "recipe", None)
    elif isinstance(model, nn.Module):
        dummy_input = dummy_input_for(recipe) if dummy_input is None else dummy_input
        space = convert(model, recipe, dummy_input)
    else:
        raise SearchError(f"search: expected an nn.Module or a SearchSpace (got {type(model).__name__})")

    if not constraints and recipe is not None:
        constraints = dict(recipe.search.constraints)
    section = recipe.search if recipe is not None else None
    latency_info = None
    if (constraints or {}).get("latency") is not None:
        table = options.get("latency_table") or getattr(section, "latency_table", None)
        batch = options.get("latency_batch") or getattr(section, "latency_batch", None)
        attached = space.latency_model
        if table is None and attached is not None and batch in (None, attached.meta["batch"]):  # the caller's table
            latency_model, measured_now, batch = attached, False, attached.meta["batch"]
        else:
            batch = batch or 1
            latency_model, measured_now = latency_model_for(space, table, int(batch), options.get("on_progress"))
        space.attach_latency(latency_model)
        latency_info = {
            "table": str(table) if table is not None else None,
            "measured": measured_now,
            "batch": int(batch),
            "threads": latency_model.meta["threads"],
            "unit": LATENCY_UNIT,
        }
    else:
        space.attach_latency(None)
    bounds = parse_constraints(constraints or {}, space.original_cost)
    if not bounds:
        raise SearchError("no constraints: pass --flops, --params and/or --latency (e.g. --flops 60%)")
    message = unsatisfiable_message(bounds, space.cost(space.min()), space.original_cost)
    if message:
        raise SearchError(message)

    for key in ("score", "data", "collect"):  # config wins over the recipe's search section
        if options.get(key) is None and section is not None:
            options[key] = getattr(section, key, None)
    score_fn, score_name = _entry(options.get("score"), "score")
    collect_fn, collect_name = _entry(options.get("collect"), "collect")
    data, data_name = _data(options.get("data"))
    if data is None:
        warnings.warn(NO_DATA_WARNING, stacklevel=2)
        batches = random_batches(dummy_input, settings.max_batches, settings.seed)
        if collect_fn is None:  # a random batch is the model's whole input (a tuple: all its positional inputs)
            collect_fn = inputs_as_given
    else:
        batches = load_batches(data, settings.max_batches, data_name)

    seed_everything(settings.seed)
    space.sort_parameters(settings.importance)
    space.select(space.max())
    evaluator = Evaluator(space.model, batches, collect_fn, score_fn, score_name, collect_name)
    evaluator.prepare()

    model_spec = _model_spec(options.get("model_spec"), space.model)
    input_spec = _input_spec(dummy_input)
    recipe_dict = _recipe_dict(recipe)
    fp = fingerprint(
        model=model_spec,
        recipe=recipe_dict,
        settings=settings,
        bounds=bounds,
        input_spec=input_spec,
        hparams={n: list(hp.choices) for n, hp in space.hparams.items()},
        score=score_name if score_fn is not None else "default",
        data=data_name,
        collect=collect_name,
        weights=weights_digest(space.model),
        latency=digest(space.latency_model.to_dict()) if space.latency_model is not None else None,
    )
    searcher = searcher_class(settings.searcher)(
        space,
        evaluator,
        bounds,
        settings,
        checkpoint=options.get("checkpoint"),
        fingerprint=fp,
        on_progress=options.get("on_progress"),
    )
    state = searcher.search()

    reconstruction: dict[str, Any] = {"applied": False, "reason": "off (reconstruct: false)"}
    if settings.reconstruct and data is None:
        reconstruction["reason"] = "no data: refitting weights on random inputs would fit noise"
    if settings.reconstruct and data is not None:
        pruned, reconstruction = _reconstructed_export(space, evaluator, state["best"], options.get("on_progress"))
    else:
        pruned = space.export()
    from nasprune_cli.metrics.flops import FLOPS_UNIT, count_params, fvcore_flops

    best = state["best"]
    predicted_latency = space.cost(best["config"]).latency  # a latency table's prediction (None without one)
    measured = Cost(float(fvcore_flops(pruned, dummy_input)), float(count_params(pruned)), predicted_latency)
    if not satisfies(measured, bounds):
        raise SearchError(
            f"the pruned model breaks the budget when fvcore counts it (flops {measured.flops:.4g}, params "
            f"{measured.params:.4g}; limits {bounds}) although the cost model said it fits; please report this bug"
        )
    original = space.original_cost
    state["summary"] = {
        "searcher": settings.searcher,
        "model": model_spec,
        "recipe": recipe_dict,
        "input": input_spec,
        "constraints": dict(bounds),
        "config": dict(best["config"]),
        "metrics": {
            "score_name": score_name,
            "original": {"flops": original.flops, "params": original.params, "score": state["original_score"]},
            "pruned": {
                "flops": measured.flops,
                "params": measured.params,
                "score": reconstruction.get("score", best["score"]),
            },
            "flops_ratio": measured.flops / max(original.flops, 1.0),
            "params_ratio": measured.params / max(original.params, 1.0),
            **_latency_metrics(original, measured),
            "evaluations": state["evaluations"],
            "flops_unit": FLOPS_UNIT,
        },
        "latency": latency_info,
        "reconstruction": reconstruction,
        "layers": layer_rows(space, best["config"]),
    }
    return pruned, state


def _reconstructed_export(
    space: Any, evaluator: Evaluator, best: Mapping[str, Any], on_progress: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Export the best subnet with its weights refitted on the data, unless that lowers its score."""
    from nasprune_cli.reconstruct import reconstructed

    before = float(best["score"])
    with reconstructed(space, evaluator.batches, evaluator.inputs, on_progress) as report:
        after = evaluator() if report.layers else before
        applied = bool(report.layers) and after >= before
        pruned = space.export() if applied else None
    if pruned is None:
        pruned = space.export()  # the weights and statistics the search found, put back on leaving the block
    errors = [(report.error_before[n], report.error_after[n]) for n in report.layers]
    reason = "refitted"
    if not report.layers:
        reason = "no layer needed or passed a refit (see skipped)"
    elif not applied:
        reason = "the refitted weights scored lower; the searched weights are kept"
    info = {
        "applied": applied,
        "reason": reason,
        "score": after if applied else before,
        "score_before": before,
        "score_after": after,
        "layers": len(report.layers),
        "skipped": dict(report.skipped),
        "mean_error_before": sum(e[0] for e in errors) / max(len(errors), 1),
        "mean_error_after": sum(e[1] for e in errors) / max(len(errors), 1),
        "seconds": report.seconds,
    }
    return pruned, info


def _latency_metrics(original: Cost, pruned: Cost) -> dict[str, Any]:
    """Predicted latency (ms) of the original and pruned models, when a latency table is attached."""
    if original.latency is None or pruned.latency is None:
        return {}
    return {
        "latency_ms": {"original": original.latency, "pruned": pruned.latency},
        "latency_ratio": pruned.latency / max(original.latency, 1e-12),
    }


def layer_rows(space: Any, config: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per layer: original and kept channels (width hparams), or depth / kernel size, under a subnet config."""
    rows = []
    for name, hp in space.hparams.items():
        kept = int(config.get(name, hp.original))
        if hp.kind == "width":
            layers = [m.rsplit(".", 1)[0] for m in hp.members if m.rsplit(".", 1)[-1] == "out"] or [name]
        else:
            layers = [name.rsplit(".", 1)[0]]
        for layer in layers:
            rows.append({"layer": layer, "hparam": name, "kind": hp.kind, "original": hp.original, "kept": kept})
    return rows


def restore(model: nn.Module | None, path: str | Path, dummy_input: Any = None) -> nn.Module:
    """Rebuild a pruned model from a fresh original model and a file written by `save` / `--output`.

    The model is converted with the stored recipe and input shape, the stored subnet is selected and exported,
    and the stored weights are loaded. `model` None builds it from the stored entry point.
    """
    from nasprune_cli.checkpoint import load_pruned
    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import make_dummy_input
    from nasprune_cli.recipe.load import recipe_from_dict

    path = Path(path)
    data = load_pruned(path)
    if model is None:
        from nasprune_cli.loading import build_model

        spec = data["model"]
        model = build_model(spec["entry_point"], dict(spec.get("kwargs") or {}))
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"restore: expected a fresh nn.Module to rebuild from (got {type(model).__name__})")
    recipe = recipe_from_dict(data["recipe"], f"{path}: recipe") if data["recipe"] is not None else None
    if dummy_input is None:
        dummy_input = make_dummy_input(list(data["input"]["shape"]), data["input"].get("dtype", "float32"))
    entry_point = data["model"].get("entry_point")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unused recipe patterns were reported when the search ran
            space = convert(model, recipe, dummy_input)
    except NasPruneError as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild the pruned model from the given model ({exc}); pass a fresh instance of the "
            f"model the search ran on ({entry_point})"
        ) from exc
    try:
        space.select(data["config"])
    except NasPruneError as exc:
        raise CheckpointError(
            f"{path}: the stored subnet does not fit this model ({exc}); pass a fresh instance of the model the "
            f"search ran on ({entry_point})"
        ) from exc
    pruned = space.export()
    try:
        pruned.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(
            f"{path}: the stored weights do not match the rebuilt model ({detail}); pass a fresh instance of "
            f"{entry_point} with the same kwargs"
        ) from exc
    return pruned


# ---- helpers -----------------------------------------------------------------------------------------------
def _normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    known = set(config_keys())
    options: dict[str, Any] = {}
    for key, value in config.items():
        if key not in known:
            raise SearchError(f"search config: unknown key '{key}' (expected one of {', '.join(config_keys())})")
        name = _ALIASES.get(key, key)
        if name in options and value is not None:
            raise SearchError(f"search config: '{key}' given twice (also as '{name}')")
        if value is not None or name not in options:
            options[name] = value
    return options


def _recipe(value: Any) -> Any:
    if value is None:
        return None
    from nasprune_cli.recipe.load import load_recipe, recipe_from_dict
    from nasprune_cli.recipe.schema import Recipe

    if isinstance(value, Recipe):
        return value
    if isinstance(value, (str, Path)):
        return load_recipe(value)
    if isinstance(value, Mapping):
        return recipe_from_dict(value)
    raise SearchError(f"search config: recipe must be a Recipe, a path or a dict (got {type(value).__name__})")


def _recipe_dict(recipe: Any) -> dict[str, Any] | None:
    if recipe is None:
        return None
    from nasprune_cli.recipe.load import recipe_to_dict

    return recipe_to_dict(recipe)


def _settings(options: Mapping[str, Any], recipe: Any) -> SearchSettings:
    section = recipe.search if recipe is not None else None
    values: dict[str, Any] = {}
    for name in SearchSettings.names():
        if options.get(name) is not None:
            values[name] = options[name]
        elif name == "searcher" and recipe is not None:
            values[name] = recipe.searcher
        elif section is not None and getattr(section, name, None) is not None:
            values[name] = getattr(section, name)
    return SearchSettings(**values).check()


def _entry(value: Any, what: str) -> tuple[Callable[..., Any] | None, str]:
    """A score / collect function from a callable or a "pkg.mod:fn" spec, and its name for messages."""
    if value is None:
        return None, DEFAULT_SCORE_NAME if what == "score" else "default"
    if isinstance(value, str):
        from nasprune_cli.loading import load_entry_point

        fn = load_entry_point(value, what)
        if not callable(fn):
            raise LoadError(f"{what} '{value}' is not callable (got {type(fn).__name__}); expected a function")
        return fn, value
    if callable(value):
        return value, callable_name(value)
    raise SearchError(f"search config: {what} must be a callable or 'pkg.module:fn' (got {type(value).__name__})")


def _data(value: Any) -> tuple[Any, str]:
    """Data from an iterable, a function returning one, or a "pkg.mod:fn" spec, and its name."""
    if value is None:
        return None, "random"
    if isinstance(value, str):
        from nasprune_cli.loading import load_entry_point

        return load_entry_point(value, "data"), value
    return value, callable_name(value) if callable(value) else type(value).__name__


def _model_spec(value: Any, model: nn.Module) -> dict[str, Any]:
    if value is None:
        return {"entry_point": f"{type(model).__module__}:{type(model).__qualname__}", "kwargs": {}}
    if isinstance(value, str):
        return {"entry_point": value, "kwargs": {}}
    if not isinstance(value, Mapping) or "entry_point" not in value:
        raise SearchError("search config: model_spec must be {'entry_point': 'pkg.mod:fn', 'kwargs': {...}}")
    return {"entry_point": str(value["entry_point"]), "kwargs": dict(value.get("kwargs") or {})}


def _input_spec(dummy_input: Any) -> dict[str, Any]:
    tensors = [dummy_input] if isinstance(dummy_input, torch.Tensor) else []
    if isinstance(dummy_input, tuple):
        tensors = [t for t in dummy_input if isinstance(t, torch.Tensor)]
    if not tensors:
        return {"shape": [], "dtype": "float32"}
    shapes = [list(t.shape) for t in tensors]
    return {
        "shape": shapes[0] if len(shapes) == 1 else shapes,
        "dtype": _DTYPE_NAMES.get(tensors[0].dtype, "float32"),
    }


def weights_digest(model: nn.Module) -> str:
    """A short hash of a model's parameters (names, shapes, dtypes and values; buffers are left out)."""
    import hashlib

    sha = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().cpu().contiguous()
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        sha.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and numpy's global random generators."""
    import random

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy comes with torch in practice
        pass
