"""`nasprune search --report` and `nasprune report`: the page, its numbers, old files, missing matplotlib."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasprune_cli.cli.app import app
from nasprune_cli.fileio import add_checksum
from tests.cli.checks import assert_one_error, warning_lines

ROOT = Path(__file__).resolve().parents[2]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DEMO = ["search", "--model", "nasprune_cli.demo:build", "--recipe", str(ROOT / "recipes" / "demo.yaml")]
TOY = ["search", "--model", "tests.toys:Chain", "--input-shape", "1,3,8,8", "--flops", "60%"]


def captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>([^<]*)</figcaption>", page)


def shown(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', page))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One binary search of the demo with --report and --output (the slow part, shared by the tests)."""
    tmp = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    args = [*DEMO, "--flops", "50%", "--output", str(tmp / "pruned.pt"), "--report", str(tmp / "report.html")]
    result = CliRunner().invoke(app, [*args, "--json", "-q"])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert f"wrote {tmp / 'report.html'}" in result.stderr
    return tmp, json.loads(result.stdout)


def test_search_report_is_one_self_contained_page_with_the_json_numbers(demo_run: tuple[Path, dict]) -> None:
    tmp, summary = demo_run
    page = (tmp / "report.html").read_text()
    assert "http" not in page and not re.search(r"(src|href)=\"(?!data:)", page)
    assert '<meta name="viewport"' in page
    assert len(captions(page)) == len(re.findall(r'src="data:image/png;base64,', page)) == 4
    assert captions(page)[0].startswith("Sensitivity")
    assert "FLOPs and params per stage, original vs pruned" in captions(page)
    metrics, numbers = summary["metrics"], shown(page)
    assert float(numbers["original_flops"]) == metrics["original"]["flops"]
    assert float(numbers["pruned_flops"]) == metrics["pruned"]["flops"]
    assert float(numbers["pruned_params"]) == metrics["pruned"]["params"]
    assert float(numbers["pruned_score"]) == metrics["pruned"]["score"]
    assert int(numbers["evaluations"]) == metrics["evaluations"]
    assert numbers["searcher"] == "&#x27;binary&#x27;"
    cells = re.findall(r'data-stage="([^"]+)" data-key="(\w+)_(before|after)" data-value="([^"]*)"', page)
    stages = summary["stages"]
    assert {stage for stage, *_ in cells} == set(stages) and len(cells) == 4 * len(stages)
    for stage, key, when, value in cells:
        assert float(value) == stages[stage][key][0 if when == "before" else 1]
    for key in ("flops", "params"):  # the stages add up to the totals fvcore and count_params gave
        assert sum(s[key][0] for s in stages.values()) == metrics["original"][key]
        assert sum(s[key][1] for s in stages.values()) == metrics["pruned"][key]
    # the demo's named score: what it measures, as a percent
    pruned_row = f"<th>pruned {metrics['score_measures']}</th>"
    assert pruned_row in page and f">{metrics['pruned']['score']:.2%}</td>" in page


def test_report_command_redraws_the_page_from_the_pruned_file(runner: CliRunner, demo_run: tuple[Path, dict]) -> None:
    tmp, _ = demo_run
    again = tmp / "again.html"
    result = runner.invoke(app, ["report", str(tmp / "pruned.pt"), "--output", str(again)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert again.read_text() == (tmp / "report.html").read_text()
    assert not warning_lines(result.stderr)


def test_report_command_on_an_older_file_notes_what_is_missing(runner: CliRunner, demo_run: tuple[Path, dict]) -> None:
    tmp, summary = demo_run
    data = torch.load(tmp / "pruned.pt", weights_only=True)
    data.pop("report")
    data.pop("sha256")
    torch.save(add_checksum(data), tmp / "old.pt")
    result = runner.invoke(app, ["report", str(tmp / "old.pt"), "--output", str(tmp / "old.html")])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "the per-layer widths" in warning_lines(result.stderr)[0]
    page = (tmp / "old.html").read_text()
    assert "Not in this file" in page and len(captions(page)) == 1
    assert float(shown(page)["pruned_flops"]) == summary["metrics"]["pruned"]["flops"]


def test_evolve_report_plots_the_candidates(runner: CliRunner, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    args = [*TOY, "--searcher", "evolve", "--iterations", "6", "--population-size", "3", "--report", str(report)]
    result = runner.invoke(app, [*args, "--json", "-q"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    page = report.read_text()
    assert "Scored candidates against their FLOPs (chosen one marked)" in captions(page)
    assert len(captions(page)) == 4
    assert float(shown(page)["pruned_flops"]) == json.loads(result.stdout)["metrics"]["pruned"]["flops"]


def test_missing_matplotlib_fails_up_front(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, [*TOY, "--report", str(tmp_path / "r.html")])
    assert_one_error(result, "matplotlib", "pip install 'nasprune[report]'")
    result = runner.invoke(app, ["report", str(tmp_path / "p.pt"), "--output", str(tmp_path / "r.html")])
    assert_one_error(result, "pip install 'nasprune[report]'")
    assert not (tmp_path / "r.html").exists()


def test_existing_report_is_refused_before_the_search(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "r.html").write_text("x")
    result = runner.invoke(app, [*TOY, "--report", str(tmp_path / "r.html")])
    assert_one_error(result, "already exists", "--overwrite")


@pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_page_renders_in_a_headless_browser_at_phone_width(demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    tmp, summary = demo_run
    uri = (tmp / "report.html").resolve().as_uri()
    browser = [str(BROWSER), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "phone.png"
    subprocess.run([*browser, "--window-size=412,2400", f"--screenshot={shot}", uri], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 412 and (pixels < 200).mean() > 0.02  # phone width, not blank
    dom = subprocess.run([*browser, "--dump-dom", uri], capture_output=True, text=True, timeout=120).stdout
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == 4  # the browser parsed every plot
    assert float(shown(dom)["pruned_flops"]) == summary["metrics"]["pruned"]["flops"]
