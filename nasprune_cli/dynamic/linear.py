"""Dynamic nn.Linear: "in" slices weight columns, "out" slices weight rows and the bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.dynamic.base import DynamicModule, register, take
from nasprune_cli.dynamic.swap import SlicedState


@register(nn.Linear)
class DynamicLinear(DynamicModule, nn.Linear):
    """Sliceable nn.Linear."""

    def sides(self) -> tuple[str, ...]:
        """("in", "out")."""
        return ("in", "out")

    def side_size(self, side: str) -> int:
        """in_features or out_features."""
        self._check_side(side)
        return self.in_features if side == "in" else self.out_features

    def sliced_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of the active subnet, computed from the original parameters."""
        device = self.weight.device
        out_index = self.slice_index("out", device)
        weight = take(take(self.weight, 0, out_index), 1, self.slice_index("in", device))
        return weight, take(self.bias, 0, out_index)

    def sliced_state(self) -> SlicedState:
        """The sliced weight and bias and the active in/out features (a subclass's own forward runs on it)."""
        weight, bias = self.sliced_params()
        return {"weight": weight, "bias": bias}, {
            "in_features": self.active_size("in"),
            "out_features": self.active_size("out"),
        }

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """F.linear with the sliced weight and bias."""
        weight, bias = self.sliced_params()
        return F.linear(input, weight, bias)

    def export(self) -> nn.Module:
        """A plain nn.Linear with the active features."""
        with torch.no_grad():
            weight, bias = self.sliced_params()
            kwargs = {
                "in_features": self.active_size("in"),
                "out_features": self.active_size("out"),
                "bias": self.bias is not None,
            }
            return self._build_plain(kwargs, {"weight": weight, "bias": bias})
