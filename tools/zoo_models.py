"""The torchvision classification zoo nasprune covers: builder, keyword arguments and input sizes.

`full` is the input size of the coverage table (224, inception_v3: 299); `small` is what the zoo tests use.
Every model is randomly initialised: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torchvision
from torch import nn


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry."""

    name: str
    small: int
    full: int = 224
    kwargs: dict[str, Any] = field(default_factory=dict)
    small_kwargs: dict[str, Any] = field(default_factory=dict)
    transformer: bool = False

    def build(self, small: bool = False) -> nn.Module:
        """A randomly initialised model (for the small input where the architecture needs to know it)."""
        builder: Callable[..., nn.Module] = getattr(torchvision.models, self.name)
        return builder(**self.kwargs, **(self.small_kwargs if small else {}))

    def entry_point(self) -> str:
        """The `--model` string for the CLI."""
        return f"torchvision.models:{self.name}"


_NO_AUX = {"aux_logits": False, "init_weights": False}

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("resnet18", 32),
        ZooModel("resnet50", 32),
        ZooModel("resnext50_32x4d", 32),
        ZooModel("wide_resnet50_2", 32),
        ZooModel("mobilenet_v2", 32),
        ZooModel("mobilenet_v3_small", 32),
        ZooModel("mnasnet0_5", 32),
        ZooModel("efficientnet_b0", 32),
        ZooModel("efficientnet_v2_s", 32),
        ZooModel("regnet_y_400mf", 32),
        ZooModel("densenet121", 32),
        ZooModel("googlenet", 64, kwargs=_NO_AUX),
        ZooModel("inception_v3", 96, full=299, kwargs=_NO_AUX),
        ZooModel("shufflenet_v2_x1_0", 32),
        ZooModel("squeezenet1_0", 64),
        ZooModel("vgg11_bn", 32),
        ZooModel("alexnet", 64),
        ZooModel("convnext_tiny", 32),
        ZooModel("vit_b_16", 32, small_kwargs={"image_size": 32}, transformer=True),
        ZooModel("swin_t", 64, transformer=True),
        ZooModel("maxvit_t", 224, transformer=True),
    ]
}
