"""The detection / segmentation section of docs/COVERAGE.md: convert, search (60% FLOPs) and export every model of
tools/zoo_dense.py at its coverage input size; used by tools/coverage.py (`--dense`)."""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune_cli import convert, load_recipe, search
from nasprune_cli.inputs import call_model, tensors_in
from nasprune_cli.metrics.flops import fvcore_flops
from nasprune_cli.searching.result import SearchResult
from nasprune_cli.space import SearchSpace
from tools.zoo_dense import DENSE, DenseModel
from tools.zoo_models import with_ratios

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fastnas.yaml"
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
# the share of conv / linear parameters in prunable groups before channel segments, roi_align and the zeros-fill rule
# (nasprune at commit 7068457, the same recipe and inputs; measured once with tools/coverage.py --dense on that commit)
BEFORE: dict[str, float] = {
    "lraspp_mobilenet_v3_large": 0.966,
    "deeplabv3_mobilenet_v3_large": 0.99,
    "fcn_resnet50": 0.9997,
    "fasterrcnn_mobilenet_v3_large_fpn": 0.9087,
    "fasterrcnn_resnet50_fpn": 0.9322,
    "maskrcnn_resnet50_fpn": 0.9357,
    "keypointrcnn_resnet50_fpn": 0.9575,
    "retinanet_resnet50_fpn": 0.9421,
    "fcos_resnet50_fpn": 0.9931,
    "ssdlite320_mobilenet_v3_large": 0.5761,
}


def prunable_share(space: SearchSpace) -> float:
    """The share of conv / linear parameters in layers whose output channels some width hparam prunes."""
    layers = {src for g in space.grouping.groups if g.name in space.hparams for src in g.sources}
    total = prunable = 0
    for name, module in space.model.named_modules():
        if isinstance(module, _WEIGHTED):
            count = sum(p.numel() for p in module.parameters(recurse=False))
            total += count
            prunable += count if name in layers else 0
    return prunable / max(total, 1)


