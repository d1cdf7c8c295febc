"""Token inputs for transformers models: ids within the vocabulary, keyword inputs, caches off, ModelOutput
outputs counted and exported, and the --input-dtype flag."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("transformers")

from nasprune_cli.checkpoint import write_deployable  # noqa: E402
from nasprune_cli.cli.app import app  # noqa: E402
from nasprune_cli.errors import (
    NasPruneError,  # noqa: E402
    RecipeError,  # noqa: E402
)
from nasprune_cli.inputs import (  # noqa: E402
    call_model,
    dummy_input_from_spec,
    input_spec,
    random_batches,
    tensors_in,
)
from nasprune_cli.metrics.flops import fvcore_flops  # noqa: E402
from nasprune_cli.recipe import InputSection, load_recipe  # noqa: E402
from tools import hf_models  # noqa: E402

TOKENS = {"shape": [2, 16], "dtype": "int64"}


@pytest.fixture(scope="module")
def llama() -> nn.Module:
    torch.manual_seed(0)
    return hf_models.llama()


def test_token_ids_are_drawn_within_the_vocabulary_with_caches_off(llama: nn.Module) -> None:
    ids, named = dummy_input_from_spec({**TOKENS, "keywords": {"attention_mask": "ones"}}, llama)
    assert ids.dtype == torch.int64 and ids.shape == (2, 16)
    assert 0 <= int(ids.min()) and int(ids.max()) < llama.config.vocab_size and len(ids.unique()) > 1
    assert named["use_cache"] is False and torch.equal(named["attention_mask"], torch.ones(2, 16, dtype=torch.int64))
    out = call_model(llama, (ids, named))
    assert out.past_key_values is None and out.logits.shape == (2, 16, llama.config.vocab_size)


def test_input_high_bounds_the_ids_and_is_stored(llama: nn.Module) -> None:
    ids = dummy_input_from_spec({**TOKENS, "high": 5}, llama)[0]
    assert int(ids.max()) < 5 and len(ids.unique()) > 1
    spec = input_spec(dummy_input_from_spec({**TOKENS, "high": 5, "keywords": {"attention_mask": "ones"}}, llama), 5)
    assert spec == {**TOKENS, "high": 5, "keywords": {"attention_mask": "ones"}}
    assert InputSection.model_validate(spec).high == 5


def test_a_model_without_vocabulary_keeps_zero_ids() -> None:
    ids = dummy_input_from_spec(TOKENS, nn.Identity())
    assert torch.equal(ids, torch.zeros(2, 16, dtype=torch.int64))


def test_float_input_for_a_token_model_says_what_to_pass(llama: nn.Module) -> None:
    with pytest.raises(NasPruneError, match=r"LlamaForCausalLM takes token ids.*--input-dtype int64"):
        dummy_input_from_spec({"shape": [1, 16]}, llama)
    with pytest.raises(NasPruneError, match=r"found int64 of shape \[1, 3, 224, 224\]"):
        dummy_input_from_spec({"shape": [1, 3, 224, 224], "dtype": "int64"}, llama)


def test_random_batches_draw_new_ids_and_repeat_masks(llama: nn.Module) -> None:
    dummy = dummy_input_from_spec({**TOKENS, "keywords": {"attention_mask": "ones"}}, llama)
    first, second = random_batches(dummy, 2, seed=0, high=llama.config.vocab_size)
    assert first[0].shape == (8, 16) and not torch.equal(first[0], second[0])
    assert int(first[0].max()) < llama.config.vocab_size
    assert torch.equal(first[1]["attention_mask"], torch.ones(8, 16, dtype=torch.int64))
    assert first[1]["use_cache"] is False


def test_recipe_input_section_checks_high_and_keywords() -> None:
    with pytest.raises(RecipeError, match=r"input\.high"):
        load_recipe(None, {"input": {"high": 0}}, "test")
    with pytest.raises(RecipeError, match=r"input\.keywords\.attention_mask"):
        load_recipe(None, {"input": {"keywords": {"attention_mask": "twos"}}}, "test")


def test_fvcore_counts_a_model_output_with_keyword_inputs(llama: nn.Module) -> None:
    plain = dummy_input_from_spec(TOKENS, llama)
    masked = dummy_input_from_spec({**TOKENS, "keywords": {"attention_mask": "ones"}}, llama)
    flops = fvcore_flops(llama, plain)
    hidden, vocab = llama.config.hidden_size, llama.config.vocab_size
    assert flops > 32 * hidden * vocab  # at least the lm_head on 2 x 16 tokens
    assert fvcore_flops(llama, masked) == flops
    by_module = fvcore_flops(llama, masked, by_module=True)
    assert by_module[""] == flops and by_module["lm_head"] == 32 * hidden * vocab


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_of_a_model_output_with_keyword_inputs(llama: nn.Module, fmt: str, tmp_path) -> None:  # noqa: ANN001
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    dummy = dummy_input_from_spec({**TOKENS, "keywords": {"attention_mask": "ones"}}, llama)
    result = write_deployable(llama, tmp_path / f"m.{fmt}", fmt, dummy)
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] < 1e-4
    if fmt == "torchscript":  # the file takes (input_ids, attention_mask) and returns the logits first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load is deprecated, still supported
            loaded = torch.jit.load(str(tmp_path / "m.torchscript"))
        torch.testing.assert_close(loaded(*tensors_in(dummy))[0], call_model(llama, dummy).logits)


def test_a_failing_onnx_export_is_one_line_and_prints_nothing(tmp_path, capfd) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")

    class Spectrum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x).real

    with pytest.raises(NasPruneError, match=r"ONNX export failed \(UnsupportedOperatorError") as info:
        write_deployable(Spectrum(), tmp_path / "m.onnx", "onnx", torch.randn(1, 8))
    assert "\n" not in str(info.value)
    captured = capfd.readouterr()
    assert captured.out == "" and "graph" not in captured.err


def test_profile_cli_takes_input_dtype() -> None:
    runner = CliRunner()
    args = ["profile", "-m", "tools.hf_models:llama", "--input-shape", "1,16", "--json"]
    result = runner.invoke(app, [*args, "--input-dtype", "int64"])
    assert result.exit_code == 0, result.output
    assert '"flops"' in result.stdout
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--input-dtype int64" in refused.stderr
