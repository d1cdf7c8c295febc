"""Small randomly initialised HuggingFace transformers models (hidden 64, 2 layers unless asked for more) for tests and
examples.

Nothing is downloaded: each builder makes a config and builds the model from it with random weights.
`nasprune profile --model tools.hf_models:bert --input-shape 1,16 --input-dtype int64`
"""

from __future__ import annotations

from typing import Any

from torch import nn

SMALL: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}


def bert(num_labels: int = 3, layers: int = 2) -> nn.Module:
    """BertForSequenceClassification (4 heads of 16)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(**{**SMALL, "num_hidden_layers": layers}, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


def roberta(num_labels: int = 3) -> nn.Module:
    """RobertaForSequenceClassification (4 heads of 16)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return RobertaForSequenceClassification(RobertaConfig(**SMALL, num_labels=num_labels, pad_token_id=1)).eval()


def llama(layers: int = 2) -> nn.Module:
    """LlamaForCausalLM with grouped-query attention (4 query heads of 16 in 2 key/value groups)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{**SMALL, "num_hidden_layers": layers}, num_key_value_heads=2)).eval()


def qwen2() -> nn.Module:
    """Qwen2ForCausalLM with grouped-query attention (q/k/v biases)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**SMALL, num_key_value_heads=2)).eval()


def mistral() -> nn.Module:
    """MistralForCausalLM with grouped-query attention."""
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**SMALL, num_key_value_heads=2, head_dim=16)).eval()


def gpt2(layers: int = 2) -> nn.Module:
    """GPT2LMHeadModel (Conv1D projections, q/k/v fused in one)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_embd=64, n_layer=layers, n_head=4, n_inner=128, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def vit(num_labels: int = 10) -> nn.Module:
    """ViTForImageClassification on 32x32 images, 8x8 patches."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        **{k: v for k, v in SMALL.items() if k not in ("vocab_size", "max_position_embeddings")},
        image_size=32,
        patch_size=8,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config).eval()
