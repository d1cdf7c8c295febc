"""The HTML report: the kept data, the page (self-contained, every plot, the headline numbers), missing matplotlib."""

from __future__ import annotations

import re
import sys

import pytest

from nasprune_cli.errors import NasPruneError
from nasprune_cli.report import (
    headline_rows,
    missing_parts,
    render_report,
    report_data,
    require_matplotlib,
    stage_widths,
)

LAYERS = [
    {"layer": "stem.conv", "hparam": "stem.conv.out", "kind": "width", "original": 32, "kept": 16},
    {"layer": "body.0.conv", "hparam": "body.0.conv.out", "kind": "width", "original": 64, "kept": 48},
    {"layer": "body.1.conv", "hparam": "body.1.conv.out", "kind": "width", "original": 64, "kept": 32},
]
SUMMARY = {
    "searcher": "binary",
    "metrics": {
        "original": {"flops": 1.5e6, "params": 20000.0, "score": 0.99},
        "pruned": {"flops": 7.4e5, "params": 9000.0, "score": 0.97},
        "evaluations": 17,
    },
    "layers": LAYERS,
}
STAGES = {
    "stem": {"flops": [5e5, 2.5e5], "params": [8000.0, 4000.0]},
    "body": {"flops": [1e6, 4.9e5], "params": [12000.0, 5000.0]},
}


def figures(page: str) -> list[str]:
    return re.findall(r"<figcaption>([^<]*)</figcaption>", page)


def test_binary_data_keeps_the_sensitivity_map_as_plain_values() -> None:
    state = {"sensitivity_map": {"stem.conv.out": {16: 0.9, 32: 0.99}}, "original_score": 0.99, "history": []}
    data = report_data(state, LAYERS, {"stem.conv.out": 16}, "binary", STAGES)
    assert data["stages"] == STAGES
    assert data["sensitivity"] == {"stem.conv.out": {"16": 0.9, "32": 0.99}}
    assert data["original_score"] == 0.99 and data["layers"] == LAYERS and "history" not in data
    assert missing_parts(data) == []


def test_evolve_data_marks_the_chosen_candidate() -> None:
    history = [
        {"config": {"a": 8}, "score": 0.5, "flops": 10.0, "params": 3.0},
        {"config": {"a": 16}, "score": 0.8, "flops": 20.0, "params": 6.0},
    ]
    data = report_data({"history": history}, LAYERS, {"a": 16}, "evolve")
    assert [h["chosen"] for h in data["history"]] == [False, True]
    assert "sensitivity" not in data


def test_page_is_self_contained_with_every_plot_and_the_headline_numbers() -> None:
    state = {"sensitivity_map": {"stem.conv.out": {8: 0.5, 16: 0.9, 32: 0.99}}, "original_score": 0.99}
    page = render_report(SUMMARY, report_data(state, LAYERS, {}, "binary", STAGES))
    assert '<meta name="viewport"' in page and "max-width:100%" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http" not in page
    assert len(figures(page)) == len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 4
    assert "FLOPs and params per stage, original vs pruned" in figures(page)
    assert any(c.startswith("Sensitivity") for c in figures(page))
    shown = dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', page))
    for _, key, value in headline_rows(SUMMARY):
        assert shown[key] == repr(value).replace("'", "&#x27;")
    assert "Not in this file" not in page


def test_evolve_page_has_the_candidates_plot() -> None:
    history = [{"config": {"a": 8}, "score": 0.5, "flops": 10.0, "params": 3.0}]
    page = render_report({**SUMMARY, "searcher": "evolve"}, report_data({"history": history}, LAYERS, {"a": 8}, "x"))
    assert any(c.startswith("Scored candidates") for c in figures(page)) and len(figures(page)) == 3


def test_page_shows_every_stage_figure_with_its_raw_value() -> None:
    page = render_report(SUMMARY, report_data({}, LAYERS, {}, "binary", STAGES))
    cells = re.findall(r'data-stage="(\w+)" data-key="(\w+)_(before|after)" data-value="([^"]*)"', page)
    assert len(cells) == 4 * len(STAGES)
    for stage, key, when, value in cells:
        assert float(value) == STAGES[stage][key][0 if when == "before" else 1]


def test_page_without_the_stored_data_says_what_is_missing() -> None:
    page = render_report({"searcher": None, "metrics": SUMMARY["metrics"]}, {})
    assert "Not in this file: the per-layer widths, the FLOPs and params per stage" in page
    assert len(figures(page)) == 1  # FLOPs and params, from the metrics


def test_stages_group_layers_by_their_first_name_component() -> None:
    assert stage_widths(LAYERS) == {"stem": (32, 16), "body": (128, 80)}


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(NasPruneError, match=r"pip install 'nasprune\[report\]'"):
        require_matplotlib()
