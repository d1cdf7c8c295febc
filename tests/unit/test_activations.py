"""The "activation" importance's measurements: which layer sides are read, on which inputs, and the search path."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nasprune_cli import convert, load_recipe, search
from nasprune_cli.activations import activation_scores
from nasprune_cli.inputs import dummy_input_for
from nasprune_cli.recipe.load import recipe_from_dict

MLP_RECIPE = recipe_from_dict({"mode": "fastnas", "rules": {"nn.Linear": {"feature_divisor": 1}}})


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


def test_scores_are_the_mean_absolute_input_of_each_reading_layer() -> None:
    model = mlp()
    space = convert(model, MLP_RECIPE, torch.zeros(1, 6))
    inputs = [torch.randn(4, 6), torch.randn(4, 6)]
    scores = activation_scores(space.model, dict(space.model.named_modules()), space._sides, inputs)
    with torch.no_grad():
        want = torch.stack([model[1](model[0](x)).abs().mean(0) for x in inputs]).mean(0).double()
    torch.testing.assert_close(scores[("2", "in")], want)
    assert ("0", "out") not in scores  # only the sides that read a group
    assert not model[2]._forward_hooks  # hooks removed


@pytest.mark.parametrize(("importance", "keeps_dead"), [("activation", False), ("magnitude", True)])
def test_a_search_orders_by_activations_on_the_data_batches(importance: str, keeps_dead: bool) -> None:
    model = mlp()
    with torch.no_grad():  # hidden neuron 3: the largest weights, never active on inputs >= 0
        model[0].weight[3] = 5.0
        model[0].bias[3] = -1e3
        model[2].weight[:, 3] = 5.0
    data = [(torch.rand(8, 6), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    config = {"recipe": MLP_RECIPE, "data": data, "importance": importance, "reconstruct": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(model, {"params": "60%"}, torch.zeros(1, 6), config=config)
    assert result.model[0].out_features < 8
    assert bool((result.model[0].bias == -1e3).any()) == keeps_dead


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_heads_and_mlp_neurons_of_transformers_models_are_measured(name: str) -> None:
    pytest.importorskip("transformers")
    from tools import hf_models

    model = getattr(hf_models, name)()
    tokens = {"input": {"shape": [1, 8], "dtype": "int64"}}
    recipe = load_recipe("fastnas", tokens, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = convert(model, recipe, x)
    scores = activation_scores(space.model, dict(space.model.named_modules()), space._sides, [x])
    measured = {module.rsplit(".", 1)[-1] for module, _ in scores}
    # BERT: the heads through attention.output.dense, the MLP through output.dense; Llama: self_attn (its o_proj
    # inside reads the heads) and mlp.down_proj
    assert measured >= ({"dense"} if name == "bert" else {"self_attn", "down_proj"})
    before = space.channel_orders()
    space.sort_parameters("activation", [x])
    assert space.channel_orders().keys() == before.keys()
    assert space.config() == space.max()
