"""Files are data: hostile, damaged or hand-edited files are refused with the file and the field named (issue 16)."""

from __future__ import annotations

import json
import math
import os
import random
import stat
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from nasprune_cli.checkpoint import (
    load_pruned,
    load_search_state,
    restore,
    save_pruned,
    save_search_state,
    write_deployable,
)
from nasprune_cli.conversion import convert
from nasprune_cli.errors import CheckpointError, NasPruneError
from nasprune_cli.fileio import atomic_save, atomic_write, check_output, exclusive_lock
from nasprune_cli.metrics import latency as lat
from nasprune_cli.recipe.load import recipe_from_dict, recipe_to_dict
from nasprune_cli.space_file import load_space, restore_space, save_space
from tests.toys import Residual
from tests.unit.test_checkpoint import a_result

SHAPE = [2, 3, 16, 16]
RULES = {"nn.Conv2d": {"channel_divisor": 16}, "nn.BatchNorm2d": {}, "nn.Linear": {}}
RECIPE = recipe_from_dict({"rules": RULES, "input": {"shape": SHAPE}})
FP = {"model": {"entry_point": "pkg:build"}}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a file ran the command it names"


def exploit(kind: str, marker: Path) -> dict:
    """A file of plain dicts and strings whose entry point is `subprocess:run` with a shell command."""
    data = {
        "kind": kind,
        "format_version": 1,
        "model": {"entry_point": "subprocess:run", "kwargs": {"args": f"touch {marker}", "shell": True}},
        "recipe": None,
        "input": {"shape": [1, 4], "dtype": "float32"},
        "config": {},
    }
    if kind == "nasprune-pruned":
        return {**data, "state_dict": {}, "metrics": {}}
    return {**data, "hparams": [], "frozen": []}


def write_raw(path: Path, data: dict) -> Path:
    torch.save(data, path)
    return path


def real_pruned(path: Path) -> Path:
    """A pruned Residual (the smallest subnet), written by save_pruned."""
    torch.manual_seed(0)
    space = convert(Residual(), RECIPE, torch.randn(SHAPE))
    config = space.min()
    space.select(config)
    result = a_result(
        space.export(),
        config=config,
        model_spec={"entry_point": "tests.toys:Residual", "kwargs": {}},
        recipe=recipe_to_dict(RECIPE),
        input={"shape": SHAPE, "dtype": "float32"},
    )
    return save_pruned(path, result)


def real_space(path: Path) -> Path:
    space = convert(Residual(), RECIPE, torch.randn(SHAPE))
    return save_space(path, space, {"entry_point": "tests.toys:Residual", "kwargs": {}}, RECIPE)


