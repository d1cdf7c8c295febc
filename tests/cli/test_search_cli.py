"""`nasprune search` / `nasprune export`: the digits demo, interruption and resume, errors (exit 1, one line)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from tests.cli.checks import assert_one_error

ROOT = Path(__file__).resolve().parents[2]
DEMO_RECIPE = str(ROOT / "recipes" / "demo.yaml")
DEMO = ["search", "--model", "nasprune_cli.demo:build", "--recipe", DEMO_RECIPE]

HELPERS = """
import math

import torch

DRAWN = []  # batches drawn from data()
COLLECTED = []  # the index of the batch of every collect() call


def nan_score(model):
    return math.nan


def text_score(model):
    return "high"


def data():
    gen = torch.Generator().manual_seed(0)
    for i in range(100):
        DRAWN.append(i)
        yield {"image": torch.randn(16, 1, 8, 8, generator=gen), "label": torch.zeros(16, dtype=torch.long), "index": i}


def collect(batch):
    COLLECTED.append(batch["index"])
    return batch["image"]


def slow_score(model):  # the demo's score, slowed down: a test can interrupt the search in the middle
    import time

    from nasprune_cli.demo import score

    time.sleep(0.05)
    return score(model)


def random_init():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )
"""


@pytest.fixture(scope="module", autouse=True)
def trained_demo() -> Iterator[None]:
    """One torch thread (tiny convolutions: a second thread mostly waits, and on a busy two-core machine it makes
    them many times slower); train or load the cached demo model once, so subprocesses do not race to train it."""
    from nasprune_cli.demo import build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    build()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "np_search_helpers.py").write_text(textwrap.dedent(HELPERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run_json(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(app, [*DEMO, *args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


# ---- the demo ----------------------------------------------------------------------------------------------
def test_demo_search_table_output_and_export(runner: CliRunner, tmp_path: Path) -> None:
    pruned = tmp_path / "pruned.pt"
    result = runner.invoke(app, [*DEMO, "--flops", "50%", "--output", str(pruned)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert "Search result" in out and "FLOPs" in out and "params" in out and "score" in out
    assert "binary searcher" in out and "score evaluations" in out
    assert "Layers" in out and "layer2.conv1" in out
    assert "score: validation accuracy (held-out digits) " in out
    assert "%, higher is better (nasprune_cli.demo:score)" in out
    assert "weights refitted on the data:" in out and "mean output error" in out
    assert f"wrote {pruned}" in result.stderr
    assert pruned.is_file()

    again = runner.invoke(app, [*DEMO, "--flops", "50%", "--output", str(pruned)])
    assert_one_error(again, f"{pruned}: already exists (pass --overwrite to replace it)")

    onnx = tmp_path / "model.onnx"
    args = ["export", "--pruned", str(pruned), "--output", str(onnx), "--format", "onnx", "--trust-entry-point"]
    exported = runner.invoke(app, args)
    assert exported.exit_code == 0, (exported.stdout, exported.stderr)
    assert "max |difference| to torch" in exported.stdout and onnx.is_file()
    sd = tmp_path / "model.sd.pt"
    args = ["export", "--model", "nasprune_cli.demo:build", "--pruned", str(pruned), "--output", str(sd), "--json"]
    exported = runner.invoke(app, args)
    assert exported.exit_code == 0, exported.stderr
    assert json.loads(exported.stdout)["format"] == "state_dict"
    assert torch.load(sd, weights_only=True)["fc.weight"].shape[0] == 10


@pytest.mark.parametrize("flag", ["--flops", "--params"])
def test_demo_json_reports_before_and_after(runner: CliRunner, flag: str) -> None:
    data = run_json(runner, flag, "50%")
    metrics = data["metrics"]
    name = flag.lstrip("-")
    assert 0.45 <= metrics[f"{name}_ratio"] <= 0.50
    assert metrics["original"]["score"] > 0.9 and metrics["pruned"]["score"] > 0.9  # accuracy before / after
    assert "one per multiply-add" in metrics["flops_unit"]
    assert data["output"] is None
    assert data["config"] and data["layers"]


def test_reconstruct_flag_turns_the_refit_off_and_on(runner: CliRunner) -> None:
    on = run_json(runner, "--flops", "50%")["reconstruction"]
    off = run_json(runner, "--flops", "50%", "--no-reconstruct")
    assert on["applied"] and on["score_after"] >= on["score_before"] and on["layers"] > 0
    assert not off["reconstruction"]["applied"] and off["reconstruction"]["reason"].startswith("off")
    assert off["metrics"]["pruned"]["score"] == on["score_before"]  # the same subnet, its searched weights
    text = runner.invoke(app, [*DEMO, "--flops", "50%", "--no-reconstruct"])
    assert "weights not refitted: off (reconstruct: false)" in text.stdout


def test_evolve_searcher_flags(runner: CliRunner) -> None:
    data = run_json(runner, "--flops", "60%", "--searcher", "evolve", "--iterations", "4", "--population-size", "4")
    assert data["searcher"] == "evolve"
    assert data["metrics"]["flops_ratio"] <= 0.60
    assert data["metrics"]["evaluations"] <= 5


def test_data_collect_and_max_batches_flags_win_over_the_recipe(runner: CliRunner, helpers: Path) -> None:
    import np_search_helpers as h  # the module the CLI loads (same process)

    h.DRAWN.clear()
    h.COLLECTED.clear()
    extra = ["--data", "np_search_helpers:data", "--collect", "np_search_helpers:collect", "--max-batches", "2"]
    data = run_json(runner, "--flops", "50%", *extra)  # the recipe's data yields (image, label) tuples
    assert h.DRAWN == [0, 1]  # --max-batches: two batches are drawn once and reused
    assert set(h.COLLECTED) == {0, 1}  # both drawn dict batches reach the model, only through --collect
    assert 0.45 <= data["metrics"]["flops_ratio"] <= 0.50
    assert data["recipe"]["search"]["data"] == "np_search_helpers:data"


def test_without_data_random_inputs_and_the_default_score_with_a_warning(runner: CliRunner) -> None:
    args = ["search", "--model", "nasprune_cli.demo:build", "--input-shape", "1,1,8,8", "--flops", "90%", "--json"]
    result = runner.invoke(app, [*args, "--max-batches", "1"])  # no recipe: no --data, no --score
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "no --data given" in warnings[0] and "real inputs" in warnings[0]
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["score_name"].startswith("output agreement")
    assert metrics["original"]["score"] == 1.0 and metrics["pruned"]["score"] <= 1.0
    assert metrics["flops_ratio"] <= 0.90


def test_a_randomly_initialised_model_gives_the_same_result_every_run(runner: CliRunner, helpers: Path) -> None:
    """The builder runs after seeding with search.seed: the same command builds the same model (and can resume)."""
    args = ["search", "--model", "np_search_helpers:random_init", "--input-shape", "1,1,8,8", "--flops", "60%"]
    runs = []
    for _ in range(2):
        torch.randn(7)  # whatever the global RNG did before
        result = runner.invoke(app, [*args, "--max-batches", "1", "--json"])
        assert result.exit_code == 0, result.stderr
        runs.append(json.loads(result.stdout))
    assert runs[0]["config"] == runs[1]["config"] and runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["metrics"]["pruned"]["score"] < 1.0  # the default score saw a pruned model


def test_binary_searcher_flags(runner: CliRunner) -> None:
    new = run_json(runner, "--flops", "50%")
    first = run_json(runner, "--flops", "50%", "--importance", "magnitude", "--sensitivity", "full", "--no-descent")
    for data in (new, first):
        assert data["searcher"] == "binary"
        assert 0.45 <= data["metrics"]["flops_ratio"] <= 0.50
    assert new["metrics"]["evaluations"] < first["metrics"]["evaluations"]  # the budget map scores fewer choices
    # the flags reach the searcher as settings: the API with the same settings finds the same subnet, same way
    from nasprune_cli.demo import build
    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching import search

    config = {"recipe": load_recipe(DEMO_RECIPE), "sensitivity": "full", "descent": False}
    api = search(build(), {"flops": "50%"}, None, config).summary()
    assert api["config"] == first["config"] and api["metrics"] == first["metrics"]


@pytest.mark.parametrize(("flag", "value"), [("--importance", "l3"), ("--sensitivity", "lazy")])
def test_bad_binary_modes(runner: CliRunner, flag: str, value: str) -> None:
    result = runner.invoke(app, [*DEMO, "--flops", "50%", flag, value])
    assert_one_error(result, f"command line: search.{flag.lstrip('-')}: expected one of", f"(got {value!r})")


def _demo_recipe_with(tmp_path: Path, extra: str) -> str:
    """The demo recipe with lines added to its search section."""
    text = Path(DEMO_RECIPE).read_text().replace("  seed: 0\n", "  seed: 0\n" + extra, 1)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_binary_settings_from_the_recipe_match_the_flags_and_flags_win(runner: CliRunner, tmp_path: Path) -> None:
    first_version = _demo_recipe_with(tmp_path, "  sensitivity: full\n  descent: false\n")
    base = ["search", "--model", "nasprune_cli.demo:build", "--flops", "50%", "--json"]

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    by_recipe = run("--recipe", first_version)
    by_flags = run("--recipe", DEMO_RECIPE, "--sensitivity", "full", "--no-descent")
    assert by_recipe["config"] == by_flags["config"]
    assert by_recipe["metrics"]["evaluations"] == by_flags["metrics"]["evaluations"]
    flags_win = run("--recipe", first_version, "--sensitivity", "budget", "--descent")
    assert flags_win["config"] == run_json(runner, "--flops", "50%")["config"]
    assert flags_win["metrics"]["evaluations"] < by_recipe["metrics"]["evaluations"]


def test_bad_binary_setting_in_the_recipe(runner: CliRunner, tmp_path: Path) -> None:
    recipe = _demo_recipe_with(tmp_path, "  sensitivity: lazy\n")
    result = runner.invoke(app, ["search", "--model", "nasprune_cli.demo:build", "--recipe", recipe, "--flops", "50%"])
    assert_one_error(result, "recipe.yaml", "search.sensitivity", "'lazy'")


def test_width_floor_flag_and_recipe_field(runner: CliRunner, tmp_path: Path) -> None:
    off = run_json(runner, "--flops", "30%", "--width-floor", "0")
    full = run_json(runner, "--flops", "30%", "--width-floor", "1")
    for data in (off, full):
        assert 0.28 <= data["metrics"]["flops_ratio"] <= 0.30

    def narrowest(data: dict) -> float:
        return min(row["kept"] / row["original"] for row in data["layers"])

    assert narrowest(full) > narrowest(off)
    recipe = tmp_path / "floor.yaml"
    recipe.write_text(Path(DEMO_RECIPE).read_text().replace("  seed: 0\n", "  seed: 0\n  width_floor: 1.0\n"))
    args = ["search", "--model", "nasprune_cli.demo:build", "--recipe", str(recipe), "--flops", "30%", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["config"] == full["config"]


@pytest.mark.parametrize("value", ["1.5", "-0.5"])
def test_bad_width_floor(runner: CliRunner, value: str) -> None:
    result = runner.invoke(app, [*DEMO, "--flops", "50%", "--width-floor", value])
    bound = "<= 1.0" if float(value) > 1 else ">= 0.0"
    assert_one_error(result, f"command line: search.width_floor: must be {bound} (got {value})")


def test_rival_floor_flag_and_recipe_field(runner: CliRunner, tmp_path: Path) -> None:
    on = run_json(runner, "--flops", "50%", "--rival-floor", "1")
    off = run_json(runner, "--flops", "50%", "--rival-floor", "0")
    # the balanced rival is scored unless it is a subnet already scored (as on some trainings of the demo model);
    # the searcher's own tests (test_search_binary.py) pin down when it is built and kept
    assert on["metrics"]["evaluations"] in (off["metrics"]["evaluations"], off["metrics"]["evaluations"] + 1)
    assert on["metrics"]["pruned"]["score"] >= off["metrics"]["pruned"]["score"]  # and kept only when better
    for data in (on, off):
        assert 0.45 <= data["metrics"]["flops_ratio"] <= 0.50
    recipe = _demo_recipe_with(tmp_path, "  rival_floor: 0.0\n")
    args = ["search", "--model", "nasprune_cli.demo:build", "--recipe", recipe, "--flops", "50%", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    from_recipe = json.loads(result.stdout)
    assert (from_recipe["metrics"], from_recipe["config"]) == (off["metrics"], off["config"])  # the same as the flag
    bad = runner.invoke(app, [*DEMO, "--flops", "50%", "--rival-floor", "2"])
    assert_one_error(bad, "command line: search.rival_floor: must be <= 1.0 (got 2.0)")


# ---- interruption and resume -------------------------------------------------------------------------------
def _wait_for_write(path: Path, proc: subprocess.Popen, writes: int) -> None:
    """Wait until `path` has been (re)written `writes` times (os.replace gives each write a new inode)."""
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            st = os.stat(path)
            seen.add((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        if len(seen) >= writes:
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"search ended before it could be interrupted: {err[-2000:]}")
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the checkpoint was never written")


@pytest.mark.parametrize(("sig", "writes"), [(signal.SIGINT, 4), (signal.SIGKILL, 1)])
def test_interrupted_search_resumes_to_the_same_subnet(
    runner: CliRunner, tmp_path: Path, helpers: Path, sig: signal.Signals, writes: int
) -> None:
    args = ["--flops", "50%", "--seed", "3", "--score", "np_search_helpers:slow_score"]  # slow: a wide window
    reference = tmp_path / "reference.pt"
    uninterrupted = runner.invoke(app, [*DEMO, *args, "--output", str(reference), "--json"])
    assert uninterrupted.exit_code == 0, uninterrupted.stderr
    expected = json.loads(uninterrupted.stdout)

    ckpt = tmp_path / "search_state.pt"
    resumed_out = tmp_path / "resumed.pt"
    command = [*DEMO, *args, "--checkpoint", str(ckpt), "--output", str(resumed_out), "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nasprune_cli", *command],
        cwd=ROOT,
        # the same thread count as this process (the same numerics); the helpers module importable
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(helpers), str(ROOT)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (nohup make test &) ignores SIGINT, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_write(ckpt, proc, writes)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Error: interrupted" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not resumed_out.exists()
    state = torch.load(ckpt, weights_only=True)["state"]
    assert state["done"] is False  # really stopped in the middle

    resumed = runner.invoke(app, command)
    assert resumed.exit_code == 0, resumed.stderr
    assert not list(tmp_path.glob(".search_state.pt.*.tmp"))  # nothing a killed write left behind survives
    got = json.loads(resumed.stdout)
    assert got["config"] == expected["config"]
    assert got["metrics"] == expected["metrics"]
    a = torch.load(reference, weights_only=True)["state_dict"]
    b = torch.load(resumed_out, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- errors ------------------------------------------------------------------------------------------------
def test_unsatisfiable_budget(runner: CliRunner) -> None:
    result = runner.invoke(app, [*DEMO, "--flops", "1%"])
    assert_one_error(result, "constraints cannot be met: flops <= ", "smallest subnet has", "nasprune profile")


def test_no_budget(runner: CliRunner) -> None:
    assert_one_error(runner.invoke(app, DEMO), "no constraints: pass --flops, --params and/or --latency")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--model", "np_no_such_module:build"],
            "model 'np_no_such_module:build': module 'np_no_such_module' not found",
        ),
        (["--score", "nasprune_cli.demo:acc"], "score 'nasprune_cli.demo:acc': module 'nasprune_cli.demo' has no"),
        (["--data", "np_nope:data"], "data 'np_nope:data': module 'np_nope' not found"),
        (["--collect", "nasprune_cli.demo"], "collect 'nasprune_cli.demo': expected 'pkg.module:attr'"),
    ],
)
def test_bad_entry_points(runner: CliRunner, args: list[str], fragment: str) -> None:
    base = ["search", "--model", "nasprune_cli.demo:build", "--recipe", DEMO_RECIPE, "--flops", "50%"]
    if args[0] == "--model":
        base[2] = args[1]
        args = []
    assert_one_error(runner.invoke(app, [*base, *args]), fragment)


@pytest.mark.parametrize(
    ("fn", "fragment"),
    [
        ("nan_score", "score function 'np_search_helpers:nan_score' returned nan, expected a finite float"),
        ("text_score", "score function 'np_search_helpers:text_score' returned str 'high', expected a float"),
    ],
)
def test_bad_score_values(runner: CliRunner, helpers: Path, fn: str, fragment: str) -> None:
    result = runner.invoke(app, [*DEMO, "--flops", "50%", "--score", f"np_search_helpers:{fn}"])
    assert_one_error(result, fragment)


def test_foreign_checkpoint_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    ckpt = tmp_path / "search_state.pt"
    first = runner.invoke(app, [*DEMO, "--flops", "50%", "--checkpoint", str(ckpt)])
    assert first.exit_code == 0, first.stderr
    other = runner.invoke(app, [*DEMO, "--flops", "40%", "--checkpoint", str(ckpt)])
    assert_one_error(other, f"{ckpt}: this checkpoint belongs to a different search (constraints.flops ")
    seed = runner.invoke(app, [*DEMO, "--flops", "50%", "--seed", "7", "--checkpoint", str(ckpt)])
    assert_one_error(seed, "different search (settings.seed (0 in the checkpoint vs 7 now)")
    model = runner.invoke(app, [*DEMO, "--flops", "50%", "--model-kwargs", "width=16", "--checkpoint", str(ckpt)])
    assert_one_error(
        model,
        "different search (model.kwargs.width (absent in the checkpoint vs 16 now)",
        "delete it or pass another --checkpoint",
    )


@pytest.mark.parametrize("flag", ["--output", "--checkpoint"])
def test_missing_output_directory_fails_before_the_search(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    def no_search(*args: object, **kwargs: object) -> None:
        raise AssertionError("the search ran")

    monkeypatch.setattr("nasprune_cli.searching.search", no_search)
    path = tmp_path / "no_dir" / "file.pt"
    result = runner.invoke(app, [*DEMO, "--flops", "50%", flag, str(path)])
    assert_one_error(result, f"{path}: directory '{path.parent}' does not exist")


def test_export_errors(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["export", "--pruned", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "m")])
    assert_one_error(missing, "nope.pt: pruned-model file not found")
    other = tmp_path / "other.pt"
    torch.save({"kind": "something-else"}, other)
    wrong = runner.invoke(app, ["export", "--pruned", str(other), "--output", str(tmp_path / "m")])
    assert_one_error(wrong, "not a nasprune pruned-model file (kind 'something-else'")
    bad_format = runner.invoke(
        app, ["export", "--pruned", str(other), "--output", str(tmp_path / "m"), "--format", "tflite"]
    )
    assert_one_error(bad_format, "--format: unknown format 'tflite'")


def test_progress_bars_follow_the_sensitivity_map_and_the_search() -> None:
    from nasprune_cli.cli.search import _Progress

    with _Progress("off") as update:
        assert update is None  # --quiet: no bars, no lines, the library gets no callback
    progress = _Progress("bars")
    with progress as update:
        update("sensitivity", 0, 20)
        update("sensitivity", 20, 20)
        update("search", 3, 5)
    tasks = {t.description: (t.completed, t.total) for t in progress.bar.tasks}
    assert tasks == {"sensitivity map": (20, 20), "search": (3, 5)}


# ---- latency budget ----------------------------------------------------------------------------------------
def test_latency_budget_measures_a_table_next_to_the_output_and_reruns_read_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    pruned = tmp_path / "pruned.pt"
    table = tmp_path / "pruned.latency.json"
    first = runner.invoke(app, [*DEMO, "--latency", "100%", "--latency-batch", "4", "--output", str(pruned)])
    assert first.exit_code == 0, (first.stdout, first.stderr)
    assert "latency ms (predicted)" in first.stdout and "latency <= " in first.stdout
    assert f"measured a latency table (batch 4, 1 thread(s)) and wrote {table}" in first.stderr
    assert json.loads(table.read_text())["meta"]["batch"] == 4

    args = ["--latency", "90%", "--flops", "70%", "--latency-batch", "4", "-o", str(pruned), "--overwrite"]
    second = runner.invoke(app, [*DEMO, *args, "--json"])
    assert second.exit_code == 0, (second.stdout, second.stderr)
    summary = json.loads(second.stdout)
    assert summary["latency"] == {**summary["latency"], "table": str(table), "measured": False, "batch": 4}
    metrics = summary["metrics"]
    assert metrics["latency_ms"]["pruned"] <= summary["constraints"]["latency"]
    assert summary["constraints"]["latency"] == pytest.approx(0.9 * metrics["latency_ms"]["original"])

    wrong_batch = runner.invoke(app, [*DEMO, "--latency", "90%", "--latency-table", str(table)])
    assert_one_error(wrong_batch, str(table), "another batch (4 in the table vs 1 now)", "--latency-table")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("fast", "expected milliseconds ('25ms', 25) or a percentage"), ("1%", "constraints cannot be met: latency <=")],
)
def test_bad_latency_budgets(runner: CliRunner, tmp_path: Path, value: str, fragment: str) -> None:
    result = runner.invoke(app, [*DEMO, "--latency", value, "--latency-table", str(tmp_path / "t.json")])
    assert_one_error(result, fragment)
