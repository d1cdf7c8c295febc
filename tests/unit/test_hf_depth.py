"""Depth search of transformers layer stacks (AutoNAS): the layers after the first may be skipped; the export drops
them, numbers the kept layers again and sets config.num_hidden_layers, runs with transformers' own forward and equals
the dynamic model; its FLOPs and params are the space's cost; the max subnet is the original."""

from __future__ import annotations

import copy
import random

import pytest
import torch

pytest.importorskip("transformers")

from nasprune_cli import convert, load_recipe  # noqa: E402
from nasprune_cli.inputs import call_model, dummy_input_for  # noqa: E402
from nasprune_cli.metrics.flops import count_params, fvcore_flops  # noqa: E402
from tests.unit.test_hf_attention import logits  # noqa: E402
from tools import hf_models  # noqa: E402

TOKENS = {"input": {"shape": [1, 16], "dtype": "int64"}}
# model builder, its layer stack
MODELS = {
    "llama": (hf_models.llama, "model.layers"),
    "bert": (hf_models.bert, "bert.encoder.layer"),
    "gpt2": (hf_models.gpt2, "transformer.h"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_layers_are_depth_choices_and_the_export_matches(name: str) -> None:
    build, stack = MODELS[name]
    torch.manual_seed(0)
    model = build(layers=3)
    original = copy.deepcopy(model)
    recipe = load_recipe("autonas", TOKENS, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    depth = space.hparams[f"{stack}.depth"]
    assert depth.choices == (1, 2, 3) and depth.members == (f"{stack}.1", f"{stack}.2")
    with torch.no_grad():
        torch.testing.assert_close(logits(call_model(space.model, x)), logits(call_model(original, x)))
    rng = random.Random(0)
    for config in (space.min(), {**space.sample(rng), depth.name: 2}, space.sample(rng)):
        space.select(config)
        exported = space.export()
        with torch.no_grad():
            got, want = logits(call_model(exported, x)), logits(call_model(space.model, x))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        cost = space.cost(config)
        assert fvcore_flops(exported, x) == pytest.approx(cost.flops)
        assert count_params(exported) == cost.params
        layers = exported.get_submodule(stack)
        kept = config[depth.name]
        assert type(layers) is torch.nn.ModuleList and len(layers) == kept == exported.config.num_hidden_layers
        modules = [m for layer in layers for m in layer.modules()]
        indices = [m.layer_idx for m in modules if isinstance(m.__dict__.get("layer_idx"), int)]
        assert set(indices) <= set(range(kept))
    assert model.config.num_hidden_layers == 3  # the space's own model and config are unchanged


def test_hf_exported_llama_with_fewer_layers_runs_with_a_cache() -> None:
    torch.manual_seed(0)
    model = hf_models.llama(layers=3)
    recipe = load_recipe("autonas", TOKENS, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    space.select({"model.layers.depth": 2})
    exported = space.export()
    ids = x[0] if isinstance(x, tuple) else x
    with torch.no_grad():
        cached = exported(ids, use_cache=True)
        step = exported(ids[:, -1:], cache=cached.past_key_values, use_cache=True).logits
        full = exported(torch.cat([ids, ids[:, -1:]], 1), use_cache=False).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


def test_fastnas_does_not_search_depth() -> None:
    torch.manual_seed(0)
    model = hf_models.llama(layers=3)
    recipe = load_recipe("fastnas", TOKENS, "test", sets=["defaults.divisor=16"])
    space = convert(model, recipe, dummy_input_for(recipe, model))
    assert not any(hp.kind == "depth" for hp in space.hparams.values())


def test_only_stacks_of_transformers_layers_are_layer_stacks() -> None:
    from torch import nn

    from nasprune_cli.dynamic.layer_stack import is_layer_stack

    model = hf_models.llama(layers=2)
    assert is_layer_stack(model.model.layers)
    assert not is_layer_stack(nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)]))  # not transformers layers
    assert not is_layer_stack(nn.ModuleList([model.model.layers[0], model.model.norm]))  # two classes
    assert not is_layer_stack(hf_models.llama(layers=1).model.layers)  # nothing to choose
