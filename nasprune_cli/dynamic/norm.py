"""Dynamic normalization layers: BatchNorm, SyncBatchNorm, InstanceNorm, LayerNorm and GroupNorm.

Each mirrors its torch forward on the sliced parameters and buffers. Running statistics are computed on a
sliced copy and written back into the kept positions of the original buffers.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, register, take
from nasprune_cli.dynamic.swap import SlicedState


def _write_back(full: torch.Tensor | None, index: torch.Tensor | None, part: torch.Tensor | None) -> None:
    """Copy updated running stats of the kept positions into the original buffer."""
    if full is None or index is None or part is None:
        return
    with torch.no_grad():
        full.index_copy_(0, index, part)


class _DynamicNormBase(DynamicModule):
    """Shared "features" side of the norms with num_features, weight/bias and optional running stats."""

    def sides(self) -> tuple[str, ...]:
        """("features",)."""
        return ("features",)

    def side_size(self, side: str) -> int:
        """num_features."""
        self._check_side(side)
        return self.num_features

    def _sliced(self) -> tuple[torch.Tensor | None, ...]:
        """(index, weight, bias, running_mean, running_var), sliced; running stats are copies when sliced."""
        index = self.slice_index("features", self._nasprune_device())
        return (
            index,
            take(self.weight, 0, index),
            take(self.bias, 0, index),
            take(self.running_mean, 0, index),
            take(self.running_var, 0, index),
        )

    def sliced_state(self) -> SlicedState:
        """The sliced weight, bias and running stats and the active num_features (a subclass's forward runs on it)."""
        _, weight, bias, mean, var = self._sliced()
        tensors = {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var}
        return tensors, {"num_features": self.active_size("features")}

    def _after_forward(self, tensors: dict[str, torch.Tensor | None]) -> None:
        """Running statistics the forward updated in the sliced copies go back to the kept positions."""
        index = self.slice_index("features", self._nasprune_device())
        _write_back(self.running_mean, index, tensors["running_mean"])
        _write_back(self.running_var, index, tensors["running_var"])

    def _norm_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "num_features": self.active_size("features"),
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }
        if self.affine and self.bias is None:
            kwargs["bias"] = False
        return kwargs

    def export(self) -> nn.Module:
        """A plain layer of the original class with the active features and sliced parameters and stats."""
        with torch.no_grad():
            _, weight, bias, mean, var = self._sliced()
            tensors = {
                "weight": weight,
                "bias": bias,
                "running_mean": mean,
                "running_var": var,
                "num_batches_tracked": getattr(self, "num_batches_tracked", None),
            }
            return self._build_plain(self._norm_kwargs(), tensors)


class _DynamicBatchNormBase(_DynamicNormBase):
    def _momentum_factor(self) -> float:
        """torch's exponential_average_factor; increments num_batches_tracked when training with stats."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return factor

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch's BatchNorm forward on the sliced features (running stats of kept features updated in place)."""
        self._check_input_dim(input)
        factor = self._momentum_factor()
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        index, weight, bias, mean, var = self._sliced()
        if self.training and not self.track_running_stats:
            mean = var = None
        out = F.batch_norm(input, mean, var, weight, bias, bn_training, factor, self.eps)
        if bn_training:
            _write_back(self.running_mean, index, mean)
            _write_back(self.running_var, index, var)
        return out


@register(nn.BatchNorm1d)
class DynamicBatchNorm1d(_DynamicBatchNormBase, nn.BatchNorm1d):
    """Sliceable nn.BatchNorm1d."""


@register(nn.BatchNorm2d)
class DynamicBatchNorm2d(_DynamicBatchNormBase, nn.BatchNorm2d):
    """Sliceable nn.BatchNorm2d."""


@register(nn.BatchNorm3d)
class DynamicBatchNorm3d(_DynamicBatchNormBase, nn.BatchNorm3d):
    """Sliceable nn.BatchNorm3d."""


@register(nn.SyncBatchNorm)
class DynamicSyncBatchNorm(_DynamicBatchNormBase, nn.SyncBatchNorm):
    """Sliceable nn.SyncBatchNorm: synchronizes like torch when distributed, else a plain batch norm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch's SyncBatchNorm forward on the sliced features."""
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        local = getattr(self, "_nasprune_local_stats", False)  # set by recalibrate_bn: ranks run other batches
        need_sync = self.training and not local and dist.is_available() and dist.is_initialized()
        if need_sync:
            if input.device.type not in ("cuda", "hpu", "xpu", torch._C._get_privateuse1_backend_name()):
                raise ValueError(
                    "SyncBatchNorm expected input tensor to be on GPU or XPU or "
                    f"{torch._C._get_privateuse1_backend_name()}"
                )
            group = self.process_group or dist.group.WORLD
            world_size = dist.get_world_size(group)
            need_sync = world_size > 1
        if not need_sync:
            return super().forward(input)
        from torch.nn.modules._functions import SyncBatchNorm as sync_batch_norm

        factor = self._momentum_factor()
        index, weight, bias, mean, var = self._sliced()
        if not self.track_running_stats:
            mean = var = None
        out = sync_batch_norm.apply(input, weight, bias, mean, var, self.eps, factor, group, world_size)
        _write_back(self.running_mean, index, mean)
        _write_back(self.running_var, index, var)
        return out

    def _norm_kwargs(self) -> dict[str, Any]:
        return {**super()._norm_kwargs(), "process_group": self.process_group}