def run_dense(entry: DenseModel, flops: str, ratios: list[float] | None) -> dict[str, Any]:
    """Convert, search and export one model; every figure of its table row."""
    torch.manual_seed(0)
    model, x = entry.build(), entry.dummy_input()
    recipe = load_recipe(RECIPE)
    full_space = convert(copy.deepcopy(model), recipe, x)
    min_ratio = full_space.cost(full_space.min()).flops / full_space.original_cost.flops
    share = prunable_share(full_space)
    start = time.perf_counter()
    search_recipe = with_ratios(recipe, ratios) if ratios else recipe
    space = convert(model, search_recipe, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {"recipe": search_recipe, "max_batches": 1, "data": entry.search_data()}
        result = search(space, {"flops": flops}, x, {k: v for k, v in options.items() if v is not None})
    seconds = time.perf_counter() - start
    pruned = result.model.eval()
    check_search_result(space, result, x)
    reasons: dict[str, list[str]] = {}
    for frozen in space.frozen:
        reasons.setdefault(frozen.reason, []).append(frozen.name)
    return {
        "gflops": space.original_cost.flops / 1e9,
        "groups": sum(1 for hp in full_space.hparams.values() if hp.kind == "width"),
        "share": share,
        "min_ratio": min_ratio,
        "ratio": fvcore_flops(pruned, x) / space.original_cost.flops,
        "seconds": seconds,
        "evaluations": result.evaluations,
        "size": entry.full,
        "exports": _exports(pruned, x),
        "refit": result.reconstruction.applied,
        "frozen": reasons,
    }


def check_search_result(space: SearchSpace, result: SearchResult, x: Any) -> None:
    """The plain export of the searched subnet equals the dynamic model (the tracer's contract), and the result has its
    outputs' shapes and dtypes; an AssertionError otherwise.

    The result itself is not compared with the dynamic model's values: with data batches the search refits the kept
    weights (reconstruct) and exports the refitted ones, while the space keeps the searched weights.
    """
    with torch.no_grad():
        dynamic = tensors_in(call_model(space.model, x), True)
        exported = tensors_in(call_model(space.export().eval(), x), True)
        got = tensors_in(call_model(result.model.eval(), x), True)
    assert dynamic and len(exported) == len(got) == len(dynamic), "the export returns other outputs"
    for a, b, c in zip(exported, got, dynamic, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
        assert b.shape == c.shape and b.dtype == c.dtype, f"result output {tuple(b.shape)} != {tuple(c.shape)}"
    if not result.reconstruction.applied:
        for b, c in zip(got, dynamic, strict=True):
            torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-4)


def _exports(model: nn.Module, x: Any) -> str:
    """Which deployable forms the pruned model writes: state_dict always; TorchScript and ONNX when they work."""
    forms = ["state_dict"]
    try:
        torch.jit.script(model)
        forms.append("TorchScript")
    except Exception:  # noqa: BLE001 - a form that fails is left out of the list
        pass
    try:
        import io

        import onnx  # noqa: F401

        torch.onnx.export(model, x, io.BytesIO(), opset_version=17, dynamo=False)
        forms.append("ONNX")
    except Exception:  # noqa: BLE001
        pass
    return ", ".join(forms)


def render_dense(rows: dict[str, dict[str, Any]], frozen_cell: Any) -> list[str]:
    """The Markdown lines of the detection / segmentation section."""
    lines = [
        "## Detection and segmentation",
        "",
        " ".join(
            [
                "torchvision's detection and segmentation models (`tools/zoo_dense.py`,",
                "`weights=None, weights_backbone=None`), converted with `recipes/fastnas.yaml` and searched like the",
                "table above. Segmentation models take a tensor and return a dict; detectors run in eval mode on a",
                "list of one image and return a list of dicts. FLOPs are fvcore's count (one per multiply-add) of the",
                "whole forward, transform and post-processing included; a detector's box / mask / keypoint head runs",
                "once per proposal or detection, so the detectors are built with their score thresholds at 0 and",
                "their NMS IoU thresholds at 1.0: the counts are then the fixed caps (`rpn_post_nms_top_n_test`,",
                "`box_detections_per_img`, `detections_per_img`), the same for the original, every subnet and the",
                "export. The default score compares every floating-point output (boxes, scores, masks, keypoints;",
                "the integer labels are left out). *prunable*: share of the conv / linear parameters in layers whose",
                "output channels a width hparam prunes, before channel segments (and the roi_align / zeros-fill",
                "rules) -> now;",
                "*exports*: the deployable forms the pruned model writes. The detectors are searched on one batch of",
                "two random images (the segmentation models on nasprune's random batches); with that data the search",
                "refits the kept weights (reconstruct) where that raises the score, so the check is: the plain export",
                "of the searched subnet equals the dynamic model on every output, and the result has the same output",
                "shapes (`check_search_result`). Built for pretrained backbone weights, torchvision's detectors use",
                "`FrozenBatchNorm2d`: it is sliced like BatchNorm (`tests/zoo/test_zoo_detection.py` converts such a",
                "fasterrcnn_resnet50_fpn). *time s*: convert + search on one torch thread; the rows were run at",
                "different times, with the other core busy or not (each row's date is in docs/COVERAGE_DENSE.json),",
                "so the times compare only roughly.",
            ]
        ),
        "",
        "| model | input | GFLOPs | groups | prunable | min | result | evals | time s | exports "
        "| frozen layers and why |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        size = row.get("size", DENSE[name].full)
        if size != DENSE[name].full:
            size = f"{size} (not {DENSE[name].full})"
        if "error" in row:
            lines.append(f"| {name} | {size} | | | | | **FAILED** | | | | {row['error']} |")
            continue
        before = f"{BEFORE[name]:.2f} -> " if name in BEFORE else ""
        lines.append(
            f"| {name} | {size} | {row['gflops']:.2f} | {row['groups']} | {before}{row['share']:.2f} | "
            f"{row['min_ratio']:.3f} | {row['ratio']:.3f} | {row['evaluations']} | {row['seconds']:.0f} | "
            f"{row['exports']} | {frozen_cell(row['frozen'])} |"
        )
    passed = sum(1 for r in rows.values() if "error" not in r and r["ratio"] <= 0.6)
    lines += ["", f"{passed} of {len(rows)} models prune to <= 60% of their FLOPs and export."]
    smaller = [f"{n} ({r['size']} px)" for n, r in rows.items() if r.get("size", DENSE[n].full) < DENSE[n].full]
    if smaller:
        lines.append(
            f"Run below their coverage size (two shared CPU cores): {', '.join(smaller)}; `python tools/coverage.py "
            "--dense NAME` runs one at its full size."
        )
    missing = [n for n in DENSE if n not in rows]
    if missing:
        lines.append(
            f"Not run at this size yet: {', '.join(missing)} (the `zoo` tests convert and export them on small inputs)."
        )
    lines.append("")
    return lines
