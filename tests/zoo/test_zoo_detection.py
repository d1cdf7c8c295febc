"""The torchvision detection and segmentation models (random init, small inputs, tools/zoo_dense.py): list-of-images
inputs and dict / list-of-dict outputs. Every model converts with prunable groups in its backbone and its FPN /
decoder, keeps only its heads' output convs frozen, and exports a plain model equal to the dynamic subnet on every
output, with fvcore's FLOPs equal to the reported cost; the lighter ones are also searched to 60% of their FLOPs
(the others' searches are `slow`)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from nasprune_cli import convert, load_recipe, search
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.inputs import call_model, tensors_in
from nasprune_cli.metrics.flops import count_params, fvcore_flops
from tools.coverage_dense import check_search_result
from tools.zoo_dense import DENSE
from tools.zoo_models import stage_counts, with_ratios

pytestmark = pytest.mark.zoo

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "fastnas.yaml"
MODEL_OUTPUT = "model output"
EXPECTED_FROZEN: dict[str, tuple[str, ...]] = {}  # frozen besides the heads' output convs, and why
SEARCHED = ("lraspp_mobilenet_v3_large",)  # the other searches take 45 s to 8 min each on two cores: `slow`


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_same_outputs(got: Any, want: Any) -> None:
    got_t, want_t = tensors_in(got, sort_keys=True), tensors_in(want, sort_keys=True)
    assert len(got_t) == len(want_t) and got_t
    for a, b in zip(got_t, want_t, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _converted(name: str) -> tuple[Any, Any, Any]:
    entry = DENSE[name]
    torch.manual_seed(0)
    model, x = entry.build(small=True), entry.dummy_input(small=True)
    recipe = with_ratios(load_recipe(RECIPE), [0.25, 0.5, 0.75, 1.0])
    return convert(model, recipe, x), x, recipe


@pytest.mark.parametrize("name", list(DENSE))
def test_dense_model_prunes_backbone_and_neck_and_exports(name: str) -> None:
    space, x, _ = _converted(name)
    _assert_prunes_and_exports(name, space, x)


def test_a_detector_with_a_frozen_batch_norm_backbone_prunes_it() -> None:
    """fasterrcnn_resnet50_fpn as torchvision builds it for pretrained backbone weights: FrozenBatchNorm2d."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    entry = DENSE["fasterrcnn_resnet50_fpn"]
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
    for layer in backbone.modules():
        if isinstance(layer, FrozenBatchNorm2d):  # not ones and zeros: every channel differs
            layer.weight.uniform_(0.5, 1.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.bias.normal_(0, 0.1)
            layer.running_mean.normal_(0, 0.1)
    size = {"min_size": entry.small, "max_size": entry.small}
    model = FasterRCNN(backbone, 91, **size, **entry.kwargs, **entry.small_kwargs).eval()
    x = entry.dummy_input(small=True)
    space = convert(model, with_ratios(load_recipe(RECIPE), [0.25, 0.5, 0.75, 1.0]), x)
    assert all(is_dynamic(m) for m in space.model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d))
    _assert_prunes_and_exports(entry.name, space, x)


def _assert_prunes_and_exports(name: str, space: Any, x: Any) -> None:
    """Prunable groups in the backbone and the neck, only the heads' output convs frozen, export == dynamic at a
    random subnet, FLOPs and params == fvcore / count_params, the smallest subnet at most 60% of the FLOPs."""
    entry = DENSE[name]
    counts = stage_counts(entry, {n: hp.members for n, hp in space.hparams.items() if hp.kind == "width"})
    assert all(c > 0 for c in counts), f"backbone / neck without a prunable group: {counts}"
    allowed = EXPECTED_FROZEN.get(name, ())
    for frozen in space.frozen:
        in_head = any(frozen.name == h or frozen.name.startswith(f"{h}.") for h in entry.heads)
        assert in_head or any(a in frozen.reason for a in allowed), (frozen.name, frozen.reason)
    config = space.sample(random.Random(0))
    with torch.no_grad():
        dynamic_out = call_model(space.model, x)
        exported = space.export().eval()
        exported_out = call_model(exported, x)
    assert not any(is_dynamic(m) for m in exported.modules())
    _assert_same_outputs(exported_out, dynamic_out)
    assert space.cost(config).flops == pytest.approx(fvcore_flops(exported, x), abs=0.5)
    assert space.cost(config).params == count_params(exported)
    assert space.cost(space.min()).flops <= 0.6 * space.original_cost.flops


@pytest.mark.parametrize("name", [n if n in SEARCHED else pytest.param(n, marks=pytest.mark.slow) for n in DENSE])
def test_dense_model_searches_to_60_percent(name: str) -> None:
    space, x, recipe = _converted(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no --data warning
        options = {"recipe": recipe, "max_batches": 1, "data": DENSE[name].search_data(small=True)}
        result = search(space, {"flops": "60%"}, x, {k: v for k, v in options.items() if v is not None})
    pruned = result.model
    ratio = fvcore_flops(pruned, x) / space.original_cost.flops
    assert 0.4 <= ratio <= 0.6
    check_search_result(space, result, x)  # the searched export == dynamic; the result may be refitted on the data
