"""The visual report of a search: one self-contained HTML page (plots as embedded base64 PNG, no external files).

`report_data(state, layers, config, searcher, stages)` keeps what the page needs as plain values (stored in the
pruned file under `report`); `render_report(summary, data)` draws the plots with matplotlib (imported lazily, Agg
backend) and assembles the page; `write_report` writes it atomically.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasprune_cli.errors import NasPruneError
from nasprune_cli.fileio import atomic_write
from nasprune_cli.metrics.score import format_score

INSTALL_HINT = "pip install 'nasprune[report]'"


# ---- the data ----------------------------------------------------------------------------------------------
def report_data(
    state: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]],
    config: Mapping[str, int],
    searcher: str,
    stages: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """What the page needs of a search, as plain JSON-able values: layers, FLOPs and params per stage before and
    after, sensitivity map, scored candidates."""
    data: dict[str, Any] = {"searcher": searcher, "layers": [dict(row) for row in layers]}
    if stages:
        data["stages"] = {
            str(name): {key: [float(v) for v in costs[key]] for key in ("flops", "params")}
            for name, costs in stages.items()
        }
    sensitivity = state.get("sensitivity_map") or {}
    if sensitivity:
        data["sensitivity"] = {
            str(name): {str(int(choice)): float(score) for choice, score in scores.items()}
            for name, scores in sensitivity.items()
        }
        data["original_score"] = _number(state.get("original_score"))
    history = state.get("history") or []
    if history and not sensitivity:
        data["history"] = [
            {
                "score": _number(entry.get("score")),
                "flops": _number(entry.get("flops")),
                "params": _number(entry.get("params")),
                "chosen": dict(entry.get("config") or {}) == dict(config),
            }
            for entry in history
        ]
    return data


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def missing_parts(data: Mapping[str, Any]) -> list[str]:
    """What a report built from `data` cannot show (e.g. a pruned file written before reports were stored)."""
    missing = []
    if not data.get("layers"):
        missing.append("the per-layer widths")
    if not data.get("stages"):
        missing.append("the FLOPs and params per stage")
    if not data.get("sensitivity") and not data.get("history"):
        missing.append("the sensitivity curves / scored candidates")
    if not data.get("searcher"):
        missing.append("the searcher's name")
    return missing


# ---- matplotlib --------------------------------------------------------------------------------------------
def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend; a NasPruneError naming the extra to install when it is missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise NasPruneError(f"--report needs matplotlib, which is not installed; run: {INSTALL_HINT}") from None


def _png(fig: Any) -> str:
    """The figure as a base64 PNG (closed afterwards)."""
    plt = require_matplotlib()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(caption: str, png: str) -> str:
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


# ---- the plots ---------------------------------------------------------------------------------------------
def plot_sensitivity(sensitivity: Mapping[str, Mapping[str, float]], original_score: float | None) -> str:
    """Score drop against kept width, one curve per width hparam (binary searcher)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, scores in sensitivity.items():
        widths = sorted(int(choice) for choice in scores)
        base = original_score if original_score is not None else max(scores.values())
        ax.plot(widths, [base - scores[str(w)] for w in widths], marker="o", markersize=3, label=name)
    ax.set_xlabel("kept width (channels)")
    ax.set_ylabel("score drop")
    ax.grid(alpha=0.3)
    if len(sensitivity) <= 12:
        ax.legend(fontsize=7)
    return _figure("Sensitivity: score drop against kept width, per width hparam", _png(fig))


def plot_layers(layers: Sequence[Mapping[str, Any]]) -> str:
    """Original vs kept width of every layer (bar chart)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(layers) + 1)))
    names = [row["layer"] for row in layers]
    ys = range(len(layers))
    ax.barh(ys, [row["original"] for row in layers], color="#cccccc", label="original")
    ax.barh(ys, [row["kept"] for row in layers], color="#1f77b4", label="kept")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("width (channels; depth / kernel size for those hparams)")
    ax.legend(fontsize=7)
    return _figure("Kept width of every layer (original vs kept)", _png(fig))


def plot_costs(metrics: Mapping[str, Any], layers: Sequence[Mapping[str, Any]], per_stage: bool = False) -> str:
    """FLOPs and params before and after, and (unless the per-stage costs have their own plot) the kept share of
    widths per stage (first name component)."""
    plt = require_matplotlib()
    stages = {} if per_stage else stage_widths(layers)
    fig, axes = plt.subplots(1, 3 if stages else 2, figsize=(9 if stages else 6, 3.5))
    for ax, key in zip(axes[:2], ("flops", "params"), strict=True):
        before, after = metrics["original"][key], metrics["pruned"][key]
        ax.bar(["original", "pruned"], [before, after], color=["#cccccc", "#1f77b4"])
        ax.set_title(f"{'FLOPs' if key == 'flops' else 'params'}: {after / max(before, 1.0):.1%} kept", fontsize=9)
    if stages:
        ax = axes[2]
        ax.bar(list(stages), [kept / max(orig, 1) for orig, kept in stages.values()], color="#1f77b4")
        ax.set_ylim(0, 1.05)
        ax.set_title("kept width per stage", fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    caption = "FLOPs and params before and after" + ("" if per_stage else " (and kept width per stage)")
    return _figure(caption, _png(fig))


def plot_stages(stages: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
    """FLOPs and params of every stage before and after (grouped horizontal bars, one panel each)."""
    plt = require_matplotlib()
    names = list(stages)
    fig, axes = plt.subplots(1, 2, figsize=(9, max(2.5, 0.3 * len(names) + 1.2)), sharey=True)
    ys = list(range(len(names)))
    for ax, key in zip(axes, ("flops", "params"), strict=True):
        before = [stages[n][key][0] for n in names]
        after = [stages[n][key][1] for n in names]
        ax.barh([y - 0.2 for y in ys], before, height=0.4, color="#cccccc", label="original")
        ax.barh([y + 0.2 for y in ys], after, height=0.4, color="#1f77b4", label="pruned")
        ax.set_title("FLOPs" if key == "flops" else "params", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(ys, names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7)
    return _figure("FLOPs and params per stage, original vs pruned", _png(fig))


def stage_table(stages: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
    """The per-stage figures as a table (raw values in data-value attributes, equal to the JSON's `stages`)."""
    head = "<tr><th>stage</th><th>FLOPs before</th><th>FLOPs after</th><th>params before</th><th>params after</th></tr>"
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(
            f'<td data-stage="{html.escape(name)}" data-key="{key}_{when}" data-value="{html.escape(repr(value))}">'
            f"{html.escape(_show(float(value)))}</td>"
            for key in ("flops", "params")
            for when, value in zip(("before", "after"), costs[key], strict=True)
        )
        + "</tr>"
        for name, costs in stages.items()
    )
    return f'<table class="stages">{head}{rows}</table>'


