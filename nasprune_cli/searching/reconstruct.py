"""Weight reconstruction after a search: refit the kept weights of every conv / linear layer by least squares.

Pruning drops channels but keeps the surviving weights as they were, so each layer sees fewer (and, after the
first pruned layer, slightly different) inputs than it was trained on. Layer by layer, in forward order,
`reconstructed` solves for the active weights (and bias) that make the layer's output on the calibration batches
match the original model's output at the kept channels:

    W = argmin ||X W^T - Y||^2 + ridge * mean(diag(X^T X)) * ||W - W_kept||^2

X is the layer's input in the pruned subnet (with the layers before it already refitted and the normalization
statistics recalibrated for them), Y the original layer's output on the same batch (original weights and
statistics). The ridge term pulls W towards the kept weights. Its strength is chosen per layer on held-out rows
(fit on half of the samples, score on the other half, both ways); a layer whose fit does not predict held-out rows
better than its kept weights keeps them, so a few batches cannot make a layer memorize them. Refitted: 2-D
convolutions with groups=1 and zero padding, and linear layers; other layers keep their weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.distributed import World
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.errors import SearchError
from nasprune_cli.inputs import call_model, eval_mode
from nasprune_cli.metrics.recalibrate import Stop, default_collect, norm_layers, recalibrate_bn
from nasprune_cli.searching.normals import Folds, Normal, held_out_fit, summed_batches, summed_folds

__all__ = ["EXACT", "RIDGES", "Normal", "ReconstructReport", "held_out_fit", "reconstructed", "refit_reason"]

RIDGES = (1e-3, 1e-2, 1e-1, 1.0)  # pulls towards the kept weights tried, as shares of the mean diagonal of X^T X
TARGET_BYTES = 1 << 29  # original layer outputs kept at a time per process (several layers captured per pass)
EXACT = "its output already matches the original model's"
ProgressFn = Callable[[str, int, int], None]


@dataclass
class ReconstructReport:
    """What a reconstruction refitted, what it left alone and why, and the output error it removed."""

    layers: list[str] = field(default_factory=list)  # refitted, in forward order
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why its weights were kept
    error_before: dict[str, float] = field(default_factory=dict)  # relative output error on the batches
    error_after: dict[str, float] = field(default_factory=dict)
    ridge: dict[str, float] = field(default_factory=dict)  # the pull each refitted layer got (chosen on held-out rows)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON / checkpoint friendly)."""
        return {
            "layers": list(self.layers),
            "skipped": dict(self.skipped),
            "error_before": dict(self.error_before),
            "error_after": dict(self.error_after),
            "ridge": dict(self.ridge),
            "seconds": self.seconds,
        }


def refit_reason(module: nn.Module) -> str | None:
    """Why a layer's weights cannot be refitted (None: they can)."""
    if not is_dynamic(module):
        return "not converted (its channels are kept whole)"
    if isinstance(module, nn.Linear):
        return None
    if not isinstance(module, nn.Conv2d):
        return "only 2-D convolutions and linear layers are refitted"
    if module.groups != 1:
        return f"grouped convolution (groups={module.groups})"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}"
    if isinstance(module.padding, str) and module.padding != "valid" and any(k % 2 == 0 for k in module.kernel_size):
        return "padding='same' with an even kernel"
    if module.get_kernel_size() is not None:
        return "its kernel size is searched"
    return None


class _Regimes:
    """The two states a forward pass runs in: the original model (full subnet, its weights and normalization
    statistics) and the pruned subnet being refitted (working weights, statistics recalibrated for them)."""

    def __init__(
        self, space: Any, layers: list[str], batches: Sequence[Any], collect: Callable[[Any], Any], world: World
    ) -> None:
        self.space, self.batches, self.collect, self.world = space, batches, collect, world
        self.active = space.config()
        model = space.model
        self.params = {name: _params(model.get_submodule(name)) for name in layers}
        self.original = {name: [p.data for p in ps] for name, ps in self.params.items()}
        self.work = {name: [t.clone() for t in ts] for name, ts in self.original.items()}
        self.saved_stats = _norm_stats(model)  # as the space had them: put back on leaving
        self.original_stats = self.work_stats = self.saved_stats
        self.current = ""  # the regime the model is in now ("original", "work"; "" unknown)

    def use_original(self) -> None:
        """The full subnet with the original weights and statistics."""
        if self.current != "original":
            self.space.select(self.space.max())
            _use(self.params, self.original)
            _load_norm_stats(self.original_stats)
            self.current = "original"

    def use_work(self) -> None:
        """The active subnet with the working weights and their statistics."""
        if self.current != "work":
            self.space.select(self.active)
            _use(self.params, self.work)
            _load_norm_stats(self.work_stats)
            self.current = "work"

    def calibrate(self, which: str, stop: nn.Module | None = None) -> None:
        """Recalibrate the statistics of one regime on the batches (they change with its weights); with `stop`,
        only those of the norm layers that run before it."""
        if which == "original":
            self.use_original()
        else:
            self.use_work()
        recalibrate_bn(self.space.model, self.batches, self.collect, self.world, stop)
        stats = _norm_stats(self.space.model)
        if which == "original":
            self.original_stats = stats
        else:
            self.work_stats = stats


