"""Channel importance: "consumer" (input columns of the layers that read a group) vs "magnitude" (every side)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasprune_cli.conversion import convert
from nasprune_cli.errors import NasPruneError
from nasprune_cli.recipe.load import recipe_from_dict

RECIPE = recipe_from_dict(
    {
        "mode": "fastnas",
        "rules": {
            "nn.Conv2d": {"channel_divisor": 4},
            "nn.BatchNorm2d": {"feature_divisor": 4},
        },
    }
)


def chain() -> nn.Sequential:
    """conv -> bn -> relu -> head conv; producer row 0 is huge but the head barely reads channel 0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1, bias=False)
    )
    with torch.no_grad():
        model[0].weight.abs_().add_(0.1)
        model[0].weight[0] *= 100.0  # producer row 0: by far the largest
        model[3].weight.abs_().add_(0.1)
        model[3].weight[:, 0] *= 0.01  # consumer column 0: by far the smallest
        model[3].weight[:, 5] *= 10.0  # consumer column 5: by far the largest
    return model.eval()


def kept_rows(method: str) -> list[int]:
    """Which of the producer's 16 channels the narrowest subnet keeps, under one importance method."""
    model = chain()
    original = model[0].weight.detach().clone()
    space = convert(model, RECIPE, torch.zeros(1, 3, 8, 8))
    (name,) = [n for n, hp in space.hparams.items() if hp.kind == "width"]
    space.sort_parameters(method)
    space.select({name: space.hparams[name].choices[0]})
    weight = space.export()[0].weight.detach()
    return [i for i in range(16) if any(torch.equal(weight[j], original[i]) for j in range(weight.shape[0]))]


def test_consumer_and_magnitude_keep_different_channels() -> None:
    consumer, magnitude = kept_rows("consumer"), kept_rows("magnitude")
    assert len(consumer) == len(magnitude) == 4
    assert 0 not in consumer and 5 in consumer  # what the head reads most, not what the producer writes largest
    assert 0 in magnitude


def test_the_default_order_is_magnitude() -> None:
    model = chain()
    space = convert(model, RECIPE, torch.zeros(1, 3, 8, 8))
    space.sort_parameters()
    default = {g: o.clone() for g, o in space._orders.items()}
    space.sort_parameters("magnitude")
    assert all(torch.equal(default[g], o) for g, o in space._orders.items())
    space.sort_parameters("consumer")
    assert any(not torch.equal(default[g], o) for g, o in space._orders.items())


def test_unknown_method_is_refused() -> None:
    space = convert(chain(), RECIPE, torch.zeros(1, 3, 8, 8))
    with pytest.raises(NasPruneError, match="importance: unknown method 'l3'"):
        space.sort_parameters("l3")


# ---- activation (Minitron-style) ----------------------------------------------------------------------------
MLP_RECIPE = recipe_from_dict({"mode": "fastnas", "rules": {"nn.Linear": {"feature_divisor": 1}}})


def dead_neuron_mlp() -> nn.Sequential:
    """linear -> relu -> linear; hidden neuron 3 has the largest weights on both sides but is never active."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.abs_()  # every other neuron is active on the inputs (>= 0)
        model[0].bias.fill_(0.1)
        model[0].weight[3] = 5.0  # inputs are >= 0 (below), so 5 * sum(x) - 1e3 < 0: relu gives 0 always
        model[0].bias[3] = -1e3
        model[2].weight[:, 3] = 5.0
    return model.eval()


def mlp_inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(4, 6, generator=gen) for _ in range(3)]


def hidden_order(method: str, model: nn.Module | None = None) -> list[int]:
    """The hidden layer's channel order (most important first) under one importance method."""
    space = convert(model or dead_neuron_mlp(), MLP_RECIPE, torch.zeros(1, 6))
    (name,) = [n for n, hp in space.hparams.items() if hp.kind == "width"]
    space.sort_parameters(method, mlp_inputs())
    return space.channel_orders()[name]


def test_activation_ranks_a_dead_neuron_last_magnitude_does_not() -> None:
    assert hidden_order("activation")[-1] == 3
    assert hidden_order("magnitude")[0] == 3  # the largest weights: kept first
    assert hidden_order("magnitude")[-1] != 3


def test_activation_is_deterministic_and_keeps_the_active_subnet() -> None:
    assert hidden_order("activation") == hidden_order("activation")
    space = convert(dead_neuron_mlp(), MLP_RECIPE, torch.zeros(1, 6))
    (name,) = [n for n, hp in space.hparams.items() if hp.kind == "width"]
    space.select({name: 4})
    space.sort_parameters("activation", mlp_inputs())
    assert space.config() == {name: 4}
    assert 3 not in space.channel_orders()[name][:4]


def test_activation_orders_by_mean_absolute_input() -> None:
    model = dead_neuron_mlp()
    with torch.no_grad():
        hidden = [model[1](model[0](x)).abs().mean(0) for x in mlp_inputs()]
    expected = torch.sort(-torch.stack(hidden).mean(0).double(), stable=True).indices.tolist()
    assert hidden_order("activation", model) == expected


def test_activation_needs_inputs() -> None:
    space = convert(dead_neuron_mlp(), MLP_RECIPE, torch.zeros(1, 6))
    with pytest.raises(NasPruneError, match="importance 'activation': sort_parameters needs input batches"):
        space.sort_parameters("activation")
    with pytest.raises(NasPruneError, match="no input batches"):
        space.sort_parameters("activation", [])