class _DynamicInstanceNormBase(_DynamicNormBase):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch's InstanceNorm forward on the sliced features (unbatched inputs too)."""
        self._check_input_dim(input)
        feature_dim = input.dim() - self._get_no_batch_dim()
        n_features = self.active_size("features")
        if input.size(feature_dim) != n_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match num_features"
                    f" ({n_features}), but got: {input.size(feature_dim)}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. You can silence this "
                "warning by not passing in num_features, which is not used because affine=False",
                stacklevel=2,
            )
        unbatched = input.dim() == self._get_no_batch_dim()
        x = input.unsqueeze(0) if unbatched else input
        index, weight, bias, mean, var = self._sliced()
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        out = F.instance_norm(x, mean, var, weight, bias, use_input_stats, momentum, self.eps)
        if use_input_stats:
            _write_back(self.running_mean, index, mean)
            _write_back(self.running_var, index, var)
        return out.squeeze(0) if unbatched else out


@register(nn.InstanceNorm1d)
class DynamicInstanceNorm1d(_DynamicInstanceNormBase, nn.InstanceNorm1d):
    """Sliceable nn.InstanceNorm1d."""


@register(nn.InstanceNorm2d)
class DynamicInstanceNorm2d(_DynamicInstanceNormBase, nn.InstanceNorm2d):
    """Sliceable nn.InstanceNorm2d."""


@register(nn.InstanceNorm3d)
class DynamicInstanceNorm3d(_DynamicInstanceNormBase, nn.InstanceNorm3d):
    """Sliceable nn.InstanceNorm3d."""


@register(nn.LayerNorm)
class DynamicLayerNorm(DynamicModule, nn.LayerNorm):
    """Sliceable nn.LayerNorm over its last dim (only when it normalizes a single dim)."""

    def sides(self) -> tuple[str, ...]:
        """("features",)."""
        return ("features",)

    def side_size(self, side: str) -> int:
        """The size of the (last) normalized dim."""
        self._check_side(side)
        return self.normalized_shape[-1]

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        if len(self.normalized_shape) != 1:
            raise self._nasprune_error(
                f"set_index({side!r}): LayerNorm over {len(self.normalized_shape)} dims cannot be sliced "
                f"(normalized_shape={tuple(self.normalized_shape)})"
            )

    def _sliced(self) -> tuple[tuple[int, ...], torch.Tensor | None, torch.Tensor | None]:
        index = self.slice_index("features", self._nasprune_device())
        shape = tuple(self.normalized_shape) if index is None else (int(index.numel()),)
        return shape, take(self.weight, 0, index), take(self.bias, 0, index)

    def sliced_state(self) -> SlicedState:
        """The sliced weight and bias and the active normalized_shape (a subclass's own forward runs on it)."""
        shape, weight, bias = self._sliced()
        return {"weight": weight, "bias": bias}, {"normalized_shape": shape}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """F.layer_norm over the kept features."""
        shape, weight, bias = self._sliced()
        return F.layer_norm(input, shape, weight, bias, self.eps)

    def export(self) -> nn.Module:
        """A plain nn.LayerNorm with the active features."""
        with torch.no_grad():
            shape, weight, bias = self._sliced()
            kwargs = {
                "normalized_shape": shape,
                "eps": self.eps,
                "elementwise_affine": self.elementwise_affine,
                "bias": self.bias is not None,
            }
            return self._build_plain(kwargs, {"weight": weight, "bias": bias})


@register(nn.GroupNorm)
class DynamicGroupNorm(DynamicModule, nn.GroupNorm):
    """Sliceable nn.GroupNorm: the kept channel count must stay divisible by num_groups."""

    def sides(self) -> tuple[str, ...]:
        """("channels",)."""
        return ("channels",)

    def side_size(self, side: str) -> int:
        """num_channels."""
        self._check_side(side)
        return self.num_channels

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        if index.numel() % self.num_groups:
            raise self._nasprune_error(
                f"set_index({side!r}): the kept channel count {index.numel()} is not divisible by "
                f"num_groups={self.num_groups}; keep a multiple of {self.num_groups} channels"
            )

    def _sliced(self) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        index = self.slice_index("channels", self._nasprune_device())
        n = self.num_channels if index is None else int(index.numel())
        return n, take(self.weight, 0, index), take(self.bias, 0, index)

    def sliced_state(self) -> SlicedState:
        """The sliced weight and bias and the active num_channels (a subclass's own forward runs on it)."""
        n, weight, bias = self._sliced()
        return {"weight": weight, "bias": bias}, {"num_channels": n}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """F.group_norm over the kept channels."""
        _, weight, bias = self._sliced()
        return F.group_norm(input, self.num_groups, weight, bias, self.eps)

    def export(self) -> nn.Module:
        """A plain nn.GroupNorm with the active channels."""
        with torch.no_grad():
            n, weight, bias = self._sliced()
            kwargs: dict[str, Any] = {
                "num_groups": self.num_groups,
                "num_channels": n,
                "eps": self.eps,
                "affine": self.affine,
            }
            if self.affine and self.bias is None:
                kwargs["bias"] = False
            return self._build_plain(kwargs, {"weight": weight, "bias": bias})
