"""Data parallel training under torchrun: every rank takes its share of each step's batch (rows split along the first
dimension), the gradients are all-reduced weighted by the shares, so one step equals the one-process step on the
whole batch; the buffers (BatchNorm statistics) follow rank 0, and an error on any rank stops every rank.

A single process is a World of size 1: its share is the whole batch and nothing is exchanged."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasprune_cli.distributed import World, lost_peers, one_line
from nasprune_cli.errors import TrainingError
from nasprune_cli.inputs import tensors_in


def batch_rows(batch: Any) -> int:
    """The rows of a batch: the first dimension of its first tensor (0 without tensors)."""
    tensors = [t for t in tensors_in(batch) if t.dim() > 0]
    return int(tensors[0].shape[0]) if tensors else 0


def shard_batch(batch: Any, rank: int, size: int) -> tuple[Any, float]:
    """This rank's rows of a batch (every tensor with the batch's row count is sliced alike, others are kept) and its
    share of the rows, the weight of its gradients; the whole batch and 1.0 in a single process."""
    if size == 1:
        return batch, 1.0
    rows = batch_rows(batch)
    if rows < size:
        raise TrainingError(
            f"data parallel: a batch of {rows} rows cannot be shared among {size} processes; pass batches of at least "
            f"{size} rows, or run fewer processes (torchrun --nproc_per_node)"
        )
    start, stop = rows * rank // size, rows * (rank + 1) // size
    return _rows(batch, rows, start, stop), (stop - start) / rows


def _rows(obj: Any, rows: int, start: int, stop: int) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj[start:stop] if obj.dim() > 0 and obj.shape[0] == rows else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_rows(item, rows, start, stop) for item in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_rows(item, rows, start, stop) for item in obj)
    if isinstance(obj, dict):
        return {key: _rows(value, rows, start, stop) for key, value in obj.items()}
    return obj


def combine_step(
    world: World, step: int, error: BaseException | None, losses: dict[str, float], weight: float
) -> dict[str, float]:
    """After every rank's forward and backward: raise on every rank when one failed (a TrainingError naming the first
    failing rank; its own error on that rank), else the losses of the whole batch (the shares' weighted sum)."""
    if world.size == 1:
        if error is not None:
            raise error
        return losses
    reports = world.gather((None if error is None else one_line(error), losses, weight))
    failed = [(rank, text) for rank, (text, _, _) in enumerate(reports) if text is not None]
    if failed:
        if error is not None:
            raise error
        rank, text = failed[0]
        raise TrainingError(
            f"rank {rank} of {world.size} failed at training step {step + 1}: {text}; training stopped on every rank "
            "(the last checkpoint, if any, is kept)"
        )
    return {key: sum(share * found[key] for _, found, share in reports) for key in losses}


def reduce_gradients(world: World, model: nn.Module, weight: float) -> None:
    """Sum every rank's gradients weighted by its share: the gradient of the loss on the whole batch (the same
    parameters have a gradient on every rank, the same subnet being trained)."""
    if world.size == 1:
        return
    try:
        for param in model.parameters():
            if param.grad is not None:
                param.grad.mul_(weight)
                torch.distributed.all_reduce(param.grad)
        for buffer in model.buffers():  # BatchNorm statistics of rank 0's share, as DistributedDataParallel does
            torch.distributed.broadcast(buffer, src=0)
    except Exception as exc:  # noqa: BLE001 - a peer that died makes the collective fail in many ways
        raise lost_peers(world, exc) from exc
