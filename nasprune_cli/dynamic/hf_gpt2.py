"""Dynamic GPT-2 attention, pruned by whole heads (imported only for models that use transformers).

GPT-2 computes q, k and v with one `Conv1D` (`c_attn`, weight [hidden, 3 x hidden]) and splits its output in three
(`split(self.split_size, dim=2)`). The kept heads are kept in each of the three segments, `c_proj` reads the same
features, and `split_size` follows the kept width, so transformers' own forward runs on the sliced projections.
The exported module is a GPT2Attention with smaller projections and its own `split_size` and `num_heads`.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune_cli.dynamic.base import DynamicModule
from nasprune_cli.dynamic.hf_attention import DynamicHFAttention, register_transformers

FUSED = (("transformers.models.gpt2.modeling_gpt2", "GPT2Attention"),)


class DynamicFusedAttention(DynamicHFAttention):
    """GPT-2 style attention: side "heads" slices every segment of the fused q/k/v projection alike."""

    def _segments(self) -> int:
        """Segments of the fused projection: 3 (q, k, v), 2 in cross-attention (k, v; q has its own)."""
        layout = self.layout()
        return getattr(self, layout.q).side_size("out") // (layout.heads * layout.head_dim)

    def set_index(self, side: str, index: torch.Tensor | None) -> None:
        """Keep these query features (whole heads) in q, k and v; c_proj reads them; split_size follows."""
        if side == "heads" and index is not None and getattr(self, "is_cross_attention", False):
            raise self._nasprune_error("set_index('heads'): cross-attention is not pruned")
        DynamicModule.set_index(self, side, index)  # not DynamicHFAttention's: the projections are set here
        if side != "heads":
            return
        layout = self.layout()
        index = self.get_index("heads")
        width = layout.heads * layout.head_dim
        fused = None if index is None else torch.cat([index + part * width for part in range(self._segments())])
        getattr(self, layout.q).set_index("out", fused)
        getattr(self, layout.o).set_index("in", index)
        self.split_size = width if index is None else int(index.numel())

    def side_magnitude(self, side: str) -> torch.Tensor | None:
        """Per query feature: L1 of its q, k and v columns of c_attn and of its c_proj row (None: "out")."""
        if side != "heads":
            return None
        layout = self.layout()
        with torch.no_grad():
            fused = getattr(self, layout.q).weight.detach().abs().sum(0).double()  # Conv1D weight: [in, out]
            score = fused.view(self._segments(), -1).sum(0)
            score = score + getattr(self, layout.o).weight.detach().abs().sum(1).double()
        return score

    def export(self) -> nn.Module:
        """The same GPT2Attention with the kept heads: smaller c_attn / c_proj, its own split_size and num_heads."""
        plain = super().export()
        plain.__dict__["split_size"] = self.active_heads() * self.layout().head_dim
        return plain


register_transformers(FUSED, DynamicFusedAttention)