# ---- case 1: nothing a file names is called unless the caller says so ---------------------------------------
def test_restore_does_not_call_the_entry_point_a_pruned_file_names(tmp_path: Path, marker: Path) -> None:
    path = write_raw(tmp_path / "evil.pt", exploit("nasprune-pruned", marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no checksum: an older file
        with pytest.raises(CheckpointError, match=r"evil\.pt: no model given.*'subprocess:run'.*trust_entry_point"):
            restore(None, path)


def test_restore_space_does_not_call_the_entry_point_a_space_file_names(tmp_path: Path, marker: Path) -> None:
    path = write_raw(tmp_path / "evil.pt", exploit("nasprune-space", marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"evil\.pt: no model given.*'subprocess:run'.*trust_entry_point"):
            restore_space(path)


def test_the_stored_entry_point_is_called_when_the_caller_trusts_it(tmp_path: Path) -> None:
    path = real_pruned(tmp_path / "pruned.pt")
    with pytest.raises(CheckpointError, match="tests.toys:Residual"):
        restore(None, path)
    rebuilt = restore(None, path, trust_entry_point=True)
    assert torch.equal(rebuilt.fc.weight, load_pruned(path)["state_dict"]["fc.weight"])
    space_path = real_space(tmp_path / "space.pt")
    with pytest.raises(CheckpointError, match="restore_space\\(path, trust_entry_point=True\\)"):
        restore_space(space_path)
    assert isinstance(restore_space(space_path, trust_entry_point=True).model, Residual)


# ---- case 5: a checksum of the content, checked on every load --------------------------------------------
def flip_weight_bytes(path: Path, tensor: torch.Tensor, count: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()[:count]
    at = raw.find(needle)
    assert at > 0, "the weight's bytes are stored as they are"
    raw[at : at + count] = bytes(b ^ 0xFF for b in raw[at : at + count])
    path.write_bytes(bytes(raw))


def test_a_pruned_file_with_flipped_weight_bytes_is_refused(tmp_path: Path) -> None:
    path = real_pruned(tmp_path / "pruned.pt")
    weight = load_pruned(path)["state_dict"]["b.0.0.weight"]
    flip_weight_bytes(path, weight)
    damaged = torch.load(path, weights_only=True)  # torch itself reads it without complaint
    assert not torch.equal(damaged["state_dict"]["b.0.0.weight"], weight)
    with pytest.raises(CheckpointError, match=r"pruned\.pt: damaged pruned-model file: .*sha256 checksum"):
        load_pruned(path)
    with pytest.raises(CheckpointError, match="damaged pruned-model file"):
        restore(Residual(), path)


def test_a_search_space_file_that_was_changed_is_refused(tmp_path: Path) -> None:
    path = real_space(tmp_path / "space.pt")
    data = torch.load(path, weights_only=True)
    name = next(iter(data["config"]))
    data["config"][name] = data["hparams"][0]["choices"][0]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"space\.pt: damaged search-space file"):
        load_space(path)


def test_a_file_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    """The rule for files written before checksums: they load, with a warning that damage cannot be detected."""
    path = real_pruned(tmp_path / "pruned.pt")
    data = torch.load(path, weights_only=True)
    del data["sha256"]
    torch.save(data, path)
    with pytest.warns(UserWarning, match=r"pruned\.pt: this pruned-model file has no checksum"):
        restored = restore(Residual(), path)
    assert torch.equal(restored.fc.weight, data["state_dict"]["fc.weight"])


# ---- case 10 / 15: every field read from a file is checked ------------------------------------------------
def a_table() -> lat.LatencyModel:
    meta = {
        "hparams": {"h": 8, "d": 3},
        "depth_hparams": ["d"],
        "input_shape": [[3, 8, 8]],
        "batch": 1,
        "threads": 1,
        "machine": "x86_64",
        "torch": "2",
    }
    leaf = lat.LeafTiming("conv#0", True, {"h": 0.125}, {}, [(0.5, 1.0), (1.0, 2.0)], [("d", 1)])
    return lat.LatencyModel([leaf], [(0.5, 0.1), (1.0, 0.2)], meta)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["leaves"][0].update(samples=[]), r"field leaves\[0\]\.samples: .*at least 1"),
        (lambda t: t["leaves"][0]["coef_in"].update(nope=0.1), r"leaves\[0\] \(conv#0\): unknown hparam 'nope'"),
        (lambda t: t["leaves"][0].update(gates=[["h", 1]]), r"unknown hparam 'h'"),
        (lambda t: t["remainder"][0].__setitem__(1, -0.5), r"field remainder\[0\]\[1\]: .*greater than or equal"),
        (lambda t: t["leaves"][0]["samples"][1].__setitem__(1, math.nan), r"field leaves\[0\]\.samples\[1\]\[1\]"),
        (lambda t: t["leaves"][0].update(samples=[[1.0, 2.0], [0.5, 1.0]]), "strictly ascending"),
        (lambda t: t["meta"].update(batch="1"), r'field meta\.batch: .*\(got "1"\)'),
    ],
)
def test_a_hand_edited_latency_table_is_refused(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    data = a_table().to_dict()
    assert lat.LatencyModel.from_dict(json.loads(json.dumps(data)), "t.json").meta == data["meta"]
    edit(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NasPruneError, match=rf"t\.json: damaged latency table: .*{message}"):
        lat.load_latency_table(path)


def valid_state() -> dict:
    return {
        "searcher": "binary",
        "iteration": 2,
        "evaluations": 5,
        "original_score": 1.0,
        "best": {"config": {"h": 8}, "score": 0.9, "flops": 10.0, "params": 4},
        "history": [{"config": {"h": 8}, "score": 0.9, "flops": 10.0, "params": 4}],
        "rng": [3, [*random.Random(0).getstate()[1]], None],
        "done": False,
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("evaluations", "abc", r"field state\.evaluations: .*integer \(got 'abc'\)"),
        ("iteration", -1, r"field state\.iteration: .*greater than or equal to 0"),
        ("original_score", math.nan, r"field state\.original_score: .*finite"),
        ("best", {"config": {"h": "8"}, "score": 1.0}, r"field state\.best\.config\.h"),
        ("history", [{"config": {"h": 8}, "score": 1.0, "flops": -3.0}], r"field state\.history\[0\]\.flops"),
        ("rng", [3, [1, 2, 3], None], r"field state\.rng: not the state of a random\.Random"),
        ("done", "yes", r"field state\.done"),
    ],
)
def test_a_hand_edited_search_checkpoint_is_refused(tmp_path: Path, key: str, value: object, message: str) -> None:
    path = tmp_path / "state.pt"
    save_search_state(path, valid_state(), FP)
    assert load_search_state(path, FP) == valid_state()
    save_search_state(path, {**valid_state(), key: value}, FP)
    with pytest.raises(CheckpointError, match=rf"state\.pt: invalid search checkpoint: {message}"):
        load_search_state(path, FP)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["input"].update(dtype="float128"), r"field input\.dtype: .*\(got 'float128'\)"),
        (lambda d: d["config"].update(h="wide"), r"field config\.h: .*integer"),
        (lambda d: d["state_dict"].update(w=[1.0, 2.0]), r"field state_dict\.w"),
        (lambda d: d["model"].update(entry_point=5), r"field model\.entry_point"),
        (lambda d: d.update(extra=1), r"field extra: extra inputs are not permitted"),
        (lambda d: d.update(report={"searcher": "binary", "layers": "abc"}), r"field report\.layers"),
        (lambda d: d.update(report={"searcher": "binary", "sensitivity": {"h": {"8": "x"}}}), r"field report\.sensit"),
    ],
)
def test_a_hand_edited_pruned_file_is_refused(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    data = exploit("nasprune-pruned", tmp_path / "unused")
    data["model"] = {"entry_point": "tests.toys:Residual", "kwargs": {}}
    edit(data)
    path = write_raw(tmp_path / "pruned.pt", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no checksum
        with pytest.raises(CheckpointError, match=rf"pruned\.pt: invalid pruned-model file: {message}"):
            load_pruned(path)


def test_unreadable_files_get_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / "state.pt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"state\.pt: is a directory, expected a nasprune search checkpoint"):
        load_search_state(folder, FP)
    text = tmp_path / "notes.pt"
    text.write_text("epoch 3: loss 0.1\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a readable nasprune search checkpoint .*text file"):
        load_search_state(text, FP)
    truncated = real_pruned(tmp_path / "pruned.pt")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"pruned\.pt: damaged pruned-model file: .*truncated or corrupted"):
        load_pruned(truncated)


# ---- cases 11 / 12: outputs checked up front ------------------------------------------------------------------
def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path: Path) -> None:
    pruned = tmp_path / "pruned.pt"
    pruned.write_bytes(b"x")
    for same in (pruned, tmp_path / "sub" / ".." / "pruned.pt"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(CheckpointError, match=r"is also the --pruned file this command reads"):
            check_output(same, True, inputs={"--pruned": pruned})
    link = tmp_path / "link.pt"
    link.symlink_to(pruned)
    with pytest.raises(CheckpointError, match="is also the --pruned file"):
        check_output(link, True, inputs={"--pruned": pruned})
    check_output(tmp_path / "other.pt", True, inputs={"--pruned": pruned, "--checkpoint": None})


def test_unwritable_outputs_are_refused_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"out: is a directory, expected a file path"):
        check_output(folder, overwrite=True)
    with pytest.raises(CheckpointError, match=r"directory '.*missing' does not exist"):
        check_output(tmp_path / "missing" / "x.pt", overwrite=False)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(CheckpointError, match=r"'.*file' is not a directory"):
        check_output(a_file / "x.pt", overwrite=False)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    with pytest.raises(CheckpointError, match=r"directory '.*out' is not writable"):
        check_output(folder / "x.pt", overwrite=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="is not writable"):
            check_output(folder / "x.pt", overwrite=False)
    finally:
        folder.chmod(0o755)


