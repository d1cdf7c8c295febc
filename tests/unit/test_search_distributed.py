"""One search across two CPU processes (gloo, torch.multiprocessing spawn): the same subnet, score and evaluation
count as one process; a checkpoint resumed with another number of processes; a failing rank stops every rank."""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from nasprune_cli.distributed import World, close_world, init_world
from nasprune_cli.errors import NasPruneError, SearchError
from nasprune_cli.recipe.schema import SearchSettings
from nasprune_cli.searching.binary import BinarySearcher
from nasprune_cli.searching.evolve import EvolveSearcher
from nasprune_cli.searching.random import RandomSearcher
from tests.unit.test_search_searchers import FakeEvaluator, FakeSpace

FAKE_BOUNDS = {"flops": 0.45 * FakeSpace().original_cost.flops}
FAKE_RUNS: dict[str, tuple[type, dict[str, Any]]] = {
    "binary": (BinarySearcher, {}),
    "evolve": (EvolveSearcher, {"iterations": 14, "population_size": 6, "seed": 3}),
    "random": (RandomSearcher, {"iterations": 12, "seed": 5}),
}


class FailingEvaluator(FakeEvaluator):
    """Raises a ValueError on one rank after a number of scores."""

    def __init__(self, space: FakeSpace, rank: int, fail_rank: int, fail_after: int) -> None:
        super().__init__(space)
        self.fail = rank == fail_rank
        self.limit = fail_after

    def __call__(self) -> float:
        if self.fail and self.calls >= self.limit:
            raise ValueError("boom: the GPU caught fire")
        return super().__call__()


def fake_search(kind: str, checkpoint: Path | None = None, evaluator: Callable[..., Any] | None = None) -> dict:
    """A searcher on the synthetic space (no model run); returns its state."""
    cls, settings = FAKE_RUNS[kind]
    space = FakeSpace()
    score = evaluator(space) if evaluator is not None else FakeEvaluator(space)
    conf = SearchSettings(searcher=cls.name, **settings)
    return cls(space, score, FAKE_BOUNDS, conf, checkpoint=checkpoint, fingerprint={"test": kind}).search()


def outcome(state: dict) -> tuple[dict, float, int]:
    """What must not depend on the number of processes."""
    return state["best"]["config"], state["best"]["score"], state["evaluations"]


