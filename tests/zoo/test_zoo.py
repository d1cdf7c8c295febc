"""The torchvision classification zoo (random init, small inputs): every model converts with prunable groups in
every stage, lists each frozen layer with its reason, searches to 50-60% of its FLOPs with the default
label-free score, and exports a plain model that matches the dynamic subnet."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from nasprune_cli import convert, load_recipe, profile, search
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.metrics.flops import fvcore_flops
from tools.zoo_models import ZOO, stage_counts, with_ratios

pytestmark = pytest.mark.zoo

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "fastnas.yaml"
MODEL_OUTPUT = "model output"
# what may stay frozen besides the classifier, and why (anything else frozen is a regression)
EXPECTED_FROZEN = {
    "shufflenet_v2_x1_0": ("computes with its channel count",),  # channel_shuffle: view(b, groups, c // groups, ...)
    "vit_b_16": ("gives the channel dim a fixed size", "pairs them with fixed positions"),  # hidden_dim, pos_embedding
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_converts_searches_and_exports(name: str) -> None:
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.build(small=True).eval()
    original = copy.deepcopy(model)
    x = torch.randn(1, 3, entry.small, entry.small, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        original_out = original(x)
    recipe = load_recipe(RECIPE)
    full_space = convert(copy.deepcopy(model), recipe, x)
    counts = stage_counts(entry, {n: hp.members for n, hp in full_space.hparams.items() if hp.kind == "width"})
    assert all(c > 0 for c in counts), f"stages without a prunable group: {counts}"

    recipe = with_ratios(recipe, [0.25, 0.5, 0.75, 1.0])  # the same groups, fewer width choices: CI time
    space = convert(model, recipe, x)
    assert set(space.hparams) <= set(full_space.hparams)
    assert space.frozen == full_space.frozen

    report = profile(space, None, x, {"flops": "60%"})
    assert report.frozen == space.frozen and report.constraints[0].satisfiable
    allowed = (MODEL_OUTPUT, *EXPECTED_FROZEN.get(name, ()))
    for frozen in report.frozen:
        assert frozen.reason and any(a in frozen.reason for a in allowed), (frozen.name, frozen.reason)
    assert any(MODEL_OUTPUT in f.reason for f in report.frozen)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no --data warning
        result = search(space, {"flops": "60%"}, x, {"recipe": recipe, "max_batches": 1})
        pruned = result.model
    ratio = fvcore_flops(pruned, x) / space.original_cost.flops
    assert 0.5 <= ratio <= 0.6
    assert result.summary()["metrics"]["flops_ratio"] == pytest.approx(ratio)
    assert not any(is_dynamic(m) for m in pruned.modules())
    with torch.no_grad():
        dynamic_out = space.model(x)
        pruned_out = pruned.eval()(x)
    assert pruned_out.shape == original_out.shape
    torch.testing.assert_close(pruned_out, dynamic_out, rtol=1e-4, atol=1e-5)
