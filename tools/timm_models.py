"""The timm models (and a small GPT-2) nasprune is checked on: builder and input of each, randomly initialised
(nothing is downloaded). `small` is the zoo tests' input size; `tools/timm_coverage.py` takes its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TimmModel:
    """One entry: a timm model name (or 'gpt2-small-config') and the input sizes it runs at."""

    name: str
    small: int = 32  # the zoo tests' input (pixels, or tokens for GPT-2)
    fixed_size: int | None = None  # attention biases sized for one resolution: the input must be this size

    def build(self, size: int) -> nn.Module:
        """The model for an input of `size` pixels (tokens for GPT-2), random weights, eval mode."""
        if self.name == "gpt2-small-config":
            return _gpt2(size).eval()
        import timm

        kwargs = {"img_size": size} if self.name.startswith("levit") else {}
        return timm.create_model(self.name, pretrained=False, **kwargs).eval()

    def input(self, size: int) -> torch.Tensor:
        """A dummy input of that size (token ids for GPT-2)."""
        generator = torch.Generator().manual_seed(1)
        if self.name == "gpt2-small-config":
            return torch.randint(0, 512, (1, size), generator=generator)
        size = self.fixed_size or size
        return torch.randn(1, 3, size, size, generator=generator)


class GPT2Logits(nn.Module):
    """GPT2LMHeadModel returning its logits tensor (return_dict=True inside: the ModelOutput is unpacked here)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The next-token logits."""
        return self.model(input_ids=input_ids).logits


def _gpt2(positions: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=max(positions, 64),
        vocab_size=512,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        return_dict=True,
    )
    torch.manual_seed(0)
    return GPT2Logits(GPT2LMHeadModel(config))


TIMM_ZOO: dict[str, TimmModel] = {
    m.name: m
    for m in (
        TimmModel("regnety_002"),
        TimmModel("efficientnet_b0"),
        TimmModel("mobilenetv3_large_100"),
        TimmModel("repvgg_a0"),
        TimmModel("convnextv2_atto"),
        TimmModel("ghostnet_100"),
        TimmModel("resnet50d"),
        TimmModel("fastvit_t8"),
        TimmModel("efficientformer_l1", fixed_size=224),  # attention biases for a 7x7 last stage
        TimmModel("levit_128s"),
        TimmModel("gpt2-small-config", small=16),
    )
}
