"""FLOPs and params per stage: the stages of a model, their costs adding up to fvcore's and count_params' totals."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from nasprune_cli.metrics.flops import count_params, fvcore_flops
from nasprune_cli.metrics.stages import OTHER, before_after, stage_costs, stage_names
from tests.toys import Chain


def test_stages_are_the_top_level_children_that_hold_parameters() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    assert stage_names(model) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_a_model_of_few_children_is_split_one_level_deeper() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10)
    names = stage_names(model)
    assert (
        names[:2] == ["features.0", "features.1"] and names[-1] == "classifier"
    )  # one child with parameters: kept whole
    assert len(names) == len(model.features) + 1


def _costs(model: nn.Module, shape: tuple[int, ...]) -> tuple[dict, float, float]:
    dummy = torch.randn(*shape)
    by_module = fvcore_flops(model, dummy, by_module=True)
    return stage_costs(model, by_module, stage_names(model)), by_module[""], float(count_params(model))


def test_stage_costs_add_up_to_the_totals() -> None:
    for model, shape in ((torchvision.models.resnet18(num_classes=10), (1, 3, 32, 32)), (Chain(), (1, 3, 8, 8))):
        costs, flops, params = _costs(model.eval(), shape)
        assert sum(c["flops"] for c in costs.values()) == flops
        assert sum(c["params"] for c in costs.values()) == params
        assert all(c["flops"] >= 0 and c["params"] >= 0 for c in costs.values())


def test_functional_ops_of_the_root_forward_are_the_other_stage() -> None:
    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Linear(4, 4) for _ in range(4))
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.d(self.c(self.b(self.a(x)))) @ self.w

    costs, flops, params = _costs(Root(), (2, 4))
    assert list(costs) == ["a", "b", "c", "d", OTHER]
    assert costs[OTHER] == {"flops": 32.0, "params": 16.0}


def test_before_after_counts_a_dropped_stage_as_zero() -> None:
    original = {"a": {"flops": 10.0, "params": 2.0}, "b": {"flops": 4.0, "params": 1.0}}
    pruned = {"a": {"flops": 5.0, "params": 1.0}}
    assert before_after(original, pruned) == {
        "a": {"flops": [10.0, 5.0], "params": [2.0, 1.0]},
        "b": {"flops": [4.0, 0.0], "params": [1.0, 0.0]},
    }