# ---- case 13: one search per checkpoint -----------------------------------------------------------------------
def test_a_second_holder_of_the_checkpoint_lock_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "state.pt"
    with exclusive_lock(ckpt, "wait for it") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(CheckpointError, match=rf"state\.pt: in use by another process \(pid {os.getpid()}.*wait"):
            with exclusive_lock(ckpt, "wait for it"):
                pass
    assert not lock.exists()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C releases it too
        with exclusive_lock(ckpt, "wait for it"):
            raise KeyboardInterrupt
    with exclusive_lock(ckpt, "wait for it"):
        pass


def test_the_checkpoint_lock_holds_across_processes(tmp_path: Path) -> None:
    ckpt = tmp_path / "state.pt"
    holder = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from nasprune_cli.fileio import exclusive_lock
        with exclusive_lock(Path({str(ckpt)!r}), "hint"):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        with pytest.raises(CheckpointError, match=rf"in use by another process \(pid {proc.pid} "):
            with exclusive_lock(ckpt, "hint"):
                pass
    finally:
        proc.communicate(b"\n", timeout=60)
    with exclusive_lock(ckpt, "hint"):
        pass


# ---- case 16: files get the mode of a normal file ------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        saved = atomic_save({"v": 1}, tmp_path / "a.pt")
        written = atomic_write(tmp_path / "t.json", lambda f: f.write(b"{}"))
        pruned = real_pruned(tmp_path / "pruned.pt")
        deployable = tmp_path / "m.ts"
        model = nn.Sequential(nn.Linear(4, 2)).eval()
        write_deployable(model, deployable, "torchscript", torch.randn(1, 4))
    finally:
        os.umask(old)
    for path in (saved, written, pruned, deployable):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
