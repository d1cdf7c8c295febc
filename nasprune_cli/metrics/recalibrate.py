"""BatchNorm recalibration: the running statistics of every normalization layer recomputed on fixed data batches.

Each batch runs on its own from reset statistics (in training mode a norm layer normalizes with the batch's own
statistics, so one batch's figures do not depend on the other batches); the per-batch statistics are then averaged
in batch order. So the result is the same bits whether one process runs every batch or the ranks of a World share
the batches out, and a pass may end at a layer (`stop`): only the norm layers that ran before it are recalibrated,
the others keep their statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nasprune_cli.distributed import World, one_line, raise_first
from nasprune_cli.errors import SearchError
from nasprune_cli.inputs import call_model, eval_mode, tensors_in

Collect = Callable[[Any], Any]
NormLayer = nn.modules.batchnorm._NormBase
BatchStats = list[tuple[int, torch.Tensor, torch.Tensor] | None]  # per norm layer: (calls, mean, var) or None


class Stop(BaseException):  # not an error, and a model's own `except Exception` must not swallow it
    """Raised by a hook to end a forward pass at a layer."""


def run_until(model: nn.Module, inputs: Any, stop: nn.Module | None = None) -> Any:
    """The model's output on the inputs; with `stop`, the pass ends just before that module first runs (None then)."""
    if stop is None:
        return call_model(model, inputs)

    def pre_hook(_m: nn.Module, _args: tuple) -> None:
        raise Stop

    handle = stop.register_forward_pre_hook(pre_hook)
    try:
        return call_model(model, inputs)
    except Stop:
        return None
    finally:
        handle.remove()


def norm_layers(model: nn.Module) -> list[NormLayer]:
    """The normalization layers with running statistics (the ones recalibrate_bn recomputes)."""
    return [m for m in model.modules() if isinstance(m, NormLayer) and m.track_running_stats]


def recalibrate_bn(
    model: nn.Module,
    batches: Sequence[Any],
    collect: Collect | None = None,
    world: World | None = None,
    stop: nn.Module | None = None,
) -> None:
    """Recompute the running statistics of the norm layers on the batches: per batch from a reset, then averaged.

    The result depends only on the weights, the active subnet and the batches (not on the number of ranks, which
    share the batches out when `world` has several). With `stop`, only the layers that run before it are
    recomputed. Every module's training flag and every norm layer's momentum are put back afterwards. A non-finite
    output or statistic is a SearchError.
    """
    norms = norm_layers(model)
    if not norms:
        return
    world = world if world is not None else World()
    collect = collect if collect is not None else default_collect
    saved = [_stats(m) for m in norms]
    mine, error = _my_batches(model, norms, batches, collect, world, stop)
    if world.size == 1:
        per_batch = mine
    else:
        gathered = world.gather((error, mine))
        raise_first(world, [text for text, _ in gathered], "in BatchNorm recalibration")
        per_batch = {i: stats for _, theirs in gathered for i, stats in theirs.items()}
    ran = [m for j, m in enumerate(norms) if _average(m, [per_batch[i][j] for i in sorted(per_batch)], saved[j])]
    _check_statistics(model, ran)


def _my_batches(
    model: nn.Module,
    norms: list[NormLayer],
    batches: Sequence[Any],
    collect: Collect,
    world: World,
    stop: nn.Module | None,
) -> tuple[dict[int, BatchStats], str | None]:
    """This rank's batches' statistics (batch i is rank i % size's), and the first error on a rank of several."""
    mine: dict[int, BatchStats] = {}
    momenta = {m: m.momentum for m in norms}
    try:
        with eval_mode(model):
            for m in norms:
                m.momentum = None  # cumulative average over the calls in one batch
                m.train()
                m._nasprune_local_stats = True  # a SyncBatchNorm must not mix ranks that run other batches
            with torch.no_grad():
                for i in range(world.rank, len(batches), world.size):
                    for m in norms:
                        m.reset_running_stats()
                    out = run_until(model, collect(batches[i]), stop)
                    if out is not None:
                        check_finite(out, f"BatchNorm recalibration: the model's output on data batch {i}")
                    mine[i] = [_batch_stats(m) for m in norms]
    except Exception as exc:  # noqa: BLE001 - every rank hears of it in the gather
        if world.size == 1:
            raise
        return mine, one_line(exc)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
            m.__dict__.pop("_nasprune_local_stats", None)
    return mine, None


def _batch_stats(m: NormLayer) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    calls = int(m.num_batches_tracked)  # type: ignore[arg-type]
    if calls == 0:
        return None  # it did not run on this batch (or not before `stop`)
    # on the CPU: the ranks' statistics travel pickled, and the average is the same bits on any device
    return calls, m.running_mean.to("cpu", copy=True), m.running_var.to("cpu", copy=True)  # type: ignore[union-attr]


def _average(m: NormLayer, per_batch: list[tuple[int, torch.Tensor, torch.Tensor] | None], saved: tuple) -> bool:
    """Set a layer's statistics to the call-weighted average over the batches, in batch order (float64 sums); a
    layer that ran on no batch gets its saved statistics back (False)."""
    ran = [s for s in per_batch if s is not None]
    if not ran:
        _load(m, saved)
        return False
    calls = sum(c for c, _, _ in ran)
    mean = torch.zeros(ran[0][1].shape, dtype=torch.float64)
    var = torch.zeros_like(mean)
    for c, batch_mean, batch_var in ran:
        mean += batch_mean.double() * c
        var += batch_var.double() * c
    _load(m, ((mean / calls).to(saved[0].dtype), (var / calls).to(saved[1].dtype), torch.tensor(calls)))
    return True


def _stats(m: NormLayer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()  # type: ignore[union-attr]


def _load(m: NormLayer, stats: tuple) -> None:
    m.running_mean.copy_(stats[0])  # type: ignore[union-attr]
    m.running_var.copy_(stats[1])  # type: ignore[union-attr]
    m.num_batches_tracked.copy_(stats[2])  # type: ignore[union-attr]


def _check_statistics(model: nn.Module, norms: Sequence[NormLayer]) -> None:
    names = {id(m): n for n, m in model.named_modules()}
    for m in norms:
        for stat in ("running_mean", "running_var"):
            check_finite(getattr(m, stat), f"BatchNorm recalibration: {stat} of layer '{names.get(id(m), '?')}'")


def check_finite(obj: Any, what: str) -> None:
    """A SearchError naming `what` when a floating-point tensor in `obj` (nested) holds nan or inf."""
    for t in tensors_in(obj):
        if not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        kind = "nan" if bool(torch.isnan(t).any()) else "inf"
        count = int(finite.numel() - finite.sum())
        raise SearchError(
            f"{what} holds {count} non-finite value(s) ({kind}) in a tensor of shape {list(t.shape)}; nasprune "
            "would compute NaN statistics and scores from it: clean the data (or fix the model) and run again"
        )


def default_collect(batch: Any) -> Any:
    """Model inputs of a batch: the first element of a tuple / list batch, else the batch itself."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch
