"""Dynamic Conv1d/2d/3d and ConvTranspose1d/2d/3d: channel slicing (plain, depthwise, grouped) and kernel crop."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, register, take
from nasprune_cli.dynamic.swap import SlicedState

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _DynamicConvBase(DynamicModule):
    """Shared slicing of a (transposed) convolution; weight rows/columns depend on `transposed`.

    Conv weight is [out, in/groups, *k] (rows = "out"); ConvTranspose weight is [in, out/groups, *k] (rows = "in").
    With groups > 1, a side's positions belong to group p // (size / groups); every kept group must keep the same
    number of positions on a side, and both sides must keep the same groups (depthwise: the same index).
    """

    _nd: ClassVar[int]
    _transposed: ClassVar[bool] = False
    _nasprune_kernel: int | None

    def _init_state(self) -> None:
        self._nasprune_kernel = None

    def sides(self) -> tuple[str, ...]:
        """("in", "out")."""
        return ("in", "out")

    def side_size(self, side: str) -> int:
        """in_channels or out_channels."""
        self._check_side(side)
        return self.in_channels if side == "in" else self.out_channels

    @property
    def _row_side(self) -> str:
        return "in" if self._transposed else "out"

    @property
    def _col_side(self) -> str:
        return "out" if self._transposed else "in"

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        if self.groups == 1:
            return
        per_group = self.side_size(side) // self.groups
        counts = torch.bincount(index // per_group, minlength=self.groups)
        kept = counts[counts > 0]
        if bool((kept != kept[0]).any()):
            raise self._nasprune_error(
                f"set_index({side!r}): a grouped convolution (groups={self.groups}, {per_group} channels per group) "
                f"must keep the same number of channels in every group it keeps (kept per group: {counts.tolist()})"
            )

    # ---- kernel size -----------------------------------------------------------------------------------------
    def set_kernel_size(self, kernel_size: int | None) -> None:
        """Center-crop the kernel to k (odd, <= original) in every spatial dim; padding shrinks to keep output size."""
        if kernel_size is not None:
            self._check_kernel_size(kernel_size)
            if kernel_size == self.kernel_size[0]:
                kernel_size = None
        self._nasprune_kernel = kernel_size
        self._invalidate()

    def get_kernel_size(self) -> int | None:
        """The kernel size set by set_kernel_size (None: the original kernel)."""
        return self._nasprune_kernel

    def _check_kernel_size(self, k: int) -> None:
        where = f"set_kernel_size({k!r})"
        if self._transposed:
            raise self._nasprune_error(f"{where}: kernel size search is not supported for transposed convolutions")
        full = tuple(self.kernel_size)
        if len(set(full)) != 1 or full[0] % 2 == 0:
            raise self._nasprune_error(
                f"{where}: the kernel must be square with an odd size to be cropped (it is {full})"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 or k > full[0]:
            raise self._nasprune_error(f"{where}: expected an odd int in [1, {full[0]}]")
        if self.padding == "valid":
            raise self._nasprune_error(
                f"{where}: padding='valid' would change the output size; use numeric padding or 'same'"
            )
        if isinstance(self.padding, str):
            return
        shift = (full[0] - k) // 2
        new = [p - shift * d for p, d in zip(self.padding, self.dilation, strict=True)]
        if min(new) < 0:
            raise self._nasprune_error(
                f"{where}: the padding {tuple(self.padding)} is too small to keep the output size with a "
                f"{k}-wide kernel (it would become {tuple(new)})"
            )

    def _active_kernel(self) -> tuple[int, ...]:
        k = self._nasprune_kernel
        return tuple(self.kernel_size) if k is None else (k,) * self._nd

    def _active_padding(self) -> tuple[int, ...] | str:
        k = self._nasprune_kernel
        if k is None or isinstance(self.padding, str):
            return self.padding
        shift = (self.kernel_size[0] - k) // 2
        return tuple(p - shift * d for p, d in zip(self.padding, self.dilation, strict=True))

    def _reversed_padding(self) -> list[int]:
        """Padding for F.pad (non-'zeros' padding modes), last dim first, like torch's own."""
        if self._nasprune_kernel is None:
            return list(self._reversed_padding_repeated_twice)
        padding = self._active_padding()
        result: list[int] = []
        for i in reversed(range(self._nd)):
            if padding == "same":
                total = self.dilation[i] * (self._nasprune_kernel - 1)
                result += [total // 2, total - total // 2]
            else:
                result += [padding[i], padding[i]]
        return result

    # ---- slicing ---------------------------------------------------------------------------------------------
    def _plan(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """(row index, column index, active groups); the column index is [rows, kept per group] when grouped."""
        key = ("plan", device)
        if key not in self._nasprune_cache:
            self._nasprune_cache[key] = self._make_plan(device)
        return self._nasprune_cache[key]

    def _make_plan(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        rows = self.slice_index(self._row_side, device)
        cols = self.slice_index(self._col_side, device)
        if self.groups == 1:
            return rows, cols, 1
        n_rows, n_cols = self.side_size(self._row_side), self.side_size(self._col_side)
        row_per, col_per = n_rows // self.groups, n_cols // self.groups
        row_idx = _cpu_index(self.get_index(self._row_side), n_rows)
        col_idx = _cpu_index(self.get_index(self._col_side), n_cols)
        row_groups, col_groups = row_idx // row_per, col_idx // col_per
        kept_rows, kept_cols = torch.unique(row_groups), torch.unique(col_groups)
        if not torch.equal(kept_rows, kept_cols):
            depthwise = self.groups == self.in_channels == self.out_channels
            hint = " (a depthwise conv needs the same index on 'in' and 'out')" if depthwise else ""
            raise self._nasprune_error(
                f"grouped convolution (groups={self.groups}): side {self._row_side!r} keeps groups "
                f"{_short(kept_rows)} but side {self._col_side!r} keeps groups {_short(kept_cols)}; "
                f"both sides must keep the same groups{hint}"
            )
        n_groups = int(kept_rows.numel())
        per_row_group = row_idx.numel() // n_groups
        per_col_group = col_idx.numel() // n_groups
        if cols is None or per_col_group == col_per:
            return rows, None, n_groups
        local = (col_idx - col_groups * col_per).view(n_groups, per_col_group)
        rank = torch.arange(row_idx.numel()) // per_row_group  # rows are ascending: kept group rank of each row
        return rows, local[rank].to(device), n_groups

    def sliced_params(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(weight, bias, groups) of the active subnet, computed from the original parameters."""
        device = self.weight.device
        rows, cols, groups = self._plan(device)
        weight = take(self.weight, 0, rows)
        if cols is not None:
            if cols.dim() == 1:
                weight = weight.index_select(1, cols)
            else:
                shape = (*cols.shape, *([1] * self._nd))
                weight = torch.gather(weight, 1, cols.view(shape).expand(-1, -1, *weight.shape[2:]))
        k = self._nasprune_kernel
        if k is not None:
            shift = (self.kernel_size[0] - k) // 2
            for d in range(self._nd):
                weight = weight.narrow(2 + d, shift, k)
        bias = take(self.bias, 0, self.slice_index("out", device))
        return weight, bias, groups

    def sliced_state(self) -> SlicedState:
        """The sliced weight and bias, the active in/out channels and groups (a subclass's own forward runs on it)."""
        weight, bias, groups = self.sliced_params()
        sizes = {"in_channels": self.active_size("in"), "out_channels": self.active_size("out"), "groups": groups}
        return {"weight": weight, "bias": bias}, sizes

    def _export_kwargs(self, groups: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "in_channels": self.active_size("in"),
            "out_channels": self.active_size("out"),
            "kernel_size": self._active_kernel(),
            "stride": self.stride,
            "padding": self._active_padding(),
            "dilation": self.dilation,
            "groups": groups,
            "bias": self.bias is not None,
            "padding_mode": self.padding_mode,
        }
        if self._transposed:
            kwargs["output_padding"] = self.output_padding
        return kwargs

    def export(self) -> nn.Module:
        """A plain conv with the active channels, groups and kernel; sliced weight copies."""
        with torch.no_grad():
            weight, bias, groups = self.sliced_params()
            return self._build_plain(self._export_kwargs(groups), {"weight": weight, "bias": bias})

    def _active_note(self) -> str:
        note = super()._active_note()
        if self._nasprune_kernel is not None:
            kernel = f"kernel={self._nasprune_kernel}"
            note = f"{note}, {kernel}" if note else f"active: {kernel}"
        return note


class _DynamicConvNd(_DynamicConvBase):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """The convolution with the sliced weight, bias, groups and (cropped) kernel."""
        weight, bias, groups = self.sliced_params()
        conv = _CONV[self._nd]
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding(), mode=self.padding_mode)
            return conv(padded, weight, bias, self.stride, (0,) * self._nd, self.dilation, groups)
        return conv(input, weight, bias, self.stride, self._active_padding(), self.dilation, groups)


class _DynamicConvTransposeNd(_DynamicConvBase):
    _transposed = True

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """The transposed convolution with the sliced weight, bias and groups; output_size as in torch."""
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {self.original_cls.__name__}")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, self._nd, self.dilation
        )
        weight, bias, groups = self.sliced_params()
        conv = _CONV_T[self._nd]
        return conv(input, weight, bias, self.stride, self.padding, output_padding, groups, self.dilation)


def _cpu_index(index: torch.Tensor | None, size: int) -> torch.Tensor:
    return torch.arange(size) if index is None else index


def _short(values: torch.Tensor, limit: int = 8) -> str:
    items = values.tolist()
    return str(items) if len(items) <= limit else f"{items[:limit]} ... ({len(items)} groups)"


@register(nn.Conv1d)
class DynamicConv1d(_DynamicConvNd, nn.Conv1d):
    """Sliceable nn.Conv1d."""

    _nd = 1


@register(nn.Conv2d)
class DynamicConv2d(_DynamicConvNd, nn.Conv2d):
    """Sliceable nn.Conv2d."""

    _nd = 2


@register(nn.Conv3d)
class DynamicConv3d(_DynamicConvNd, nn.Conv3d):
    """Sliceable nn.Conv3d."""

    _nd = 3


@register(nn.ConvTranspose1d)
class DynamicConvTranspose1d(_DynamicConvTransposeNd, nn.ConvTranspose1d):
    """Sliceable nn.ConvTranspose1d."""

    _nd = 1


@register(nn.ConvTranspose2d)
class DynamicConvTranspose2d(_DynamicConvTransposeNd, nn.ConvTranspose2d):
    """Sliceable nn.ConvTranspose2d."""

    _nd = 2


@register(nn.ConvTranspose3d)
class DynamicConvTranspose3d(_DynamicConvTransposeNd, nn.ConvTranspose3d):
    """Sliceable nn.ConvTranspose3d."""

    _nd = 3
