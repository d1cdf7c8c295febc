"""Files: the resumable search state and the pruned model; atomic writes, weights_only reads.

Both files hold only tensors, dicts, lists, str, int, float, bool and None, so every read uses
`torch.load(weights_only=True)` and never runs code from the file; every field read is checked against a schema,
and the model builder a file names is called only when the caller says so (`trust_entry_point=True`).

Pruned-model file (`--output pruned.pt`):
    {kind: "nasprune-pruned", format_version, model: {entry_point, kwargs}, recipe, input: {shape, dtype},
     config (the subnet), state_dict (of the exported plain model), metrics, report (optional: what
     `nasprune report` draws), sha256 (of all the rest)}
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from torch import nn

from nasprune_cli.errors import CheckpointError, NasPruneError
from nasprune_cli.fileio import (
    FORMAT_VERSION,
    add_checksum,
    atomic_save,
    check_output,
    digest,
    read_nasprune_file,
    temp_file_for,
)
from nasprune_cli.inputs import call_model, keyword_inputs, positional_model, tensors_in
from nasprune_cli.loading import short_json
from nasprune_cli.recipe.schema import InputSection
from nasprune_cli.report import report_data

if TYPE_CHECKING:
    from nasprune_cli.searching.result import SearchResult
    from nasprune_cli.space import SearchSpace

STATE_KIND = "nasprune-search-state"
PRUNED_KIND = "nasprune-pruned"


# ---- what the files may hold -------------------------------------------------------------------------------
def _check_rng(value: list[Any]) -> list[Any]:
    try:
        version, internal, gauss = value
        random.Random().setstate((version, tuple(internal), gauss))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"not the state of a random.Random ({exc})") from None
    return value


Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Size = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class ModelSpec(_Schema):
    """The model a file was made from: builder entry point and keyword arguments (data; never called unasked)."""

    entry_point: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ScoredSubnet(BaseModel):
    """A subnet in a search state (best, history): its config, score and costs; searchers may add keys."""

    model_config = ConfigDict(extra="allow", strict=True)
    config: dict[str, int]
    score: Finite | None = None
    flops: Size | None = None
    params: Size | None = None


class SearchStateSchema(BaseModel):
    """The keys every searcher's state has (`Searcher.default_state`), checked when present (an absent key keeps
    its fresh value on resume); a searcher's own keys pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)
    searcher: str = ""
    iteration: Count = 0
    evaluations: Count = 0
    original_score: Finite | None = None
    best: ScoredSubnet | None = None
    history: list[ScoredSubnet] = Field(default_factory=list)
    rng: Annotated[list[Any], AfterValidator(_check_rng)] = Field(default_factory=lambda: [3, [0] * 624 + [624], None])
    done: bool = False


class SearchStateFile(_Schema):
    """A `--checkpoint` file."""

    kind: str
    format_version: int
    fingerprint: dict[str, Any]
    fingerprint_digest: str
    state: SearchStateSchema


class StoredModel(_Schema):
    """What every file about one model holds: its kind, the model it was made from, the recipe, the input, a subnet."""

    kind: str
    format_version: int
    model: ModelSpec
    recipe: dict[str, Any] | None
    input: InputSection
    config: dict[str, int]


class StoredLayerRow(_Schema):
    """One row of a search summary's `layers`."""

    layer: str
    hparam: str
    kind: str
    original: int
    kept: int


class StoredCandidate(_Schema):
    """One scored subnet of an evolve / random search, as the report draws it."""

    score: float | None
    flops: float | None
    params: float | None
    chosen: bool


class StoredStage(_Schema):
    """FLOPs and params of one stage, [before, after] (nasprune_cli.metrics.stages)."""

    flops: list[Finite] = Field(min_length=2, max_length=2)
    params: list[Finite] = Field(min_length=2, max_length=2)


class StoredReport(_Schema):
    """What `nasprune report` draws (nasprune_cli.report.report_data)."""

    searcher: str
    layers: list[StoredLayerRow] = Field(default_factory=list)
    sensitivity: dict[str, dict[str, float]] | None = None  # hparam -> {kept width: score}
    original_score: float | None = None
    history: list[StoredCandidate] | None = None
    stages: dict[str, StoredStage] | None = None  # stage -> FLOPs and params [before, after]


