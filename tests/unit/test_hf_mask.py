"""An `attention_mask` keyword input does not freeze transformers models: the mask builders branch on values no
prunable channel reaches, so the hparams are those of the model without a mask, and the export equals the dynamic
model with any mask (all ones, or padded)."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from nasprune_cli import convert, load_recipe  # noqa: E402
from nasprune_cli.inputs import call_model, dummy_input_for  # noqa: E402
from tests.unit.test_hf_attention import logits  # noqa: E402
from tools import hf_models  # noqa: E402

TOKENS = {"shape": [1, 16], "dtype": "int64"}
MODELS = {"bert": hf_models.bert, "llama": hf_models.llama}


def _space(name: str, keywords: dict[str, str] | None):  # noqa: ANN202
    torch.manual_seed(0)
    model = MODELS[name]()
    section = {**TOKENS, "keywords": keywords} if keywords else TOKENS
    recipe = load_recipe("fastnas", {"input": section}, "test", sets=["defaults.divisor=16"])
    x = dummy_input_for(recipe, model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space = convert(model, recipe, x)
    return space, x, [str(w.message) for w in caught]


@pytest.mark.parametrize("name", list(MODELS))
def test_an_attention_mask_keeps_the_hparams_and_the_export_matches(name: str) -> None:
    plain, _, _ = _space(name, None)
    space, x, messages = _space(name, {"attention_mask": "ones"})
    assert {n: h.choices for n, h in space.hparams.items()} == {n: h.choices for n, h in plain.hparams.items()}
    assert not any("data-dependent" in f.reason for f in space.frozen)
    assert any("no prunable channel reaches it and every layer in it ran" in m for m in messages), messages
    ids, named = x
    padded = (ids, {**named, "attention_mask": torch.cat([torch.ones(1, 12), torch.zeros(1, 4)], 1).long()})
    rng = random.Random(0)
    for _ in range(2):
        space.sample(rng)
        exported = space.export()
        for inputs in (x, padded):
            with torch.no_grad():
                got, want = logits(call_model(exported, inputs)), logits(call_model(space.model, inputs))
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.zoo
def test_a_llama_searched_with_a_mask_exports_to_onnx(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from nasprune_cli.checkpoint import write_deployable

    space, x, _ = _space("llama", {"attention_mask": "ones"})
    space.sample(random.Random(1))
    written = write_deployable(space.export(), tmp_path / "llama.onnx", "onnx", x)
    assert written["max_abs_diff"] < 1e-4  # transformers' mask code without a mask would need aten::diff
