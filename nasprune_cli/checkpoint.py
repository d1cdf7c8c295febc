"""Files: the resumable search state and the pruned model; atomic writes, weights_only reads.

Both files hold only tensors, dicts, lists, str, int, float, bool and None, so every read uses
`torch.load(weights_only=True)` and never runs code from the file.

Pruned-model file (`--output pruned.pt`):
    {kind: "nasprune-pruned", format_version, model: {entry_point, kwargs}, recipe, input: {shape, dtype},
     config (the subnet), state_dict (of the exported plain model), metrics}
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasprune_cli.errors import CheckpointError, NasPruneError
from nasprune_cli.fileio import FORMAT_VERSION, atomic_save, check_kind, check_output, digest, read_torch_file
from nasprune_cli.inputs import tensors_in

if TYPE_CHECKING:
    from nasprune_cli.searching.result import SearchResult
    from nasprune_cli.space import SearchSpace

STATE_KIND = "nasprune-search-state"
PRUNED_KIND = "nasprune-pruned"


# ---- search state ------------------------------------------------------------------------------------------
def save_search_state(path: str | Path, state: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> Path:
    """Write a searcher's state dict with the fingerprint of the search it belongs to."""
    data = {
        "kind": STATE_KIND,
        "format_version": FORMAT_VERSION,
        "fingerprint": dict(fingerprint),
        "fingerprint_digest": digest(fingerprint),
        "state": dict(state),
    }
    return atomic_save(data, path)


