"""--device: resolving it (a missing device is a one-line error naming what was found), moving nested batches, a
search on the CPU, CUDA out-of-memory as one line, and a latency table refused on another kind of device."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from nasprune_cli.devices import device_errors, model_device, resolve_device
from nasprune_cli.errors import DeviceError, NasPruneError, RecipeError, SearchError
from nasprune_cli.inputs import move_to
from tests.cli.checks import assert_one_error
from tests.toys import Chain

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int, build: str | None = "12.4") -> None:
    """Pretend this torch build has CUDA `build` (None: a CPU-only build) and `count` GPUs."""
    monkeypatch.setattr(torch.version, "cuda", build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cpu_and_auto_without_a_gpu_are_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")


def test_auto_and_cuda_pick_the_local_rank_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda:0")


@pytest.mark.parametrize(
    ("spec", "count", "build", "fragments"),
    [
        ("cuda:3", 1, "12.4", ["device 'cuda:3'", "cuda:3 requested, 1 CUDA device found (cuda:0)", "--device cpu"]),
        ("cuda:2", 2, "12.4", ["cuda:2 requested, 2 CUDA devices found (cuda:0..cuda:1)"]),
        ("cuda", 0, None, ["CUDA is not available in this torch build", "CPU only", "--device cpu"]),
        ("cuda:0", 0, "12.4", ["cuda:0 requested, no CUDA device found", "--device cpu"]),
        ("gpu", 1, "12.4", ["device 'gpu'", "expected auto, cpu, cuda, cuda:N or mps"]),
    ],
)
def test_a_device_that_is_not_there_is_named_with_what_was_found(
    monkeypatch: pytest.MonkeyPatch, spec: str, count: int, build: str | None, fragments: list[str]
) -> None:
    fake_cuda(monkeypatch, count, build)
    with pytest.raises(DeviceError) as info:
        resolve_device(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_mps_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device 'mps': MPS is not available .*--device cpu"):
        resolve_device("mps")


def test_move_to_walks_nested_batches_and_keeps_their_types() -> None:
    Pair = collections.namedtuple("Pair", "x y")
    batch = (torch.ones(2), [torch.zeros(1), 3], {"ids": torch.arange(3), "name": "a"}, Pair(torch.ones(1), None))
    moved = move_to(batch, "meta")
    assert isinstance(moved, tuple) and isinstance(moved[1], list) and isinstance(moved[3], Pair)
    assert moved[0].device.type == "meta" and moved[1][0].device.type == "meta" and moved[1][1] == 3
    assert moved[2]["ids"].device.type == "meta" and moved[2]["name"] == "a" and moved[3].y is None
    assert batch[0].device.type == "cpu"  # the original is left as it was


def test_cuda_out_of_memory_becomes_one_line() -> None:
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 80 GiB\nmore text")
    with pytest.raises(DeviceError) as info, device_errors(torch.device("cuda:0")):
        raise oom
    message = str(info.value)
    assert "\n" not in message and message.startswith("cuda:0: out of GPU memory (CUDA out of memory")
    assert "--max-batches" in message and "--device cpu" in message
    with pytest.raises(DeviceError, match="out of GPU memory"), device_errors(torch.device("cuda:1")):
        try:  # the evaluator wraps a score function's error; the cause is still found
            raise oom
        except torch.cuda.OutOfMemoryError as exc:
            raise SearchError("score function 'x' raised OutOfMemoryError") from exc
    with pytest.raises(SearchError, match="not memory"), device_errors(torch.device("cuda:0")):
        raise SearchError("not memory")


def test_a_search_on_the_cpu_keeps_the_model_there_and_says_where_it_ran() -> None:
    from nasprune_cli.searching import search

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(Chain(), {"flops": "50%"}, torch.randn(1, 3, 16, 16), {"device": "cpu", "max_batches": 1})
    assert result.device == "cpu" and result.parallel is None
    assert model_device(result.model).type == "cpu"
    assert result.pruned.flops <= 0.5 * result.original.flops


def test_a_recipe_device_is_checked() -> None:
    from nasprune_cli.recipe.load import recipe_from_dict

    assert recipe_from_dict({"search": {"device": "cuda:1"}}).search.device == "cuda:1"
    with pytest.raises(RecipeError, match="search.device"):
        recipe_from_dict({"search": {"device": "gpu0"}})


def test_the_cli_names_a_missing_gpu_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_cuda(monkeypatch, 1)
    args = ["search", "--model", "tests.toys:Chain", "--input-shape", "1,3,16,16", "--flops", "50%"]
    result = CliRunner().invoke(app, [*args, "--device", "cuda:3", "--output", str(tmp_path / "p.pt")])
    assert_one_error(result, "cuda:3 requested, 1 CUDA device found")
    assert not (tmp_path / "p.pt").exists()


def test_a_latency_table_is_refused_on_another_kind_of_device() -> None:
    from nasprune_cli.conversion import convert
    from nasprune_cli.metrics.latency import LatencyModel, table_meta

    space = convert(Chain(), None, torch.randn(1, 3, 16, 16))
    meta = table_meta(space, 1)
    assert meta["device"] == "cpu"
    LatencyModel([], [(1.0, 1.0)], meta).check(space, 1, "t.json")
    gpu_table = LatencyModel([], [(1.0, 1.0)], {**meta, "device": "cuda:0 (NVIDIA H200)"})
    with pytest.raises(NasPruneError, match=r"t.json: the latency table was measured on cuda:0 \(NVIDIA H200\), this "):
        gpu_table.check(space, 1, "t.json")


@GPU
def test_a_search_on_the_gpu_writes_cpu_tensors(tmp_path: Path) -> None:
    from nasprune_cli.checkpoint import save_pruned
    from nasprune_cli.searching import search

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = {"device": "cuda", "max_batches": 2, "latency_table": str(tmp_path / "t.json")}
        result = search(Chain(), {"flops": "50%", "latency": "90%"}, torch.randn(1, 3, 16, 16), config)
    assert result.device.startswith("cuda") and model_device(result.model).type == "cpu"
    data = torch.load(save_pruned(tmp_path / "p.pt", result), weights_only=True)
    assert all(t.device.type == "cpu" for t in data["state_dict"].values())
    assert "cuda" in (tmp_path / "t.json").read_text()
