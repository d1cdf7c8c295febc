"""bench/training.py: the 95% interval and the BENCHMARKS.md section it renders (through bench/report.py)."""

from __future__ import annotations

import pytest

from bench.report import render
from bench.training import AUTONAS, LOSSES, interval


def _data(accuracies: list[float]) -> dict:
    def row(seed: int, acc: float) -> dict:
        out = {"seed": seed, "baseline": acc, "fastnas 6 epochs ce+kd": acc}
        out.update({f"ft {t:g}% {loss}": acc for t in (50.0, 30.0) for loss in LOSSES})
        for sampling in AUTONAS:
            out.update({f"autonas {sampling} searched": acc, f"autonas {sampling} tuned": acc})
            out[f"autonas {sampling} train s"] = 2.0
        return out

    return {
        "command": "python bench/training.py --seeds 2",
        "date": "2026-12-03 17:00 UTC",
        "args": {"epochs": 12, "lr": 0.02, "epochs_ft": 2, "targets": [50.0, 30.0], "space_epochs": 4, "iterations": 9},
        "rows": [row(i, a) for i, a in enumerate(accuracies)],
        "step_ms": {"plain model": 10.0, "space, sandwich (4 subnets)": 45.0},
    }


def test_interval_is_the_t_interval_of_the_mean() -> None:
    mean, half = interval([1.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(12.706)  # t(1 dof) * stdev sqrt(2) / sqrt(2)
    assert interval([5.0]) == (5.0, 0.0)


def test_the_training_section_is_in_the_report() -> None:
    text = render({"training": _data([0.9, 0.92])})
    assert "## 4. Training: fine-tuning losses and AutoNAS" in text
    assert "| 50% (nasprune fastnas) | 91.0% ± 12.7 |" in text
    assert "| AutoNAS, sandwich | 91.0% ± 12.7 | 91.0% ± 12.7 | 2.0 |" in text
    assert "| space, sandwich (4 subnets) | 45.0 | 4.50x |" in text
    assert "## 4." not in render({})
