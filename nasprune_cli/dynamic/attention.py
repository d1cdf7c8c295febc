"""Dynamic torchvision attention blocks, pruned by whole heads.

These classes tie their inner width (heads x head_dim) to the width of the features they read and write, so
one side, "features", covers all three: keeping positions `index` keeps those input features, the same q/k/v
dims and the same output features. A valid index keeps whole heads (every dim of a head, or none of it); the
exported module is the same torchvision class with fewer heads and the original head_dim, so the attention
math, including its scale, is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, shifted_window_attention

from nasprune_cli.dynamic.base import DynamicModule, register, take


class _DynamicHeadsBase(DynamicModule):
    """Shared logic: one "features" side in units of whole heads; sliced qkv / output projections."""

    def sides(self) -> tuple[str, ...]:
        """("features",): input features = q/k/v dims = output features."""
        return ("features",)

    def side_size(self, side: str) -> int:
        """The embedding width: heads x head width."""
        self._check_side(side)
        return self.head_count() * self.head_width()

    def head_count(self) -> int:
        """Number of heads of the original module."""
        raise NotImplementedError  # pragma: no cover

    def head_width(self) -> int:
        """Features per head."""
        raise NotImplementedError  # pragma: no cover

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        width = self.head_width()
        counts = torch.bincount(index // width, minlength=self.head_count())
        if bool(((counts != 0) & (counts != width)).any()):
            raise self._nasprune_error(
                f"set_index({side!r}): attention is pruned by whole heads of {width} features "
                f"(kept per head: {counts.tolist()})"
            )

    def kept_heads(self, device: torch.device) -> torch.Tensor | None:
        """Indices of the kept heads (None: all)."""
        index = self.slice_index("features", device)
        return None if index is None else torch.unique(index // self.head_width())

    def active_heads(self) -> int:
        """Number of heads the active subnet keeps."""
        return self.active_size("features") // self.head_width()

    def _sliced_projections(
        self, qkv: nn.Linear, out: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(qkv weight, qkv bias, out weight, out bias) of the active heads."""
        index = self.slice_index("features", qkv.weight.device)
        if index is None:
            return qkv.weight, qkv.bias, out.weight, out.bias
        size = self.side_size("features")
        rows = torch.cat([index, index + size, index + 2 * size])
        qkv_w = take(take(qkv.weight, 0, rows), 1, index)
        out_w = take(take(out.weight, 0, index), 1, index)
        return qkv_w, take(qkv.bias, 0, rows), out_w, take(out.bias, 0, index)

    @staticmethod
    def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        layer.weight = nn.Parameter(weight.detach().clone())
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().clone())
        return layer


@register(ShiftedWindowAttention)
class DynamicShiftedWindowAttention(_DynamicHeadsBase, ShiftedWindowAttention):
    """Sliceable torchvision Swin (v1) window attention."""

    def head_count(self) -> int:
        """num_heads of the original module."""
        return self.num_heads

    def head_width(self) -> int:
        """dim // num_heads."""
        return self.qkv.in_features // self.num_heads

    def _relative_bias(self) -> torch.Tensor:
        table = take(self.relative_position_bias_table, 1, self.kept_heads(self.relative_position_bias_table.device))
        from torchvision.models.swin_transformer import _get_relative_position_bias

        return _get_relative_position_bias(table, self.relative_position_index, self.window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's shifted_window_attention with the kept heads."""
        qkv_w, qkv_b, proj_w, proj_b = self._sliced_projections(self.qkv, self.proj)
        return shifted_window_attention(
            x,
            qkv_w,
            proj_w,
            self._relative_bias(),
            self.window_size,
            self.active_heads(),
            shift_size=self.shift_size,
            attention_dropout=self.attention_dropout,
            dropout=self.dropout,
            qkv_bias=qkv_b,
            proj_bias=proj_b,
            training=self.training,
        )

    def export(self) -> nn.Module:
        """A plain ShiftedWindowAttention with the kept heads."""
        with torch.no_grad():
            qkv_w, qkv_b, proj_w, proj_b = self._sliced_projections(self.qkv, self.proj)
            plain = ShiftedWindowAttention(
                self.active_size("features"),
                list(self.window_size),
                list(self.shift_size),
                self.active_heads(),
                qkv_bias=qkv_b is not None,
                proj_bias=proj_b is not None,
                attention_dropout=self.attention_dropout,
                dropout=self.dropout,
            )
            plain.qkv = self._linear(qkv_w, qkv_b)
            plain.proj = self._linear(proj_w, proj_b)
            table = take(self.relative_position_bias_table, 1, self.kept_heads(self.qkv.weight.device))
            plain.relative_position_bias_table = nn.Parameter(table.detach().clone())
            plain.relative_position_index = self.relative_position_index.clone()
        plain.train(self.training)
        return plain


@register(RelativePositionalMultiHeadAttention)
class DynamicRelativePositionalMultiHeadAttention(_DynamicHeadsBase, RelativePositionalMultiHeadAttention):
    """Sliceable torchvision MaxViT attention."""

    def head_count(self) -> int:
        """n_heads of the original module."""
        return self.n_heads

    def head_width(self) -> int:
        """head_dim."""
        return self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's forward with the kept heads (the scale stays the original one)."""
        qkv_w, qkv_b, out_w, out_b = self._sliced_projections(self.to_qkv, self.merge)
        b, g, p, d = x.shape
        heads, dh = self.active_heads(), self.head_dim
        q, k, v = torch.chunk(F.linear(x, qkv_w, qkv_b), 3, dim=-1)
        q = q.reshape(b, g, p, heads, dh).permute(0, 1, 3, 2, 4)
        k = k.reshape(b, g, p, heads, dh).permute(0, 1, 3, 2, 4)
        v = v.reshape(b, g, p, heads, dh).permute(0, 1, 3, 2, 4)
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        dot_prod = F.softmax(dot_prod + self._relative_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, g, p, d)
        return F.linear(out, out_w, out_b)

    def _relative_bias(self) -> torch.Tensor:
        table = take(self.relative_position_bias_table, 1, self.kept_heads(self.relative_position_bias_table.device))
        bias = table[self.relative_position_index.view(-1)].view(self.max_seq_len, self.max_seq_len, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def export(self) -> nn.Module:
        """A plain RelativePositionalMultiHeadAttention with the kept heads and the original scale."""
        with torch.no_grad():
            qkv_w, qkv_b, out_w, out_b = self._sliced_projections(self.to_qkv, self.merge)
            plain = RelativePositionalMultiHeadAttention(self.active_size("features"), self.head_dim, self.max_seq_len)
            plain.to_qkv = self._linear(qkv_w, qkv_b)
            plain.merge = self._linear(out_w, out_b)
            table = take(self.relative_position_bias_table, 1, self.kept_heads(self.to_qkv.weight.device))
            plain.relative_position_bias_table = nn.Parameter(table.detach().clone())
            plain.relative_position_index = self.relative_position_index.clone()
            plain.scale_factor = self.scale_factor  # torchvision scales by the original feat_dim ** -0.5
        plain.train(self.training)
        return plain
