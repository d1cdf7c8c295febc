"""The CLI and hostile, damaged or clashing files: refused up front with one `Error:` line (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from nasprune_cli.fileio import exclusive_lock
from tests.cli.checks import assert_one_error
from tests.unit.test_hostile_files import exploit, flip_weight_bytes, real_pruned, write_raw

NO_MODEL = ["--model", "no_such_module_here:build"]  # loading it would fail: an error about a file comes first


# ---- case 1 ----------------------------------------------------------------------------------------------------
def test_export_does_not_run_the_entry_point_a_file_names(runner: CliRunner, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = write_raw(tmp_path / "evil.pt", exploit("nasprune-pruned", marker))
    result = runner.invoke(app, ["export", "--pruned", str(evil), "--output", str(tmp_path / "m.pt")])
    assert_one_error(
        result,
        "evil.pt: no --model given",
        "pass --model subprocess:run after checking it is the model you expect, or --trust-entry-point",
    )
    assert not marker.exists() and not (tmp_path / "m.pt").exists()


def test_export_with_model_or_trust_entry_point(runner: CliRunner, tmp_path: Path) -> None:
    pruned = real_pruned(tmp_path / "pruned.pt")
    for i, extra in enumerate((["--model", "tests.toys:Residual"], ["--trust-entry-point"])):
        out = tmp_path / f"m{i}.pt"
        result = runner.invoke(app, ["export", "--pruned", str(pruned), "--output", str(out), *extra])
        assert result.exit_code == 0, result.stderr
        assert torch.equal(
            torch.load(out, weights_only=True)["fc.weight"], torch.load(pruned)["state_dict"]["fc.weight"]
        )


# ---- case 5 / 15 -----------------------------------------------------------------------------------------------
def test_export_refuses_a_damaged_or_truncated_pruned_file(runner: CliRunner, tmp_path: Path) -> None:
    pruned = real_pruned(tmp_path / "pruned.pt")
    flip_weight_bytes(pruned, torch.load(pruned, weights_only=True)["state_dict"]["fc.weight"])
    args = ["export", "--pruned", str(pruned), "--output", str(tmp_path / "m.pt"), "--model", "tests.toys:Residual"]
    assert_one_error(runner.invoke(app, args), "pruned.pt: damaged pruned-model file", "sha256")
    pruned.write_bytes(pruned.read_bytes()[:1000])
    assert_one_error(runner.invoke(app, args), "pruned.pt: damaged pruned-model file", "truncated or corrupted")


# ---- case 11: an output that is an input ------------------------------------------------------------------------
def test_export_refuses_to_replace_its_own_input(runner: CliRunner, tmp_path: Path) -> None:
    pruned = real_pruned(tmp_path / "pruned.pt")
    before = pruned.read_bytes()
    args = ["export", "--pruned", str(pruned), "--output", str(pruned), "--overwrite", "--trust-entry-point"]
    assert_one_error(runner.invoke(app, args), "is also the --pruned file this command reads")
    assert pruned.read_bytes() == before


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        (["--output", "{d}/x.pt", "--checkpoint", "{d}/x.pt"], "x.pt: is also the --checkpoint file"),
        (["--output", "{d}/x.pt", "--latency", "50%", "--latency-table", "{d}/x.pt"], "also the --latency-table"),
        (["--checkpoint", "{d}/t.json", "--latency", "50%", "--latency-table", "{d}/t.json"], "also the --latency"),
        (["--output", "{d}/r.yaml", "--recipe", "{d}/r.yaml"], "r.yaml: is also the --recipe file"),
    ],
)
def test_search_refuses_an_output_that_is_an_input(
    runner: CliRunner, tmp_path: Path, files: list[str], fragment: str
) -> None:
    (tmp_path / "r.yaml").write_text("version: 1\n")
    args = ["search", *NO_MODEL, "--flops", "50%", "--overwrite", *(a.format(d=tmp_path) for a in files)]
    assert_one_error(runner.invoke(app, args), fragment)
    assert (tmp_path / "r.yaml").read_text() == "version: 1\n"


def test_convert_refuses_to_replace_its_recipe(runner: CliRunner, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\n")
    args = ["convert", *NO_MODEL, "--recipe", str(recipe), "--output", str(recipe), "--overwrite"]
    assert_one_error(runner.invoke(app, args), "r.yaml: is also the --recipe file")


# ---- case 12: unwritable outputs, before the work ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        (["--output", "{d}"], "is a directory, expected a file path"),
        (["--checkpoint", "{d}"], "is a directory, expected a file path"),
        (["--checkpoint", "{d}/missing/s.pt"], "missing' does not exist"),
        (["--latency", "50%", "--latency-table", "{d}/missing/t.json"], "missing' does not exist"),
        (["--latency", "50%", "--latency-table", "{d}"], "is a directory, expected the latency table"),
        (["--output", "{d}/f/x.pt"], "f' is not a directory"),
    ],
)
def test_search_checks_every_output_before_the_work(
    runner: CliRunner, tmp_path: Path, files: list[str], fragment: str
) -> None:
    (tmp_path / "f").write_text("")
    args = ["search", *NO_MODEL, "--flops", "50%", *(a.format(d=tmp_path) for a in files)]
    assert_one_error(runner.invoke(app, args), fragment)


def test_export_refuses_a_directory_as_output(runner: CliRunner, tmp_path: Path) -> None:
    pruned = real_pruned(tmp_path / "pruned.pt")
    args = ["export", "--pruned", str(pruned), "--output", str(tmp_path), "--overwrite", "--trust-entry-point"]
    assert_one_error(runner.invoke(app, args), "is a directory, expected a file path")


# ---- case 13: one search per checkpoint -----------------------------------------------------------------------
def test_a_second_search_on_a_checkpoint_in_use_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    ckpt = tmp_path / "state.pt"
    args = ["search", "--model", "tests.toys:Chain", "--input-shape", "1,3,8,8", "--flops", "60%"]
    args += ["--max-batches", "1", "--checkpoint", str(ckpt)]
    with exclusive_lock(ckpt, "held by this test"):
        result = runner.invoke(app, args)
    assert_one_error(result, "state.pt: in use by another process", "another search is running on this checkpoint")
    assert not ckpt.exists()
    result = runner.invoke(app, args)  # the lock is gone: the search runs, and leaves no lock file behind
    assert result.exit_code == 0, result.stderr
    assert ckpt.is_file() and not (tmp_path / "state.pt.lock").exists()
