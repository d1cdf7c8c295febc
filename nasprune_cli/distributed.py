"""Several processes, one search (`torchrun --nproc_per_node N -m nasprune_cli search ...`): the process group, and the
few collective steps the searchers use (gather every rank's share, rank 0's value to all, a shared verdict on errors).

Every rank runs the same search on the same model and data; only the score evaluations are shared out. Rank 0 reads
and writes the files; the others follow. A single process is a World of size 1 whose collectives cost nothing.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from nasprune_cli.devices import resolve_device
from nasprune_cli.errors import SearchError

TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a rank that is still evaluating


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one search."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0: the rank that reads and writes files and reports progress."""
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order (picklable values; [value] in a single process)."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        try:
            torch.distributed.all_gather_object(values, value)
        except Exception as exc:  # noqa: BLE001 - a peer that died makes the collective fail in many ways
            raise lost_peers(self, exc) from exc
        return values

    def gather_tensor(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor (same shape and dtype on every rank), in rank order; far faster than `gather` for
        large tensors (no pickling)."""
        if self.size == 1:
            return [tensor]
        out = [torch.empty_like(tensor) for _ in range(self.size)]
        try:
            torch.distributed.all_gather(out, tensor.contiguous())
        except Exception as exc:  # noqa: BLE001
            raise lost_peers(self, exc) from exc
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if self.size == 1:
            return value
        box = [value if self.is_main else None]
        try:
            torch.distributed.broadcast_object_list(box, src=0)
        except Exception as exc:  # noqa: BLE001
            raise lost_peers(self, exc) from exc
        return box[0]

    def broadcast_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor on every rank (every rank passes one of the same shape and dtype; filled in place)."""
        if self.size == 1:
            return tensor
        tensor = tensor.contiguous()
        try:
            torch.distributed.broadcast(tensor, src=0)
        except Exception as exc:  # noqa: BLE001
            raise lost_peers(self, exc) from exc
        return tensor

    def agree(self, error: BaseException | None, what: str) -> None:
        """Raise on every rank when any rank failed at `what`: a SearchError naming the first failing rank and why
        (its own error on that rank itself)."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        raise_first(self, self.gather(None if error is None else one_line(error)), what)


def raise_first(world: World, errors: list[str | None], what: str) -> None:
    """A SearchError naming the first rank whose entry in `errors` (one per rank, gathered) is not None, and the
    other ranks that failed too."""
    failed = [(rank, text) for rank, text in enumerate(errors) if text is not None]
    if not failed:
        return
    rank, text = failed[0]
    others = f" (and rank(s) {', '.join(str(r) for r, _ in failed[1:])})" if len(failed) > 1 else ""
    raise SearchError(f"rank {rank} of {world.size} failed {what}{others}: {text}; the search stopped on every rank")


def one_line(error: BaseException) -> str:
    """An error as one line: its message, or its type and message when it is not one of nasprune's."""
    from nasprune_cli.errors import NasPruneError

    text = str(error).split("\n")[0]
    return text if isinstance(error, NasPruneError) else f"{type(error).__name__}: {text}"


def lost_peers(world: World, exc: BaseException) -> SearchError:
    """The error of a collective that failed: another rank stopped (it failed or was killed)."""
    return SearchError(
        f"rank {world.rank} of {world.size}: lost contact with the other processes ({one_line(exc)[:200]}); another "
        "rank stopped (see its error) or was killed; nothing more was written"
    )


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not run under torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_world() -> World:
    """The World of an initialised process group, else a single process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local)


def init_world(device: str = "auto") -> World:
    """Join the process group torchrun describes (gloo on the CPU, nccl on CUDA; LOCAL_RANK picks the GPU), with
    threads shared out among the CPU processes of a machine; a single process is left as it is."""
    dist = torch.distributed
    if env_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return current_world()
    if not dist.is_available():
        raise SearchError("WORLD_SIZE > 1 (torchrun) but this torch build has no torch.distributed; run one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    elif "OMP_NUM_THREADS" not in os.environ:
        per_machine = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", env_world_size())))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_machine))
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - rendezvous failures come as many exception types
        raise SearchError(
            f"rank {os.environ.get('RANK', '?')}: could not join the {backend} process group ({one_line(exc)[:200]}); "
            "check MASTER_ADDR / MASTER_PORT and that every rank was started"
        ) from exc
    atexit.register(close_world)
    return current_world()


def close_world() -> None:
    """Leave the process group (after the search), when one is set up."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
