"""bench/text.py: the synthetic task's labels and the BENCHMARKS.md section it renders (through bench/report.py)."""

from __future__ import annotations

import pytest
import torch

from bench import text_task as task
from bench.report import render

pytest.importorskip("transformers")


def _data() -> dict:
    def row(seed: int, method: str, target: float, pruned: float, tuned: float) -> dict:
        widths = {"heads": [2, 2, 1, 1], "mlp": [128, 96, 64, 32]}
        return {
            "seed": seed,
            "method": method,
            "target": target,
            "params_ratio": 0.49,
            "test_pruned": pruned,
            "test_tuned": tuned,
            "search_s": 3.0,
            "widths": widths,
        }

    rows = []
    for seed in (0, 1):
        rows.append({"seed": seed, "method": "baseline", "test_pruned": 1.0})
        rows.append(row(seed, "nasprune-magnitude", 0.5, 0.8, 0.9))
        rows.append(row(seed, "nasprune-activation", 0.5, 0.85, 0.9))
        rows.append(row(seed, "torch-pruning", 0.5, 0.3, 0.7))
    return {
        "command": "python bench/text.py --quick",
        "date": "2026-12-03 21:00 UTC",
        "args": {
            "targets": [0.5],
            "methods": ["nasprune-magnitude", "nasprune-activation", "torch-pruning"],
            "train_steps": 150,
            "ft_steps": 20,
            "ft_lr": 5e-4,
        },
        "task": {"classes": 8, "seq_len": 16, "own": 3, "noise": 2, "model": task.CONFIG},
        "rows": rows,
    }


def test_the_text_section_is_in_the_report() -> None:
    text = render({"text": _data()})
    assert "## 6. Text: a small BERT pruned by params" in text
    assert "| 50% | nasprune-activation | 0.490 | 85.0% | 90.0% | 3.0 | 2/2/1/1 | 128/96/64/32 |" in text
    assert "- 50%: +5.0 / +0.0, +5.0 / +0.0" in text
    assert "## 6." not in render({})


def test_the_label_is_the_class_with_the_most_key_tokens() -> None:
    split = task.make_split(64, 0)
    keys = split.ids[(split.ids >= 2) & (split.ids < task.FIRST_FILLER)].view(64, -1)
    assert keys.shape[1] == task.OWN + task.NOISE
    votes = torch.nn.functional.one_hot((keys - 2) // task.KEYS_PER_CLASS, task.CLASSES).sum(1)
    assert torch.equal(votes.argmax(1), split.labels)
    assert torch.equal(task.make_split(64, 0).ids, split.ids)
