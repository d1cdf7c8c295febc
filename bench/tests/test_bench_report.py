"""bench/report.py renders BENCHMARKS.md from the bench JSON results (no peers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import load_results, main, paired_ci, render

MACHINE = {"cpu": "Test CPU", "cores": 2, "torch": "2.x", "torch_threads": 1, "load_avg_1m": 0.1}


def _quality() -> dict:
    def row(method: str, target: float, ratio: float, pruned: float, tuned: float) -> dict:
        return {
            "method": method,
            "target_pct": target,
            "flops_ratio": ratio,
            "test_acc_pruned": pruned,
            "test_acc_finetuned": tuned,
            "search_s": 1.5,
            "score_evaluations": 10,
            "narrowest_layer": "conv1 8/16",
        }

    return {
        "name": "quality",
        "command": "python bench/quality.py",
        "date": "2026-01-01 00:00 UTC",
        "machine": MACHINE,
        "settings": {
            "input": [1, 1, 8, 8],
            "epochs": 12,
            "divisor": 8,
            "score": "validation accuracy",
            "calib_batches": 8,
            "finetune_epochs": 2,
        },
        "baseline": {"flops": 2.5e6, "params": 272186, "val_acc": 0.98, "test_acc": 0.983, "train_s": 10.0},
        "rows": [
            row("nasprune", 50.0, 0.49, 0.95, 0.97),
            row("modelopt", 50.0, 0.48, 0.94, 0.96),
            row("torch-pruning", 50.0, 0.45, 0.90, 0.965),
        ],
    }


def _overhead() -> dict:
    def run(seconds: float, rss: float) -> dict:
        return {
            "search_s": seconds,
            "score_calls": 80,
            "score_forward_s": 1.0,
            "rss_before_mb": 500.0,
            "rss_peak_mb": rss,
            "flops_ratio": 0.6,
        }

    return {
        "name": "overhead",
        "command": "python bench/overhead.py",
        "date": "d",
        "machine": MACHINE,
        "settings": {"size": 224, "budget": "60%", "repeats": 1, "score": "-MSE", "calib_batches": 1},
        "rows": [{"model": "resnet18", "nasprune": run(4.0, 600.0), "modelopt": run(10.0, 700.0), "time_ratio": 0.4}],
        "profiles": {
            "nasprune": {
                "model": "resnet18",
                "total_s": 4.0,
                "by_self_time": [
                    {"function": "torch.conv2d", "calls": 3, "self_s": 2.0, "cum_s": 2.0},
                    {"function": "/home/x/wt/nasprune_cli/space.py:9(select)", "calls": 1, "self_s": 0.1, "cum_s": 0.1},
                ],
            }
        },
    }


def _latency() -> dict:
    return {
        "name": "latency",
        "command": "python bench/latency.py",
        "date": "d",
        "machine": MACHINE,
        "settings": {"flops": 60.0, "batches": [1], "threads": 1, "warmup": 2, "repeats": 20, "repeats_large": 3},
        "rows": [
            {
                "model": "resnet18",
                "input": 224,
                "gflops": 1.8,
                "flops_ratio": 0.6,
                "b1": {
                    "original_ms": 10.0,
                    "pruned_ms": 6.5,
                    "latency_ratio": 0.65,
                    "latency_over_flops": 1.08,
                    "aware": {
                        "flops_ratio": 0.6,
                        "predicted_ratio": 0.55,
                        "latency_ratio": 0.5,
                        "latency_over_flops": 0.5 / 0.6,
                        "table_s": 3.0,
                        "pruned_ms": 5.0,
                    },
                },
            },
            {
                "model": "swin_t",
                "input": 224,
                "transformer": True,
                "gflops": 4.5,
                "flops_ratio": 0.6,
                "b1": {"original_ms": 10.0, "pruned_ms": 9.0, "latency_ratio": 0.9, "latency_over_flops": 1.5},
            },
            {"model": "vit_b_16", "input": 224, "error": "TraceError: boom"},
        ],
    }


def test_render_has_every_table_and_goal_checks() -> None:
    text = render({"quality": _quality(), "overhead": _overhead(), "latency": _latency()}, notes="## Notes\nhello")
    assert "## 1. Quality at equal FLOPs" in text
    assert "**Target 50% FLOPs**" in text
    assert "Goal check (met)" in text  # 0.49 is within 95-100% of 50% and nasprune beats both peers
    assert "| modelopt fastnas | 0.480 | 94.0% | 96.0% |" in text
    assert "**0.40x**" in text
    assert "`torch.conv2d`" in text
    assert "`nasprune_cli/space.py:9(select)`" in text  # no machine-specific path
    assert "| resnet18 | 224 | 1.80 | 0.600 | 10.0 -> 6.5 | 0.650 | 1.08 |" in text
    assert "| swin_t * | 224 | 4.50 | 0.600 | 10.0 -> 9.0 | 0.900 | 1.50 (over) |" in text
    assert "Goal met (every batch size) for 1 of 1 CNNs." in text  # the transformer is measured, not counted
    assert "- vit_b_16: TraceError: boom" in text
    assert "| resnet18 | 0.600 | 0.550 / 0.500 | 0.83 | 3 |" in text  # the latency-aware prune
    assert "off by 10.0% (median), 10.0% at most" in text
    assert "| resnet18 | - | 600 / 700 | 100 / 200 | yes |" in text
    assert "Test CPU, 2 cores" in text
    assert text.rstrip().endswith("hello")


def test_quality_goal_not_met_when_a_peer_is_better_after_fine_tune() -> None:
    data = _quality()
    data["rows"][2]["test_acc_finetuned"] = 0.99
    text = render({"quality": data})
    assert "Goal check (NOT met)" in text
    assert "after fine-tune -2.0 pts" in text


def test_robust_table_summarises_every_baseline() -> None:
    data = _quality()
    data["settings"]["seed"] = 0

    def row(seed: int, method: str, pruned: float, tuned: float) -> dict:
        return {
            "method": method,
            "target_pct": 50.0,
            "train_seed": seed,
            "flops_ratio": 0.5,
            "test_acc_pruned": pruned,
            "test_acc_finetuned": tuned,
        }

    data["robust"] = [row(1, "nasprune", 0.90, 0.95), row(1, "modelopt", 0.92, 0.94)]
    text = render({"quality": data})
    assert "**Across 2 baselines** (train seeds 0, 1;" in text
    assert "| 50% | nasprune fastnas * | 0.495 | 92.5% (90.0%-95.0%) | 96.0% (95.0%-97.0%) |" in text
    assert "| 50% | modelopt fastnas | 0.490 | 93.0% (92.0%-94.0%) | 95.0% (94.0%-96.0%) |" in text
    # baseline 0: +1 / +1 pts, baseline 1: -2 / +1 pts
    assert (
        "- 50%: nasprune fastnas after pruning vs the better peer on average (modelopt fastnas): -0.5 pts "
        "(95% CI -19.6 to +18.6, 1 of 2 baselines at least as good): **behind, but within noise**; after fine-tune "
        "vs the better peer on average (modelopt fastnas): +1.0 pts (95% CI +1.0 to +1.0, 2 of 2 baselines at least "
        "as good): **at least as good**." in text
    )


def test_paired_ci_is_the_student_t_interval() -> None:
    mean, half = paired_ci([0.01, 0.02, 0.03])
    assert mean == pytest.approx(0.02)
    assert half == pytest.approx(4.30 * 0.01 / 3**0.5)
    assert paired_ci([0.01])[1] == float("inf")


def test_main_writes_markdown_from_a_results_dir(tmp_path: Path) -> None:
    (tmp_path / "quality_quick.json").write_text(json.dumps(_quality()))
    out = tmp_path / "B.md"
    assert main(["--results", str(tmp_path), "--suffix", "_quick", "--output", str(out), "--notes", "none"]) == 0
    text = out.read_text()
    assert "## 1. Quality at equal FLOPs" in text
    assert "## 2. Search overhead\n\nNot run." in text
    assert set(load_results(tmp_path, "_quick")) == {"quality"}


def test_depth_table_counts_its_own_prunes_and_the_width_only_one_of_cnns_without_blocks() -> None:
    from bench.report import render_latency_aware

    data = _latency()
    mobile = json.loads(json.dumps(data["rows"][0]))
    mobile["model"] = "mobilenet"
    deep = {**mobile["b1"]["aware"], "latency_ratio": 0.72, "latency_over_flops": 1.2, "skipped_blocks": 4}
    mobile["b1"]["deep"] = deep
    data["rows"].append(mobile)
    text = render_latency_aware(data, [1], "deep")
    assert "| resnet18 † | 0.600 | 0.550 / 0.500 | 0.83 | - |" in text  # no skippable block: the width-only prune
    assert "| mobilenet | 0.600 | 0.550 / 0.720 | 1.20 (over) | 4 |" in text  # its own, even when worse
    assert "Goal met (every batch size) for 1 of 2 CNNs." in text


def test_lr_sweep_table_compares_nasprune_with_the_better_peer_at_each_rate() -> None:
    data = _quality()
    data["settings"].update({"seed": 0, "finetune_lr": 0.02, "finetune_seeds": 5})
    data["rows"][0]["finetuned_by_lr"] = {"0.02": 0.97, "0.005": 0.95}
    data["rows"][1]["finetuned_by_lr"] = {"0.02": 0.96, "0.005": 0.96}
    data["rows"][2]["finetuned_by_lr"] = {"0.02": 0.965, "0.005": 0.90}

    def robust(method: str, by_lr: dict) -> dict:
        return {
            "method": method,
            "target_pct": 50.0,
            "train_seed": 1,
            "flops_ratio": 0.5,
            "test_acc_pruned": 0.9,
            "test_acc_finetuned": by_lr["0.02"],
            "finetuned_by_lr": by_lr,
        }

    data["robust"] = [
        robust("nasprune", {"0.02": 0.95, "0.005": 0.94}),
        robust("modelopt", {"0.02": 0.96, "0.005": 0.92}),
        robust("torch-pruning", {"0.02": 0.90, "0.005": 0.91}),
    ]
    data["unpruned"] = [
        {"train_seed": 0, "test_acc": 0.98, "finetuned_by_lr": {"0.02": 0.975, "0.005": 0.98}},
        {"train_seed": 1, "test_acc": 0.97, "finetuned_by_lr": {"0.02": 0.965, "0.005": 0.97}},
    ]
    text = render({"quality": data})
    assert "| target | method | lr 0.005 | lr 0.02 (above) |" in text  # rates sorted as numbers
    assert "| - | unpruned baseline | 97.50% | 97.00% |" in text
    assert "| 50% | nasprune fastnas * | 94.50% | 96.00% |" in text
    assert "| 50% | modelopt fastnas | 94.00% | 96.00% |" in text
    # lr 0.005: modelopt is the better peer (94.0 vs 90.5), deltas -1 / +2 pts; lr 0.02: modelopt (96.0 vs 93.25),
    # deltas +1 / -1 pts (a mean of 0, a standard error of 1 pt)
    assert "lr 0.005: +0.50 pts vs modelopt fastnas (95% CI -18.56 to +19.56, 1 of 2)" in text
    assert "lr 0.02: +0.00 pts vs modelopt fastnas (95% CI -12.71 to +12.71, 1 of 2)" in text


def test_latency_aware_tables_name_the_divisor_of_their_space() -> None:
    data = _latency()
    assert "Channel divisor" not in render({"latency": data})  # results from before the option: no claim
    data["settings"]["aware_divisor"] = 8
    text = render({"latency": data})
    assert text.count("Channel divisor 8 in this space (the main table: the default rules' 32).") == 2  # 3b and 3c


def test_latency_table_says_which_allocator_it_was_timed_with() -> None:
    data = _latency()
    assert "allocator" not in render({"latency": data})  # results from before the setting: no claim
    data["machine"] = {**MACHINE, "malloc": "caching"}
    assert "MALLOC_MMAP_MAX_=0" in render({"latency": data})
    data["machine"] = {**MACHINE, "malloc": "system"}
    assert "default allocator (`--system-malloc`)" in render({"latency": data})
