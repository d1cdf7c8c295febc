"""transformers models on small random configs (hidden 64, 2 layers, 16 tokens): convert with heads and MLP widths
prunable, search to 60% of the FLOPs (and of the params) with the default label-free score, export a model of the
same transformers classes that matches the dynamic subnet and runs with transformers' own forward."""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from nasprune_cli import convert, load_recipe, search  # noqa: E402
from nasprune_cli.dynamic import is_dynamic  # noqa: E402
from nasprune_cli.inputs import call_model, dummy_input_for, tensors_in  # noqa: E402
from nasprune_cli.metrics.flops import count_params, fvcore_flops  # noqa: E402
from tools import hf_models  # noqa: E402

pytestmark = pytest.mark.zoo

TOKENS = {"input": {"shape": [1, 16], "dtype": "int64"}}
MODELS = {
    "bert": (hf_models.bert, TOKENS),
    "llama": (hf_models.llama, TOKENS),
    "qwen2": (hf_models.qwen2, TOKENS),
    "mistral": (hf_models.mistral, TOKENS),
    "gpt2": (hf_models.gpt2, TOKENS),
    "vit": (hf_models.vit, {"input": {"shape": [1, 3, 32, 32]}}),
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _floats(out: object) -> list[torch.Tensor]:
    return [t for t in tensors_in(out, sort_keys=True) if t.is_floating_point()]


@pytest.mark.parametrize("budget", ["flops", "params"])
@pytest.mark.parametrize("name", list(MODELS))
def test_hf_model_converts_searches_and_exports(name: str, budget: str) -> None:
    build, overrides = MODELS[name]
    torch.manual_seed(0)
    model = build()
    original = copy.deepcopy(model)
    recipe = load_recipe("fastnas", overrides, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    kinds = {m.rpartition(".")[2] for hp in space.hparams.values() for m in hp.members}
    assert "heads" in kinds and len(space.hparams) >= 4  # heads and MLP width of both layers
    with torch.no_grad():  # the max subnet is the original
        for got, want in zip(_floats(call_model(space.model, x)), _floats(call_model(original, x)), strict=True):
            torch.testing.assert_close(got, want)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no --data warning
        result = search(space, {budget: "60%"}, x, {"recipe": recipe, "max_batches": 1})
    pruned = result.model
    assert not any(is_dynamic(m) for m in pruned.modules())
    assert type(pruned) is type(original)
    measured = fvcore_flops(pruned, x) if budget == "flops" else count_params(pruned)
    reference = space.original_cost.flops if budget == "flops" else space.original_cost.params
    assert 0.5 <= measured / reference <= 0.6
    with torch.no_grad():
        pruned_out = call_model(pruned.eval(), x)
        dynamic_out = call_model(space.model, x)
    for got, want in zip(_floats(pruned_out), _floats(dynamic_out), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    rng = random.Random(1)  # and at random subnets
    for _ in range(2):
        config = space.sample(rng)
        exported = space.export()
        with torch.no_grad():
            got, want = _floats(call_model(exported, x)), _floats(call_model(space.model, x))
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
        assert fvcore_flops(exported, x) == pytest.approx(space.cost(config).flops)


def test_hf_pruned_file_restores_from_a_fresh_model(tmp_path) -> None:  # noqa: ANN001
    from nasprune_cli import restore, save

    torch.manual_seed(0)
    model = hf_models.llama()
    fresh = copy.deepcopy(model)
    recipe = load_recipe("fastnas", TOKENS, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no --data warning
        result = search(model, {"flops": "60%"}, x, {"recipe": recipe, "max_batches": 1})
    save(tmp_path / "pruned.pt", result)
    restored = restore(fresh, tmp_path / "pruned.pt")
    assert count_params(restored) == count_params(result.model) < count_params(fresh)
    with torch.no_grad():
        torch.testing.assert_close(call_model(restored, x).logits, call_model(result.model, x).logits)


@pytest.mark.parametrize("name", ["bert", "llama", "gpt2"])
def test_hf_eager_attention_cost_matches_fvcore(name: str) -> None:
    build, overrides = MODELS[name]
    torch.manual_seed(0)
    model = build()
    model.config._attn_implementation = "eager"  # fvcore counts its two matmuls (not scaled_dot_product_attention)
    recipe = load_recipe("fastnas", overrides, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    rng = random.Random(2)
    for _ in range(2):
        config = space.sample(rng)
        assert fvcore_flops(space.export(), x) == pytest.approx(space.cost(config).flops)


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_hf_autonas_searches_depth_and_widths(name: str, tmp_path) -> None:  # noqa: ANN001
    from nasprune_cli import restore, save

    build = {"llama": hf_models.llama, "bert": hf_models.bert}[name]
    torch.manual_seed(0)
    model = build(layers=4)
    fresh = copy.deepcopy(model)
    recipe = load_recipe("autonas", TOKENS, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    assert [hp.choices for hp in space.hparams.values() if hp.kind == "depth"] == [(1, 2, 3, 4)]
    settings = {"recipe": recipe, "max_batches": 1, "iterations": 24, "population_size": 8}
    settings |= {"crossover_size": 4, "mutation_size": 4, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no --data warning
        result = search(space, {"flops": "60%"}, x, settings)
    pruned = result.model
    assert not any(is_dynamic(m) for m in pruned.modules()) and type(pruned) is type(model)
    assert fvcore_flops(pruned, x) <= 0.6 * space.original_cost.flops
    space.select(result.config)
    with torch.no_grad():
        got, want = _floats(call_model(pruned.eval(), x)), _floats(call_model(space.model, x))
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    depth = next(v for k, v in result.config.items() if k.endswith(".depth"))
    assert pruned.config.num_hidden_layers == depth
    save(tmp_path / "pruned.pt", result)  # nasprune's own file rebuilds it from a fresh model
    restored = restore(fresh, tmp_path / "pruned.pt")
    assert restored.config.num_hidden_layers == depth and count_params(restored) == count_params(pruned)
    with torch.no_grad():
        torch.testing.assert_close(_floats(call_model(restored, x))[0], got[0])
