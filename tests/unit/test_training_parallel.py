"""Data parallel fine-tuning across two CPU processes (gloo, torch.multiprocessing spawn, set up as torchrun does):
the same weights as one process; rank 0 alone writes the checkpoint; a failing rank stops both with an error naming it.

Tolerance: each rank computes the gradient of its half of the batch; the weighted all-reduced sum equals the gradient
on the whole batch mathematically, but float32 sums in another order (two halves, then their sum), so weights agree to
about 1e-6 relative, not bit for bit (atol 1e-5 after 4 AdamW steps). The model has no BatchNorm or dropout: BatchNorm
normalises each rank's half with its own statistics (as DistributedDataParallel without SyncBatchNorm) and dropout
draws per process, so those would differ from one process by design."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from nasprune_cli.distributed import close_world, current_world, init_world
from nasprune_cli.errors import NasPruneError, TrainingError
from nasprune_cli.training import TrainingData, TrainSettings, finetune
from nasprune_cli.training.parallel import combine_step, shard_batch

STEPS, TOLERANCE = 4, 1e-5


def mlp() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(5, 6, generator=gen), torch.randint(0, 4, (5,), generator=gen)) for _ in range(3)]


def run(checkpoint: Path | None = None, fail_rank: int | None = None) -> dict[str, list]:
    """Fine-tune the MLP (ce+kd, odd batches of 5 rows: shares of 2 and 3) and return its weights."""

    def collect(batch: Any) -> torch.Tensor:
        if current_world().rank == fail_rank:
            raise ValueError("boom: rank data went missing")
        return batch[0]

    settings = TrainSettings(steps=STEPS, loss="ce+kd", seed=1, device="cpu", checkpoint=checkpoint and str(checkpoint))
    data = TrainingData(batches(), collect, None, "test:mlp", None)
    model = finetune(mlp(), mlp(), data, settings).model
    return {k: v.tolist() for k, v in model.state_dict().items()}


def worker(rank: int, size: int, port: int, tmp: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(size), RANK=str(rank), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(size), OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    init_world("cpu")
    payload: dict[str, Any] = {}
    try:
        payload["weights"] = run(Path(tmp) / "ck.pt")
        payload["checkpoint_seen"] = (Path(tmp) / "ck.pt").exists()
        try:
            run(fail_rank=1)
        except NasPruneError as exc:
            payload["error"] = str(exc)
        except ValueError as exc:
            payload["error"] = f"own: {exc}"
    finally:
        close_world()
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(payload))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(worker, args=(2, port, str(tmp)), nprocs=2, join=True, start_method="spawn")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_processes_train_the_same_weights_as_one(two_ranks: list[dict]) -> None:
    torch.set_num_threads(1)
    single = run()
    for payload in two_ranks:
        assert payload["weights"].keys() == single.keys()
        for key, value in single.items():
            torch.testing.assert_close(
                torch.tensor(payload["weights"][key]), torch.tensor(value), atol=TOLERANCE, rtol=0
            )
    assert two_ranks[0]["checkpoint_seen"]
    changed = any(not torch.equal(torch.tensor(single[k]), v) for k, v in mlp().state_dict().items())
    assert changed


def test_a_failing_rank_stops_both_naming_it(two_ranks: list[dict]) -> None:
    assert two_ranks[1]["error"] == "own: boom: rank data went missing"
    assert "rank 1 of 2 failed at training step 1" in two_ranks[0]["error"]
    assert "ValueError: boom" in two_ranks[0]["error"]


def test_shard_batch_splits_rows_and_weighs_the_shares() -> None:
    x, y, meta = torch.arange(10.0).reshape(5, 2), torch.arange(5), torch.ones(3)
    first, w0 = shard_batch((x, {"y": y, "meta": meta}), 0, 2)
    second, w1 = shard_batch((x, {"y": y, "meta": meta}), 1, 2)
    assert (w0, w1) == (0.4, 0.6)
    assert torch.equal(torch.cat([first[0], second[0]]), x) and first[1]["y"].tolist() == [0, 1]
    assert first[1]["meta"] is meta  # a tensor of another length is not split
    assert shard_batch(x, 0, 1) == (x, 1.0)
    with pytest.raises(TrainingError, match="a batch of 5 rows cannot be shared among 8 processes"):
        shard_batch(x, 0, 8)


def test_one_process_reraises_its_own_error() -> None:
    world = current_world()
    assert combine_step(world, 0, None, {"loss": 2.0}, 1.0) == {"loss": 2.0}
    with pytest.raises(KeyError):
        combine_step(world, 0, KeyError("x"), {}, 1.0)
