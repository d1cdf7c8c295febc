"""Devices: `--device auto|cpu|cuda|cuda:N|mps` -> a torch.device that exists, waiting for queued GPU work, and CUDA
out-of-memory turned into a one-line error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nasprune_cli.errors import DeviceError

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DEVICE_HINT = "expected auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The device `spec` names, checked to exist; auto = the first CUDA GPU (the process's LOCAL_RANK one under
    torchrun), else the CPU. A DeviceError names the device, what was found and what to do."""
    spec = str(spec).strip().lower()
    if not re.match(DEVICE_PATTERN, spec):
        raise DeviceError(f"device '{spec}': {DEVICE_HINT}")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        return _mps()
    if spec == "auto":
        return _cuda(local_rank or 0, spec) if torch.cuda.is_available() else torch.device("cpu")
    index = int(spec.split(":")[1]) if ":" in spec else (local_rank or 0)
    return _cuda(index, spec)


def _cuda(index: int, spec: str) -> torch.device:
    """cuda:index after checking that this torch build has CUDA and the machine that many GPUs."""
    name = f"cuda:{index}"
    if torch.version.cuda is None and not torch.cuda.is_available():
        raise DeviceError(
            f"device '{spec}': CUDA is not available in this torch build (torch {torch.__version__}, CPU only); "
            "install a CUDA build of torch, or pass --device cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(
            f"device '{spec}': {name} requested, no CUDA device found (torch.cuda.is_available() is False: no GPU, "
            "or no driver / CUDA_VISIBLE_DEVICES hides them); pass --device cpu"
        )
    if index >= count:
        listed = f"cuda:0..cuda:{count - 1}" if count > 1 else "cuda:0"
        found = f"{count} CUDA device{'s' if count > 1 else ''} found ({listed})"
        raise DeviceError(f"device '{spec}': {name} requested, {found}; pass one of those, or --device cpu")
    return torch.device(name)


def _mps() -> torch.device:
    """The Apple GPU, after checking that it is there."""
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        built = backend is not None and backend.is_built()
        why = "no Apple GPU on this machine" if built else f"this torch build (torch {torch.__version__}) has no MPS"
        raise DeviceError(f"device 'mps': MPS is not available ({why}); pass --device cpu")
    return torch.device("mps")


def describe_device(device: torch.device) -> str:
    """'cpu', or the device with its name: 'cuda:0 (NVIDIA H200)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model without tensors)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on a GPU is done (a no-op on the CPU): call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _out_of_memory(exc: BaseException) -> BaseException | None:
    """The CUDA out-of-memory error in an exception's chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(current).split("\n")[0]:
            return current
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def device_errors(device: torch.device) -> Iterator[None]:
    """Inside the block, a CUDA out-of-memory error (also one a score function or the evaluator wrapped) becomes a
    one-line DeviceError naming the device and what to do."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is translated; the rest goes on as it is
        oom = _out_of_memory(exc)
        if oom is None:
            raise
        first = str(oom).split("\n")[0].split(". ")[0][:160]
        raise DeviceError(
            f"{device}: out of GPU memory ({first}); pass fewer or smaller --data batches (--max-batches, the data's "
            "batch size), a smaller --latency-batch, or --device cpu"
        ) from exc
