"""timm models and a small GPT-2 (random weights, small inputs): each converts, its largest subnet is the original, a
random subnet exports to a plain model equal to the dynamic one with the FLOPs the cost model reports and to a
deployable file (ONNX; GPT-2: TorchScript), and the search to 60% of the FLOPs exports a model within the budget that
matches the dynamic subnet."""

from __future__ import annotations

import copy
import random
import warnings
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from nasprune_cli import convert, load_recipe, search
from nasprune_cli.checkpoint import write_deployable
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.metrics.flops import fvcore_flops

pytest.importorskip("timm")
pytest.importorskip("transformers")
from tools.timm_models import TIMM_ZOO  # noqa: E402
from tools.zoo_models import with_ratios  # noqa: E402

pytestmark = pytest.mark.zoo

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "fastnas.yaml"
MODEL_OUTPUT = "model output"
# what may stay frozen besides the output layer, and why (anything else frozen is a regression)
EXPECTED_FROZEN = {
    "efficientformer_l1": ("splits the channel dim",),  # attention heads (reshape of qkv)
    "levit_128s": ("splits the channel dim",),
    # the hidden size transformers attention reads and writes whole (its heads are pruned), residual stream + position
    # embedding, lm_head tied to the token embedding
    "gpt2-small-config": ("the hidden size whole", "pairs them with fixed positions", "shares its weight"),
}
# searched in docs/COVERAGE.md only (CI time; here they convert, export and reach 60% at their smallest subnet):
# efficientformer's attention needs the 224-pixel input, where the search takes minutes; resnet50d is plain torch
# layers (resnet50 is searched in test_zoo.py); regnety and mobilenetv3 are built of the same timm layers as
# efficientnet_b0 (BatchNormAct2d, squeeze-excite)
SEARCHED_IN_COVERAGE_ONLY = {"efficientformer_l1", "resnet50d", "regnety_002", "mobilenetv3_large_100"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(TIMM_ZOO))
def test_timm_model_converts_searches_and_exports(name: str, tmp_path: Path) -> None:
    entry = TIMM_ZOO[name]
    model, x = entry.build(entry.small), entry.input(entry.small)
    with torch.no_grad():  # levit caches attention biases in eval mode: no graph may hang on them
        original_out = copy.deepcopy(model)(x)
        space = convert(model, with_ratios(load_recipe(RECIPE), [0.25, 0.5, 0.75, 1.0]), x)
        assert_close(space.model(x), original_out, rtol=1e-5, atol=1e-5)
        allowed = (MODEL_OUTPUT, *EXPECTED_FROZEN.get(name, ()))
        for frozen in space.frozen:
            assert any(a in frozen.reason for a in allowed), (frozen.name, frozen.reason)
        config = space.sample(random.Random(0))
        exported = space.export().eval()
        assert not any(is_dynamic(m) for m in exported.modules())
        assert_close(exported(x), space.model(x), rtol=1e-4, atol=1e-4)
        assert fvcore_flops(exported, x) == pytest.approx(space.cost(config).flops, rel=1e-6)
    # a deployable file, run and compared with torch: ONNX (onnxruntime); GPT-2 without an attention mask needs
    # aten::diff, which ONNX lacks (README), so TorchScript
    fmt = "torchscript" if name == "gpt2-small-config" else "onnx"
    written = write_deployable(exported, tmp_path / f"{name}.{fmt}", fmt, x)
    assert written["max_abs_diff"] < 1e-4

    assert space.cost(space.min()).flops <= 0.6 * space.original_cost.flops
    if name in SEARCHED_IN_COVERAGE_ONLY:
        return
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the no --data warning
        # the threshold search alone (no fill / descent / refit): the checks are the same, in a third of the time
        light = {"max_batches": 1, "fill": False, "descent": False, "reconstruct": False}
        result = search(space, {"flops": "60%"}, x, light)
        pruned = result.model.eval()
        ratio = fvcore_flops(pruned, x) / space.original_cost.flops
        assert ratio <= 0.6 and result.summary()["metrics"]["flops_ratio"] == pytest.approx(ratio)
        assert_close(pruned(x), space.model(x), rtol=1e-4, atol=1e-4)