def load_search_state(path: str | Path, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored state dict, None when the file does not exist; a checkpoint of another search is refused."""
    path = Path(path)
    if not path.exists():
        return None
    data = read_torch_file(path, "search checkpoint")
    check_kind(path, data, STATE_KIND, "search checkpoint")
    if data.get("fingerprint_digest") != digest(fingerprint):
        diff = fingerprint_difference(data.get("fingerprint") or {}, fingerprint) or "fingerprint"
        raise CheckpointError(
            f"{path}: this checkpoint belongs to a different search ({diff} differs); delete it or pass another "
            "--checkpoint to start a new search"
        )
    state = data.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt search checkpoint (no state dict)")
    return state


def fingerprint_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """A short description of the first key whose value differs, e.g. "model ('a:b' vs 'c:d')".

    Keys are compared in the fingerprint's order (model, recipe, settings, constraints, input, hparams, ...): the
    cause (another model) is named before its consequences (other hparams)."""
    for key in [*current, *(k for k in stored if k not in current)]:
        a, b = stored.get(key), current.get(key)
        if digest(a) != digest(b):
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                inner = fingerprint_difference(a, b)
                return f"{key}.{inner}" if inner else key
            was = _short(a) if key in stored else "absent"
            now = _short(b) if key in current else "absent"
            return f"{key} ({was} in the checkpoint vs {now} now)"
    return ""


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- pruned model ------------------------------------------------------------------------------------------
def save_pruned(path: str | Path, result: SearchResult, *, overwrite: bool = False) -> Path:
    """Write a pruned model (a `search()` result: the exported model, its subnet, recipe and metrics) atomically."""
    path = Path(path)
    check_output(path, overwrite, "--overwrite, or overwrite=True,")
    if not hasattr(result, "summary") or not isinstance(getattr(result, "model", None), nn.Module):
        raise CheckpointError(f"{path}: expected the SearchResult returned by nasprune_cli.search")
    data = {
        "kind": PRUNED_KIND,
        "format_version": FORMAT_VERSION,
        "model": dict(result.model_spec),
        "recipe": result.recipe,
        "input": dict(result.input),
        "config": dict(result.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
        "metrics": result.metrics(),
    }
    return atomic_save(data, path)


def load_pruned(path: str | Path) -> dict[str, Any]:
    """Read and check a pruned-model file written by `save_pruned`."""
    path = Path(path)
    data = read_torch_file(path, "pruned-model file")
    check_kind(path, data, PRUNED_KIND, "pruned-model file")
    for key in ("model", "recipe", "input", "config", "state_dict"):
        if key not in data:
            raise CheckpointError(f"{path}: corrupt pruned-model file (missing '{key}')")
    return data


def restore(model: nn.Module | None, path: str | Path, dummy_input: Any = None) -> nn.Module:
    """Rebuild a pruned model from a fresh original model and a file written by `save` / `--output`.

    The model is converted with the stored recipe and input shape, the stored subnet is selected and exported,
    and the stored weights are loaded. `model` None builds it from the stored entry point.
    """
    path = Path(path)
    data = load_pruned(path)
    space = rebuild_space(path, data, model, dummy_input)
    entry_point = data["model"].get("entry_point")
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


def rebuild_space(path: Path, data: Mapping[str, Any], model: nn.Module | None, dummy_input: Any) -> SearchSpace:
    """Convert a fresh original model as a stored file says (recipe, input shape); None model: built from the
    stored entry point. Shared by pruned-model and search-space files."""
    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import make_dummy_input
    from nasprune_cli.loading import build_model
    from nasprune_cli.recipe.load import recipe_from_dict

    entry_point = data["model"].get("entry_point")
    if model is None:
        model = build_model(entry_point, dict(data["model"].get("kwargs") or {}))
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"restore: expected a fresh nn.Module to rebuild from (got {type(model).__name__})")
    recipe = recipe_from_dict(data["recipe"], f"{path}: recipe") if data["recipe"] is not None else None
    if dummy_input is None:
        dummy_input = make_dummy_input(list(data["input"]["shape"]), data["input"].get("dtype", "float32"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unused recipe patterns were reported when the file was written
            return convert(model, recipe, dummy_input)
    except NasPruneError as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild the model from the given model ({exc}); pass a fresh instance of the "
            f"model the file was made from ({entry_point})"
        ) from exc


# ---- deployable model --------------------------------------------------------------------------------------
EXPORT_FORMATS = ("state_dict", "torchscript", "onnx")


def write_deployable(
    model: nn.Module, path: str | Path, fmt: str, dummy_input: Any, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write a plain model as a state_dict, TorchScript or ONNX file; TorchScript and ONNX files are run and
    compared with torch on the dummy input. Returns {"format", "path", "max_abs_diff"}."""
    import warnings

    path = Path(path)
    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"--format: unknown format {fmt!r} (expected one of {', '.join(EXPORT_FORMATS)})")
    check_output(path, overwrite)
    model = model.eval()
    args = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    gen = torch.Generator().manual_seed(1234)
    # checked on a fresh random input, not the one the export traced
    check = tuple(
        torch.randn(a.shape, generator=gen).to(a.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )
    with torch.no_grad():
        expected = model(*check)
    diff: float | None = None
    if fmt == "state_dict":
        atomic_save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still supported
            traced = torch.jit.trace(model, args)
            tmp = _tmp_path(path)
            try:
                torch.jit.save(traced, str(tmp))
                loaded = torch.jit.load(str(tmp))
                with torch.no_grad():
                    diff = _max_diff(loaded(*check), expected)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
    else:
        diff = _write_onnx(model, path, args, check, expected)
    if diff is not None and diff > 1e-3 * max(1.0, _max_abs(expected)):
        raise CheckpointError(
            f"{path}: the {fmt} model's outputs differ from torch's by {diff:.3g} on the dummy input; the export is "
            "not faithful (try another --format)"
        )
    return {"format": fmt, "path": str(path), "max_abs_diff": diff}


def _tmp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _max_abs(out: Any) -> float:
    return max((float(t.detach().abs().max()) for t in tensors_in(out) if t.numel()), default=0.0)


def _max_diff(got: Any, expected: Any) -> float:
    a, b = tensors_in(got), tensors_in(expected)
    if len(a) != len(b):
        return float("inf")
    return max(
        (float((torch.as_tensor(x).float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True) if y.numel()),
        default=0.0,
    )


def _write_onnx(model: nn.Module, path: Path, args: tuple, check: tuple, expected: Any) -> float:
    import warnings

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise CheckpointError(
            "--format onnx needs onnx and onnxruntime; install them with `pip install 'nasprune[onnx]'`"
        ) from exc
    names = [f"input_{i}" for i in range(len(args))] if len(args) > 1 else ["input"]
    tmp = _tmp_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, still supported
            torch.onnx.export(
                model,
                args,
                str(tmp),
                input_names=names,
                dynamic_axes={n: {0: "batch"} for n in names},
                dynamo=False,
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, check, strict=True)}
        got = [torch.from_numpy(o) for o in session.run(None, feeds)]
        diff = _max_diff(got, expected)
        os.replace(tmp, path)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter and onnxruntime fail in many ways
        raise CheckpointError(f"{path}: ONNX export failed ({type(exc).__name__}: {str(exc)[:200]})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return diff
