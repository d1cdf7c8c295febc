"""transformers attention pruned by whole heads (small random configs): exported == dynamic at random subnets,
fvcore FLOPs of the export == the space's cost, the max subnet == the original, consistent per-layer head counts."""

from __future__ import annotations

import copy
import random

import pytest
import torch

pytest.importorskip("transformers")

from nasprune_cli import convert, load_recipe  # noqa: E402
from nasprune_cli.inputs import call_model, dummy_input_for, tensors_in  # noqa: E402
from nasprune_cli.metrics.flops import fvcore_flops  # noqa: E402
from tools import hf_models  # noqa: E402

TOKENS = {"input": {"shape": [1, 16], "dtype": "int64"}}
# BERT style (no output projection inside), Llama style with grouped-query attention and GPT-2; Qwen2, Mistral and ViT
# run the same checks in tests/zoo/test_zoo_hf.py
MODELS = {
    "bert": (hf_models.bert, TOKENS),
    "llama": (hf_models.llama, TOKENS),
    "gpt2": (hf_models.gpt2, TOKENS),  # q/k/v fused in one Conv1D
}


def logits(out: object) -> torch.Tensor:
    """The first floating-point tensor of a model's output (a ModelOutput's logits)."""
    return [t for t in tensors_in(out, sort_keys=True) if t.is_floating_point()][0]


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_heads_export_matches_dynamic(name: str) -> None:
    build, overrides = MODELS[name]
    torch.manual_seed(0)
    model = build()
    original = copy.deepcopy(model)
    recipe = load_recipe("fastnas", overrides, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    space = convert(model, recipe, x)
    heads = [hp for hp in space.hparams.values() if any("attn" in m or "attention" in m for m in hp.members)]
    assert heads, f"no head hparam: {list(space.hparams)}"
    with torch.no_grad():
        torch.testing.assert_close(logits(call_model(space.model, x)), logits(call_model(original, x)))
    rng = random.Random(0)
    for _ in range(3):
        config = space.sample(rng)
        pruned = space.export()
        with torch.no_grad():
            dynamic_out, pruned_out = logits(call_model(space.model, x)), logits(call_model(pruned, x))
        torch.testing.assert_close(pruned_out, dynamic_out, rtol=1e-4, atol=1e-5)
        assert fvcore_flops(pruned, x) == pytest.approx(space.cost(config).flops)
        assert sum(p.numel() for p in pruned.parameters()) == space.cost(config).params
        for module in pruned.modules():
            if hasattr(module, "c_attn"):  # GPT-2: split_size and num_heads follow the kept heads
                assert module.c_attn.nf == 3 * module.split_size == 3 * module.c_proj.nx
                assert module.num_heads * module.head_dim == module.split_size
                continue
            proj = getattr(module, "q_proj", None) or getattr(module, "query", None)
            if proj is None or not hasattr(module, "config"):
                continue
            width = getattr(module, "head_dim", None) or module.attention_head_size
            kept = proj.out_features // width
            for attr in ("num_attention_heads", "num_heads"):
                if isinstance(getattr(module, attr, None), int):
                    assert getattr(module, attr) == kept
            if hasattr(module, "k_proj"):  # grouped-query attention keeps its query heads per key/value head
                assert kept == getattr(module, "num_key_value_groups", 1) * (module.k_proj.out_features // width)


def test_hf_gqa_heads_are_whole_key_value_groups() -> None:
    torch.manual_seed(0)
    model = hf_models.llama()
    recipe = load_recipe("fastnas", TOKENS, "test", sets=["defaults.divisor=16"])
    space = convert(model, recipe, dummy_input_for(recipe, model))
    hp = space.hparams["model.layers.0.self_attn.head_features"]
    assert hp.members == ("model.layers.0.self_attn.heads",)
    assert hp.choices == (32, 64)  # 2 key/value groups of 2 query heads of 16
    attn = model.model.layers[0].self_attn
    with pytest.raises(Exception, match="whole key/value groups"):
        attn.set_index("heads", torch.arange(16))


def test_hf_head_importance_keeps_the_strongest_key_value_group() -> None:
    torch.manual_seed(0)
    model = hf_models.llama()
    recipe = load_recipe("fastnas", TOKENS, "test", sets=["defaults.divisor=16"])
    space = convert(model, recipe, dummy_input_for(recipe, model))
    attn = model.model.layers[0].self_attn
    with torch.no_grad():  # weaken key/value group 0 and its two query heads
        for proj, rows in ((attn.q_proj, 32), (attn.k_proj, 16), (attn.v_proj, 16)):
            proj.weight[:rows] *= 0.01
        attn.o_proj.weight[:, :32] *= 0.01
    space.sort_parameters("magnitude")
    space.select({"model.layers.0.self_attn.head_features": 32})
    torch.testing.assert_close(attn.get_index("heads"), torch.arange(32, 64))
    torch.testing.assert_close(attn.k_proj.get_index("out"), torch.arange(16, 32))


def test_hf_gpt2_heads_keep_the_same_heads_in_q_k_and_v() -> None:
    torch.manual_seed(0)
    model = hf_models.gpt2()
    recipe = load_recipe("fastnas", TOKENS, "test", sets=["defaults.divisor=16"])
    space = convert(model, recipe, dummy_input_for(recipe, model))
    attn = model.transformer.h[0].attn
    with torch.no_grad():  # weaken head 1 in q, k, v and c_proj
        for part in range(3):
            attn.c_attn.weight[:, part * 64 + 16 : part * 64 + 32] *= 0.01
        attn.c_proj.weight[16:32] *= 0.01
    space.sort_parameters("magnitude")
    space.select({"transformer.h.0.attn.head_features": 48})
    kept = torch.tensor([0, 2, 3])
    features = (kept[:, None] * 16 + torch.arange(16)).flatten()
    torch.testing.assert_close(attn.get_index("heads"), features)
    fused = torch.cat([features + part * 64 for part in range(3)])
    torch.testing.assert_close(attn.c_attn.get_index("out"), fused)
    assert attn.split_size == 48
    exported = space.export().transformer.h[0].attn
    assert (exported.split_size, exported.num_heads, exported.c_attn.nf) == (48, 3, 144)


def test_transformers_is_imported_only_for_models_that_use_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from nasprune_cli import convert, profile\n"
        "model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))\n"
        "space = convert(model, None, torch.randn(1, 8))\n"
        "profile(space, None, torch.randn(1, 8), {})\n"
        "print('transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_hf_gpt2_cross_attention_is_not_pruned() -> None:
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    from nasprune_cli.conversion import load_extensions
    from nasprune_cli.dynamic import make_dynamic

    attention = GPT2Attention(GPT2Config(n_embd=64, n_head=4), is_cross_attention=True)
    load_extensions(attention)
    make_dynamic(attention, name="cross")
    with pytest.raises(Exception, match="cross-attention is not pruned"):
        attention.set_index("heads", torch.arange(16))
    assert attention.export().split_size == 64