def stage_widths(layers: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Stage (a layer's first name component) -> (original, kept) total width of its width layers."""
    stages: dict[str, tuple[int, int]] = {}
    for row in layers:
        if row.get("kind", "width") != "width":
            continue
        stage = str(row["layer"]).split(".", 1)[0]
        orig, kept = stages.get(stage, (0, 0))
        stages[stage] = (orig + int(row["original"]), kept + int(row["kept"]))
    return stages


def plot_candidates(history: Sequence[Mapping[str, Any]]) -> str:
    """The scored candidates against their FLOPs, the chosen one marked (evolve / random)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [h for h in history if h.get("score") is not None and h.get("flops") is not None]
    ax.scatter([h["flops"] for h in points], [h["score"] for h in points], s=18, alpha=0.6, label="candidates")
    chosen = [h for h in points if h.get("chosen")]
    if chosen:
        xs, ys = [h["flops"] for h in chosen], [h["score"] for h in chosen]
        ax.scatter(xs, ys, s=120, marker="*", c="red", label="chosen")
    ax.set_xlabel("FLOPs")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _figure("Scored candidates against their FLOPs (chosen one marked)", _png(fig))


# ---- the page ----------------------------------------------------------------------------------------------
def headline_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(name, key, value) of the headline numbers, taken from the summary `--json` prints."""
    metrics = summary.get("metrics") or {}
    orig, pruned = metrics.get("original") or {}, metrics.get("pruned") or {}
    measures = metrics.get("score_measures") or "score"  # a named score says what it measures
    return [
        ("original FLOPs", "original_flops", orig.get("flops")),
        ("pruned FLOPs", "pruned_flops", pruned.get("flops")),
        ("original params", "original_params", orig.get("params")),
        ("pruned params", "pruned_params", pruned.get("params")),
        (f"original {measures}", "original_score", orig.get("score")),
        (f"pruned {measures}", "pruned_score", pruned.get("score")),
        ("searcher", "searcher", summary.get("searcher")),
        ("evaluations", "evaluations", metrics.get("evaluations")),
    ]


def _show(value: Any, percent: bool = False) -> str:
    if isinstance(value, float) and percent:
        return format_score(value, percent=True)
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "missing" if value is None else str(value)


def _table(summary: Mapping[str, Any]) -> str:
    percent = bool((summary.get("metrics") or {}).get("score_percent"))
    rows = "".join(
        f'<tr><th>{html.escape(name)}</th><td data-key="{key}" data-value="{html.escape(repr(value))}">'
        f"{html.escape(_show(value, percent and key.endswith('_score')))}</td></tr>"
        for name, key, value in headline_rows(summary)
    )
    return f"<table>{rows}</table>"


def plots(summary: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Every plot the data allows, as <figure> elements."""
    figures = []
    if data.get("sensitivity"):
        figures.append(plot_sensitivity(data["sensitivity"], data.get("original_score")))
    if data.get("history"):
        figures.append(plot_candidates(data["history"]))
    if data.get("layers"):
        figures.append(plot_layers(data["layers"]))
    if summary.get("metrics"):
        figures.append(plot_costs(summary["metrics"], data.get("layers") or [], per_stage=bool(data.get("stages"))))
    if data.get("stages"):
        figures.append(plot_stages(data["stages"]) + stage_table(data["stages"]))
    return figures


_STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:60em}img{max-width:100%;height:auto}"
    "figure{margin:1em 0}figcaption{font-size:.9em;color:#555}table{border-collapse:collapse}"
    "th,td{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}.note{color:#a40}"
)


def render_report(summary: Mapping[str, Any], data: Mapping[str, Any], title: str = "nasprune search report") -> str:
    """The self-contained HTML page: headline table, notes on what is missing, every plot."""
    missing = missing_parts(data)
    note = f'<p class="note">Not in this file: {", ".join(missing)}.</p>' if missing else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_table(summary)}{note}{''.join(plots(summary, data))}</body></html>\n"
    )


def write_report(path: str | Path, summary: Mapping[str, Any], data: Mapping[str, Any]) -> Path:
    """Render the page and write it atomically to `path`."""
    page = render_report(summary, data).encode("utf-8")
    return atomic_write(path, lambda f: f.write(page))