class PrunedFile(StoredModel):
    """A pruned-model file (`--output pruned.pt`)."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = Field(default_factory=dict)
    report: StoredReport | None = None  # optional: files written before reports were stored have none
    sha256: str | None = None


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
    hint = "delete it (or pass another --checkpoint) to start anew"
    data = read_nasprune_file(path, STATE_KIND, "search checkpoint", SearchStateFile, hint, checksum=False)
    if data.get("fingerprint_digest") != digest(fingerprint):
        diff = fingerprint_difference(data.get("fingerprint") or {}, fingerprint) or "fingerprint"
        raise CheckpointError(
            f"{path}: this checkpoint belongs to a different search ({diff} differs); delete it or pass another "
            "--checkpoint to start a new search"
        )
    return data["state"]


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
            was = short_json(a) if key in stored else "absent"
            now = short_json(b) if key in current else "absent"
            return f"{key} ({was} in the checkpoint vs {now} now)"
    return ""


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
        "report": report_data(
            result.state, result.summary()["layers"], result.config, result.searcher, getattr(result, "stages", None)
        ),
    }
    return atomic_save(add_checksum(data), path)


def save_finetuned(
    path: str | Path,
    pruned: Mapping[str, Any],
    model: nn.Module,
    finetune: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a fine-tuned copy of a pruned-model file (`load_pruned` data): the same subnet, recipe and report with
    the model's weights, and what the fine-tuning did under metrics["finetune"]."""
    path = Path(path)
    check_output(path, overwrite, "--overwrite, or overwrite=True,")
    data = {key: value for key, value in pruned.items() if key != "sha256"}
    data["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    data["metrics"] = {**dict(pruned.get("metrics") or {}), "finetune": dict(finetune)}
    return atomic_save(add_checksum(data), path)


def load_pruned(path: str | Path) -> dict[str, Any]:
    """Read and check a pruned-model file written by `save_pruned`: kind, checksum, every field."""
    path = Path(path)
    hint = "use an intact copy or write it again"
    return read_nasprune_file(path, PRUNED_KIND, "pruned-model file", PrunedFile, hint)


def restore(
    model: nn.Module | None, path: str | Path, dummy_input: Any = None, *, trust_entry_point: bool = False
) -> nn.Module:
    """Rebuild a pruned model from a fresh original model and a file written by `save` / `--output`.

    The model is converted with the stored recipe and input shape, the stored subnet is selected and exported,
    and the stored weights are loaded. `model` None builds it from the stored entry point, only with
    `trust_entry_point=True` (calling what a file names runs code; check it is the model you expect first).
    """
    path = Path(path)
    data = load_pruned(path)
    hint = "restore(model, path), or restore(None, path, trust_entry_point=True)"
    space = rebuild_space(path, data, model, dummy_input, trust_entry_point=trust_entry_point, hint=hint)
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


def rebuild_space(
    path: Path,
    data: Mapping[str, Any],
    model: nn.Module | None,
    dummy_input: Any,
    *,
    trust_entry_point: bool = False,
    hint: str = "",
) -> SearchSpace:
    """Convert a fresh original model as a stored file says (recipe, input shape); None model: built from the
    stored entry point when `trust_entry_point`, else refused (`hint`: how to pass a model). Shared by
    pruned-model and search-space files."""
    from nasprune_cli.conversion import convert
    from nasprune_cli.inputs import dummy_input_from_spec
    from nasprune_cli.loading import build_model
    from nasprune_cli.recipe.load import recipe_from_dict

    entry_point = data["model"].get("entry_point")
    if model is None:
        kwargs = dict(data["model"].get("kwargs") or {})
        if not trust_entry_point:
            raise CheckpointError(
                f"{path}: no model given, and nasprune does not call the model builder a file names "
                f"({entry_point!r} with kwargs {short_json(kwargs)}): calling it would run code chosen by whoever "
                f"wrote the file; check it is the model you expect, then pass a fresh instance: {hint}"
            )
        model = build_model(entry_point, kwargs)
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"restore: expected a fresh nn.Module to rebuild from (got {type(model).__name__})")
    recipe = recipe_from_dict(data["recipe"], f"{path}: recipe") if data["recipe"] is not None else None
    if dummy_input is None:
        dummy_input = dummy_input_from_spec(data["input"], model)
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
    if fmt != "state_dict" and _needs_positional(model, dummy_input):
        # keyword inputs or a dict output (a transformers ModelOutput): the file takes the input tensors positionally
        # (positional inputs, then the keyword tensors in order) and returns the output's tensors as a tuple
        model, args = positional_model(model, dummy_input)
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
            try:
                traced = torch.jit.trace(model, args)
            except Exception as exc:  # noqa: BLE001 - the jit tracer fails in many ways; report one line
                raise CheckpointError(
                    f"{path}: TorchScript export failed ({_first_line(exc)}); try --format state_dict"
                ) from exc
            tmp = temp_file_for(path)
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


def _needs_positional(model: nn.Module, dummy_input: Any) -> bool:
    """Whether the jit tracer needs the model wrapped: keyword inputs, or an output that is a dict."""
    if keyword_inputs(dummy_input):
        return True
    with torch.no_grad():
        return isinstance(call_model(model, dummy_input), dict)


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Send what torch's exporter prints (the graph's IR, from C++ too) to nowhere: file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (the exporter's messages may hold a whole graph)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


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


MASK_HINT = (
    "transformers builds its causal mask with aten::diff when no attention_mask is given: search with the keyword "
    "input --set 'input.keywords={attention_mask: ones}' (recipe: input: {keywords: {attention_mask: ones}}) and "
    "export that file, or use --format torchscript"
)


def _onnx_hint(exc: BaseException) -> str:
    """What to do about a failed ONNX export: pass an attention mask (transformers' mask code), else another format."""
    if "aten::diff" in str(exc):
        return MASK_HINT
    return "try --format torchscript or state_dict"


def _write_onnx(model: nn.Module, path: Path, args: tuple, check: tuple, expected: Any) -> float:
    import warnings

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise CheckpointError(
            "--format onnx needs onnx and onnxruntime; install them with `pip install 'nasprune[onnx]'`"
        ) from exc
    names = [f"input_{i}" for i in range(len(args))] if len(args) > 1 else ["input"]
    tmp = temp_file_for(path)
    try:
        with warnings.catch_warnings(), _quiet_output():
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
        raise CheckpointError(f"{path}: ONNX export failed ({_first_line(exc)}); {_onnx_hint(exc)}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return diff
