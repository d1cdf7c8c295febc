"""Atomic writes and weights_only reads of search states and pruned-model files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nasprune_cli.checkpoint import (
    load_pruned,
    load_search_state,
    save_pruned,
    save_search_state,
    write_deployable,
)
from nasprune_cli.errors import CheckpointError
from nasprune_cli.fileio import atomic_save
from nasprune_cli.searching.result import Figures, Reconstruction, SearchResult

FP = {"model": {"entry_point": "pkg:build"}, "constraints": {"flops": 1.0}}


def test_search_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    rng = [3, [*range(624), 624], None]  # the state is checked on reading: a valid random.Random state, subnets
    state = {"sensitivity_map": {"h": {8: 0.5}}, "rng": rng, "best": None, "history": [{"config": {"h": 8}}]}
    save_search_state(path, state, FP)
    assert load_search_state(path, FP) == state
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert load_search_state(tmp_path / "missing.pt", FP) is None


def test_foreign_search_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_search_state(path, {"x": 1}, FP)
    other = {"model": {"entry_point": "pkg:other"}, "constraints": {"flops": 1.0}}
    with pytest.raises(CheckpointError, match=r"different search \(model.entry_point .*pkg:build.* vs .*pkg:other"):
        load_search_state(path, other)


def test_wrong_kind_corrupt_and_unsafe_files_are_refused(tmp_path: Path) -> None:
    pruned_like = tmp_path / "p.pt"
    torch.save({"kind": "nasprune-pruned", "format_version": 1}, pruned_like)
    with pytest.raises(CheckpointError, match="not a nasprune search checkpoint \\(kind 'nasprune-pruned'"):
        load_search_state(pruned_like, FP)
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="c.pt: not a readable nasprune search checkpoint"):
        load_search_state(corrupt, FP)
    unsafe = tmp_path / "u.pt"
    torch.save({"kind": "nasprune-search-state", "obj": nn.Linear(1, 1)}, unsafe)
    with pytest.raises(CheckpointError, match="u.pt: not a readable"):
        load_search_state(unsafe, FP)
    future = tmp_path / "f.pt"
    torch.save({"kind": "nasprune-search-state", "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="unsupported format_version 99"):
        load_search_state(future, FP)


def test_atomic_save_removes_what_a_killed_write_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    stale = tmp_path / ".state.pt.k1ll3d.tmp"  # a write killed between mkstemp and os.replace
    stale.write_bytes(b"partial")
    other = tmp_path / ".other.pt.abc.tmp"  # another file's temporary: not ours to delete
    other.write_bytes(b"x")
    atomic_save({"v": 2}, path)
    assert torch.load(path, weights_only=True) == {"v": 2}
    assert not stale.exists() and other.exists()


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    atomic_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"v": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(CheckpointError, match="does not exist"):
        atomic_save({}, tmp_path / "nope" / "x.pt")


def a_result(model: nn.Module, **changes: Any) -> SearchResult:
    """A search result around `model`, with made-up figures; `changes` replace fields (config, model_spec, ...)."""
    result = SearchResult(
        model=model,
        config={"h": 2},
        searcher="binary",
        score_name="acc",
        original=Figures(8.0, 10.0, 1.0),
        pruned=Figures(4.0, 6.0, 0.9),
        evaluations=3,
        constraints={"flops": 4.0},
        layers=[],
        reconstruction=Reconstruction(False, "off"),
        latency=None,
        model_spec={"entry_point": "pkg:build", "kwargs": {}},
        recipe=None,
        input={"shape": [1, 4], "dtype": "float32"},
        state={},
    )
    return dataclasses.replace(result, **changes)


def test_pruned_file_round_trip_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "pruned.pt"
    model = nn.Linear(4, 2)
    save_pruned(path, a_result(model))
    data = load_pruned(path)
    assert data["config"] == {"h": 2} and data["model"]["entry_point"] == "pkg:build"
    assert data["metrics"]["flops_ratio"] == 0.5 and data["metrics"]["pruned"]["score"] == 0.9
    assert torch.equal(data["state_dict"]["weight"], model.weight)
    with pytest.raises(CheckpointError, match="pruned.pt: already exists \\(pass --overwrite"):
        save_pruned(path, a_result(model))
    save_pruned(path, a_result(nn.Linear(4, 2)), overwrite=True)
    assert not torch.equal(load_pruned(path)["state_dict"]["weight"], model.weight)
    with pytest.raises(CheckpointError, match="expected the SearchResult returned by nasprune_cli.search"):
        save_pruned(tmp_path / "other.pt", {"best": {}})  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "onnx"])
def test_write_deployable(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)).eval()
    path = tmp_path / f"m.{fmt}"
    result = write_deployable(model, path, fmt, torch.randn(1, 3, 6, 6))
    assert path.is_file() and result["format"] == fmt
    if fmt == "state_dict":
        assert set(torch.load(path, weights_only=True)) == set(model.state_dict())
    else:
        assert result["max_abs_diff"] < 1e-4
    with pytest.raises(CheckpointError, match="already exists"):
        write_deployable(model, path, fmt, torch.randn(1, 3, 6, 6))
    with pytest.raises(CheckpointError, match="unknown format 'tflite'"):
        write_deployable(model, tmp_path / "m.x", "tflite", torch.randn(1, 3, 6, 6))
    with pytest.raises(CheckpointError, match=r"m\.x: directory '.*no_dir' does not exist"):
        write_deployable(model, tmp_path / "no_dir" / "m.x", fmt, torch.randn(1, 3, 6, 6))
    assert not (tmp_path / "no_dir").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"e\.pt: not a readable nasprune pruned-model file \(the file is empty\)"),
        (b"rules: {}\n", r"e\.pt: not a readable nasprune pruned-model file \("),
        (b"\x80\x02garbage", r"e\.pt: not a readable nasprune pruned-model file \("),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "e.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_pruned(path)
    assert "\n" not in str(info.value)