class _Targets:
    """The original model's outputs of the layers to refit (at their kept channels) on this rank's batches. One
    forward pass captures the outputs of several layers in forward order, up to TARGET_BYTES over this rank's
    batches; each output is handed out once."""

    def __init__(self, regimes: _Regimes, layers: list[str], mine: int) -> None:
        self.regimes, self.layers = regimes, layers
        model = regimes.space.model
        self.modules = {name: model.get_submodule(name) for name in layers}
        regimes.use_work()
        self.rows = {name: module.get_index("out") for name, module in self.modules.items()}  # the kept channels
        self.per_batch = TARGET_BYTES // max(mine, 1)
        self.kept: dict[tuple[str, int], torch.Tensor] = {}

    def take(self, name: str, index: int) -> torch.Tensor:
        """Layer `name`'s original output on batch `index`, one row per output position."""
        if (name, index) not in self.kept:
            self._capture(name, index)
        return self.kept.pop((name, index))

    def _capture(self, name: str, index: int) -> None:
        """One forward pass of the original model on a batch, from layer `name` on, while the budget lasts."""
        self.regimes.use_original()
        names = {self.modules[n]: n for n in self.layers[self.layers.index(name) :]}
        used = 0

        def hook(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            nonlocal used
            layer = names[module]
            y = _targets(module, out.detach(), self.rows[layer])
            self.kept[(layer, index)] = y
            used += y.numel() * y.element_size()
            if used >= self.per_batch or layer == self.layers[-1]:
                raise Stop

        handles = [module.register_forward_hook(hook) for module in names]
        try:
            with torch.no_grad():
                call_model(self.regimes.space.model, self.regimes.collect(self.regimes.batches[index]))
        except Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if (name, index) not in self.kept:
            raise SearchError(f"reconstruction: layer '{name}' did not run on a data batch")


@contextmanager
def reconstructed(
    space: Any,
    batches: Sequence[Any],
    collect: Callable[[Any], Any] = default_collect,
    on_progress: ProgressFn | None = None,
    ridges: Sequence[float] = RIDGES,
    world: World | None = None,
) -> Iterator[ReconstructReport]:
    """Inside the block the space's active subnet runs with refitted weights and recalibrated normalization
    statistics (export it there); on exit every weight and statistic of the space is put back. Under torchrun every
    rank calls it: the ranks share out the batches and the fits, and all end with the weights one process finds."""
    if not batches:
        raise SearchError("reconstruction: no data batches to refit the weights on (pass --data)")
    start = time.perf_counter()
    model: nn.Module = space.model
    report = ReconstructReport()
    world = world if world is not None else World()
    layers = _forward_order(model, batches[0], collect, report)
    regimes = _Regimes(space, layers, batches, collect, world)
    try:
        with eval_mode(model):
            regimes.calibrate("original")
            targets = _Targets(regimes, layers, len(summed_batches(world, len(batches))))
            for i, name in enumerate(layers):
                if on_progress is not None:
                    on_progress("reconstruct", i, len(layers))
                # the statistics of the norm layers this layer's input goes through, for the weights refitted so far
                # (those that run after it are recalibrated before the next layer, or at the end)
                regimes.calibrate("work", stop=targets.modules[name])
                _refit(regimes, targets, name, ridges, report)
            regimes.calibrate("work")  # every norm layer, for the final weights
            if on_progress is not None:
                on_progress("reconstruct", len(layers), len(layers))
        regimes.use_work()
        report.seconds = time.perf_counter() - start
        yield report
    finally:
        _use(regimes.params, regimes.original)
        _load_norm_stats(regimes.saved_stats)
        space.select(regimes.active)


# ---- one layer ---------------------------------------------------------------------------------------------
def _refit(regimes: _Regimes, targets: _Targets, name: str, ridges: Sequence[float], report: ReconstructReport) -> None:
    """Fit one layer's active weights, or say in the report why it is left as it is.

    The data rows are split in two folds by sample. Each ridge strength is fitted on one fold and scored on the
    other; the best one is fitted on all rows, unless no strength predicts the held-out fold better than the kept
    weights (too few rows for the number of weights: the fit would memorize the batches).
    """
    module, world = targets.modules[name], regimes.world
    rows, cols = targets.rows[name], module.get_index("in")
    refit = f"refitting layer '{name}'"
    batch_folds = lambda i: _batch_folds(regimes, module, targets.take(name, i), i)  # noqa: E731
    folds = summed_folds(world, len(regimes.batches), batch_folds, refit, module.weight.device)
    if folds[0].xtx is None or folds[1].xtx is None:
        report.skipped[name] = "one data batch of one sample: no rows to check a fit on (pass more --data batches)"
        return
    kept = _active_matrix(module, regimes.work[name], rows, cols).double()
    whole = folds[0] + folds[1]
    report.error_before[name] = whole.error(kept) / max(whole.yty, 1e-30)
    if report.error_before[name] < 1e-10:
        report.skipped[name] = EXACT
        return
    try:
        fit = held_out_fit(folds, kept, ridges, world)
    except RuntimeError as exc:  # pragma: no cover - the ridge keeps the systems regular
        report.skipped[name] = f"least squares failed ({exc})"
        return
    if fit is None:
        report.skipped[name] = (
            f"a fit on half of the data rows did not predict the other half better than the kept weights "
            f"({whole.rows} rows for {kept.shape[1]} weights per output); more --data batches may help"
        )
        return
    solved, best = fit
    report.error_after[name] = whole.error(solved) / max(whole.yty, 1e-30)
    report.ridge[name] = best
    _write(module, regimes.work[name], solved, rows, cols)
    report.layers.append(name)


def _batch_folds(regimes: _Regimes, module: nn.Module, y: torch.Tensor, index: int) -> Folds:
    """One data batch's sums of both folds, given the original output `y`: its samples split in two halves (a batch
    of one sample goes to the first fold when its index is even, else to the second)."""
    regimes.use_work()
    x_in = _capture(regimes.space.model, module, regimes.collect(regimes.batches[index]))
    x = _design(module, x_in)
    samples = x_in.shape[0]
    half = (samples // 2) * (x.shape[0] // samples) if samples > 1 else (x.shape[0] if index % 2 == 0 else 0)
    folds = (Normal(), Normal())
    for fold, part in zip(folds, (slice(0, half), slice(half, None)), strict=True):
        if x[part].shape[0]:
            fold.add(x[part], y[part])
    return folds


def _capture(model: nn.Module, module: nn.Module, inputs: Any) -> torch.Tensor:
    """The layer's input on one batch; the forward pass stops right before the layer runs."""
    got: list[torch.Tensor] = []

    def pre_hook(_m: nn.Module, args: tuple) -> None:
        got.append(args[0].detach())
        raise Stop

    handle = module.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            call_model(model, inputs)
    except Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise SearchError(f"reconstruction: layer '{module._nasprune_name}' did not run on a data batch")
    return got[0]


def _design(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows of the least-squares problem: unfolded conv patches or linear inputs, plus a ones column for a bias."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, _padding(module), module.stride)
        x = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        x = x.reshape(-1, x.shape[-1])
    if module.bias is not None:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
    return x


def _targets(module: nn.Module, y: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The original output at the kept channels, one row per output position (matching _design's rows)."""
    if isinstance(module, nn.Conv2d):
        y = y if rows is None else y.index_select(1, rows.to(y.device))
        return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    y = y if rows is None else y.index_select(y.dim() - 1, rows.to(y.device))
    return y.reshape(-1, y.shape[-1])


def _padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation, strict=True))  # type: ignore[return-value]
    return tuple(module.padding)  # type: ignore[return-value]


def _index(index: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    return torch.arange(size, device=device) if index is None else index.to(device)


def _active_matrix(
    module: nn.Module, tensors: list[torch.Tensor], rows: torch.Tensor | None, cols: torch.Tensor | None
) -> torch.Tensor:
    """The active weights as one row per kept output (flattened inputs, then the bias when there is one)."""
    weight = tensors[0]
    r = _index(rows, weight.shape[0], weight.device)
    c = _index(cols, weight.shape[1], weight.device)
    w = weight[r.view(-1, 1), c.view(1, -1)].reshape(len(r), -1)
    if module.bias is not None:
        w = torch.cat([w, tensors[1][r].view(-1, 1)], 1)
    return w


def _write(
    module: nn.Module,
    tensors: list[torch.Tensor],
    solved: torch.Tensor,
    rows: torch.Tensor | None,
    cols: torch.Tensor | None,
) -> None:
    """Put the solved active weights (and bias) into the full working tensors at the kept positions."""
    weight = tensors[0]
    r = _index(rows, weight.shape[0], weight.device)
    c = _index(cols, weight.shape[1], weight.device)
    solved = solved.to(weight.dtype)
    if module.bias is not None:
        tensors[1][r] = solved[:, -1]
        solved = solved[:, :-1]
    weight[r.view(-1, 1), c.view(1, -1)] = solved.reshape(len(r), len(c), *weight.shape[2:])


# ---- the model -----------------------------------------------------------------------------------------------
def _forward_order(model: nn.Module, batch: Any, collect: Callable[[Any], Any], report: ReconstructReport) -> list[str]:
    """Refittable layers in the order the active subnet runs them (each must run exactly once per forward).

    Layers that run before any pruned module and read all their inputs still give the original outputs: they are
    reported as such and left out without a pass over the data."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    calls: dict[str, int] = {}
    order: list[str] = []
    exact: set[str] = set()
    changed = False

    def hook(m: nn.Module, _args: tuple) -> None:
        nonlocal changed
        name = names.get(m)
        if name is not None:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == 1:
                order.append(name)
                if not changed and not (is_dynamic(m) and m.get_index("in") is not None):
                    exact.add(name)
        if is_dynamic(m) and _is_sliced(m):
            changed = True  # every module that runs after this one may see other inputs than in the original

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if m in names or is_dynamic(m)]
    try:
        with eval_mode(model), torch.no_grad():
            call_model(model, collect(batch))
    finally:
        for h in handles:
            h.remove()
    owners: dict[int, set[str]] = {}
    for module_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(module_name)
    out = []
    for name in order:
        module = model.get_submodule(name)
        reason = refit_reason(module)
        if reason is None and calls[name] != 1:
            reason = f"it runs {calls[name]} times per forward pass"
        if reason is None and any(len(owners[id(p)]) > 1 for p in _params(module)):
            reason = "its weights are shared with another layer"
        if reason is None and name in exact:
            reason = EXACT
        if reason is None:
            out.append(name)
        else:
            report.skipped[name] = reason
    for name in names.values():
        if name not in calls:
            report.skipped[name] = "it does not run in this subnet"
    return out


def _is_sliced(module: nn.Module) -> bool:
    """Whether a dynamic module runs other than in the original model (channels, kernel or children dropped)."""
    if any(module.get_index(side) is not None for side in module.sides()):
        return True
    kernel = getattr(module, "get_kernel_size", None)
    skipped = getattr(module, "skipped", None)
    return (kernel is not None and kernel() is not None) or (skipped is not None and bool(skipped()))


def _params(module: nn.Module) -> list[nn.Parameter]:
    return [module.weight] if module.bias is None else [module.weight, module.bias]


def _use(params: dict[str, list[nn.Parameter]], tensors: dict[str, list[torch.Tensor]]) -> None:
    """Point every refitted layer's parameters at these tensors (the original or the working copies)."""
    for name, ps in params.items():
        for p, t in zip(ps, tensors[name], strict=True):
            p.data = t


NormStats = dict[nn.Module, list[torch.Tensor]]


def _norm_stats(model: nn.Module) -> NormStats:
    """Copies of the running statistics of every normalization layer that recalibrate_bn recomputes."""
    return {m: [t.clone() for t in m.buffers(recurse=False)] for m in norm_layers(model)}


def _load_norm_stats(saved: NormStats) -> None:
    """Put statistics taken by _norm_stats back into their layers."""
    for module, tensors in saved.items():
        for buffer, value in zip(module.buffers(recurse=False), tensors, strict=True):
            buffer.copy_(value)