def chain_search(searcher: str) -> dict[str, Any]:
    """search() on a small real conv net (random batches, the default score) on the CPU."""
    from nasprune_cli.searching import search
    from tests.toys import Chain

    torch.manual_seed(0)
    config: dict[str, Any] = {"searcher": searcher, "device": "cpu", "max_batches": 2, "seed": 1}
    if searcher == "evolve":
        config.update(iterations=10, population_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(Chain(), {"flops": "45%"}, torch.randn(1, 3, 16, 16), config)
    return {
        "config": result.config,
        "score": result.pruned.score,
        "evaluations": result.evaluations,
        "flops": result.pruned.flops,
        "parallel": result.parallel,
    }


def refit_search(tmp: Path, tag: str) -> dict[str, Any]:
    """search() with data on the small conv net: the refit runs (3 batches: one rank sits out the last round); the
    pruned weights are saved to tmp/refit_<tag>.pt."""
    from nasprune_cli.searching import search
    from tests.toys import Chain

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    data = [(torch.randn(6, 3, 16, 16, generator=gen),) for _ in range(3)]
    config: dict[str, Any] = {"device": "cpu", "data": data, "max_batches": 3, "seed": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(Chain(), {"flops": "45%"}, torch.randn(1, 3, 16, 16), config)
    torch.save(result.model.state_dict(), tmp / f"refit_{tag}.pt")
    return {"config": result.config, "reconstruction": result.reconstruction.to_dict(), "score": result.pruned.score}


def recal_setup() -> tuple[Any, list[tuple[torch.Tensor]]]:
    """A converted net with a SyncBatchNorm (it must not synchronize ranks that run other batches) and 5 batches."""
    from torch import nn

    from nasprune_cli.conversion import convert

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.SyncBatchNorm(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
    ).eval()
    space = convert(net, None, torch.zeros(1, 3, 8, 8))
    gen = torch.Generator().manual_seed(3)
    return space.model, [(torch.randn(4, 3, 8, 8, generator=gen),) for _ in range(5)]


def shared_reference(world: World, path: Path) -> None:
    """The default score's reference run by the ranks of `world` together: statistics and outputs, saved."""
    from nasprune_cli.metrics.score import Evaluator

    model, batches = recal_setup()
    evaluator = Evaluator(model, batches)
    evaluator.prepare(world)
    torch.save({"state": model.state_dict(), "reference": evaluator.reference}, path)


def leftover_scores(world: World) -> dict[str, Any]:
    """Three subnets of the small conv net scored by evaluate_shared with the default score: on two ranks, two in one
    round and the leftover one by both ranks together (each on its share of the 3 batches)."""
    import random

    from nasprune_cli.conversion import convert
    from nasprune_cli.metrics.score import Evaluator
    from nasprune_cli.searching.parallel import ShareStats, evaluate_shared
    from tests.toys import Chain

    torch.manual_seed(0)
    space = convert(Chain(), None, torch.randn(1, 3, 16, 16))
    gen = torch.Generator().manual_seed(6)
    evaluator = Evaluator(space.model, [(torch.randn(4, 3, 16, 16, generator=gen),) for _ in range(3)])
    evaluator.prepare(world)
    rng = random.Random(5)
    configs = [space.sample(rng) for _ in range(3)]

    def alone(config: dict[str, int]) -> float:
        space.select(config)
        return evaluator()

    def together(config: dict[str, int]) -> float:
        space.select(config)
        return evaluator(world=world)

    stats = ShareStats()
    scores = evaluate_shared(world, configs, alone, stats, together if evaluator.shares_batches() else None)
    return {"scores": scores, "together": stats.together, "configs": configs}


def scenario_leftover(rank: int, tmp: Path) -> Any:
    return leftover_scores(init_world("cpu"))


def scenario_recal(rank: int, tmp: Path) -> Any:
    world = init_world("cpu")
    shared_reference(world, tmp / f"recal_rank{rank}.pt")
    return world.size


def scenario_refit(rank: int, tmp: Path) -> Any:
    return refit_search(tmp, f"rank{rank}")


def scenario_chain(rank: int, tmp: Path) -> Any:
    return {s: chain_search(s) for s in ("binary", "evolve")}


def scenario_resume(rank: int, tmp: Path) -> Any:
    init_world("cpu")
    return {kind: outcome(fake_search(kind, tmp / f"{kind}.ckpt")) for kind in FAKE_RUNS}


def scenario_fail(rank: int, tmp: Path) -> Any:
    init_world("cpu")
    return outcome(fake_search("binary", tmp / "fail.ckpt", lambda space: FailingEvaluator(space, rank, 1, 2)))


SCENARIOS = {
    "leftover": scenario_leftover,
    "recal": scenario_recal,
    "refit": scenario_refit,
    "chain": scenario_chain,
    "resume": scenario_resume,
    "fail": scenario_fail,
}


def worker(rank: int, size: int, port: int, tmp: str) -> None:
    """One rank: join the group as torchrun would set it up, run every scenario in turn (one start-up: importing
    torch dominates), write what each got."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(size),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    payloads = {}
    try:
        for name, scenario in SCENARIOS.items():
            try:
                payloads[name] = {"ok": scenario(rank, Path(tmp))}
            except NasPruneError as exc:
                payloads[name] = {"error": str(exc), "type": type(exc).__name__}
    finally:
        close_world()
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(payloads))


def spawn(tmp: Path, size: int = 2) -> list[dict]:
    """Run the scenarios on `size` ranks; every rank's payloads."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(worker, args=(size, port, str(tmp)), nprocs=size, join=True, start_method="spawn")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(size)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Checkpoints of interrupted one-process searches, then one two-rank run of every scenario."""
    tmp = tmp_path_factory.mktemp("ranks")
    for kind in FAKE_RUNS:
        with pytest.raises(KeyboardInterrupt):
            fake_search(kind, tmp / f"{kind}.ckpt", lambda space: FakeEvaluator(space, fail_after=4))
        assert (tmp / f"{kind}.ckpt").is_file()
    return tmp, spawn(tmp)


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: the same float arithmetic
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_two_processes_find_the_subnet_one_process_finds(two_ranks: tuple[Path, list[dict]]) -> None:
    with one_thread():
        alone = {s: chain_search(s) for s in ("binary", "evolve")}
    for searcher, expected in alone.items():
        assert expected["parallel"] is None
        for payload in two_ranks[1]:
            got = payload["chain"]["ok"][searcher]
            assert got["config"] == expected["config"], searcher
            assert got["score"] == expected["score"], searcher
            assert got["evaluations"] == expected["evaluations"], searcher
            assert got["flops"] == expected["flops"], searcher
            shared = got["parallel"]
            assert shared["world_size"] == 2 and shared["rounds"] > 0
            assert shared["used"] <= shared["evaluated"]
            assert shared["used"] >= expected["evaluations"] // 2  # most evaluations were shared out


def test_two_processes_refit_the_weights_one_process_refits_to_the_bit(two_ranks: tuple[Path, list[dict]]) -> None:
    tmp, ranks = two_ranks
    with one_thread():
        alone = jsonable(refit_search(tmp, "alone"))
    assert alone["reconstruction"]["layers"] >= 2, alone  # the refit ran and changed layers
    expected = torch.load(tmp / "refit_alone.pt")
    for rank, payload in enumerate(ranks):
        got = payload["refit"]["ok"]
        for key in ("score_before", "score_after", "score", "mean_error_before", "mean_error_after", "skipped"):
            assert got["reconstruction"][key] == alone["reconstruction"][key], (rank, key)
        assert got["config"] == alone["config"] and got["score"] == alone["score"]
        weights = torch.load(tmp / f"refit_rank{rank}.pt")
        assert weights.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(weights[name], tensor), (rank, name)


def test_two_processes_recalibrate_and_record_the_reference_one_process_does_to_the_bit(
    two_ranks: tuple[Path, list[dict]],
) -> None:
    tmp, ranks = two_ranks
    with one_thread():
        shared_reference(World(), tmp / "recal_alone.pt")
    expected = torch.load(tmp / "recal_alone.pt")
    assert int(expected["state"]["1.num_batches_tracked"]) == 5
    for rank, payload in enumerate(ranks):
        assert payload["recal"]["ok"] == 2
        got = torch.load(tmp / f"recal_rank{rank}.pt")
        for key, value in expected["state"].items():
            assert torch.equal(got["state"][key], value), (rank, key)
        assert len(got["reference"]) == 5
        for mine, theirs in zip(got["reference"], expected["reference"], strict=True):
            assert torch.equal(mine, theirs), rank


def test_a_leftover_subnet_scored_by_both_ranks_together_scores_as_in_one_process(
    two_ranks: tuple[Path, list[dict]],
) -> None:
    with one_thread():
        alone = leftover_scores(World())
    assert alone["together"] == 0 and len(set(alone["scores"])) == 3  # three different subnets, three scores
    for payload in two_ranks[1]:
        got = payload["leftover"]["ok"]
        assert got["configs"] == alone["configs"]
        assert got["together"] == 1  # 3 subnets on 2 ranks: one round, then the third by both
        assert got["scores"] == alone["scores"]  # to the bit


def test_a_checkpoint_from_one_process_resumes_on_two(two_ranks: tuple[Path, list[dict]]) -> None:
    expected = {kind: jsonable(outcome(fake_search(kind))) for kind in FAKE_RUNS}
    for payload in two_ranks[1]:
        assert payload["resume"]["ok"] == expected


def test_a_failing_rank_stops_every_rank_and_the_run_resumes_on_one(two_ranks: tuple[Path, list[dict]]) -> None:
    tmp_path, ranks = two_ranks
    for rank, ranked in enumerate(ranks):
        payload = ranked["fail"]
        assert payload["type"] == "SearchError", payload
        assert payload["error"].startswith("rank 1 of 2 failed scoring a subnet"), payload
        assert "ValueError: boom: the GPU caught fire" in payload["error"]
        assert "stopped on every rank" in payload["error"], rank
    checkpoint = tmp_path / "fail.ckpt"
    assert checkpoint.is_file()  # written after every step before the failure, never half
    assert outcome(fake_search("binary", checkpoint)) == outcome(fake_search("binary"))


def test_a_single_process_world_costs_nothing_and_raises_its_own_error() -> None:
    world = World()
    assert world.gather(3) == [3] and world.broadcast("x") == "x" and world.is_main
    tensor = torch.arange(3.0)
    assert world.gather_tensor(tensor)[0] is tensor and world.broadcast_tensor(tensor) is tensor
    world.agree(None, "anything")
    with pytest.raises(SearchError, match="own"):
        world.agree(SearchError("its own"), "anything")


@pytest.mark.slow
def test_torchrun_cli_writes_once_what_one_process_finds(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = [
        "-m",
        "nasprune_cli",
        "search",
        "--model",
        "tests.toys:Chain",
        "--input-shape",
        "1,3,16,16",
        "--flops",
        "45%",
        "--device",
        "cpu",
        "--max-batches",
        "2",
        "--json",
        "--quiet",
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    two = subprocess.run(
        [*torchrun, *args, "--output", str(tmp_path / "p.pt")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:]
    got, expected = json.loads(two.stdout), json.loads(one.stdout)  # one JSON document: rank 1 prints nothing
    assert got["config"] == expected["config"] and got["metrics"]["pruned"] == expected["metrics"]["pruned"]
    assert got["metrics"]["evaluations"] == expected["metrics"]["evaluations"]
    assert two.stderr.count("wrote ") == 1 and (tmp_path / "p.pt").is_file()
