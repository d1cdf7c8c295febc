"""The torchvision classification zoo nasprune covers: builder, keyword arguments and input sizes.

`full` is the input size of the coverage table (224, inception_v3: 299); `small` is what the zoo tests use
(maxvit_t is built with 2x2 partitions for it, see `_small_maxvit_t`).
Every model is randomly initialised: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torchvision
from torch import nn

from nasprune_cli.recipe import Recipe, recipe_from_dict, recipe_to_dict


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry."""

    name: str
    small: int
    full: int = 224
    kwargs: dict[str, Any] = field(default_factory=dict)
    small_kwargs: dict[str, Any] = field(default_factory=dict)
    transformer: bool = False
    # the model's stages, each a tuple of module-name prefixes; every stage must have a prunable group
    stages: tuple[tuple[str, ...], ...] = ()
    small_build: Callable[[], nn.Module] | None = None  # the same architecture built for the small input

    def build(self, small: bool = False) -> nn.Module:
        """A randomly initialised model (for the small input where the architecture needs to know it)."""
        if small and self.small_build is not None:
            return self.small_build()
        builder: Callable[..., nn.Module] = getattr(torchvision.models, self.name)
        return builder(**self.kwargs, **(self.small_kwargs if small else {}))

    def entry_point(self) -> str:
        """The `--model` string for the CLI."""
        return f"torchvision.models:{self.name}"


_NO_AUX = {"aux_logits": False, "init_weights": False}


def _seq(prefix: str, *ranges: tuple[int, int]) -> tuple[tuple[str, ...], ...]:
    """Stages made of numbered children: _seq("features", (2, 3), (4, 6)) -> (features.2-3), (features.4-6)."""
    return tuple(tuple(f"{prefix}.{i}" for i in range(lo, hi + 1)) for lo, hi in ranges)


def _named(*names: str) -> tuple[tuple[str, ...], ...]:
    return tuple((n,) for n in names)


def _small_maxvit_t() -> nn.Module:
    """maxvit_t's layers and widths for a 64x64 input: partitions of 2x2 instead of 7x7 (7 needs 224x224)."""
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(64, 64),
        stem_channels=64,
        partition_size=2,
        block_channels=[64, 128, 256, 512],
        block_layers=[2, 2, 5, 2],
        head_dim=32,
        stochastic_depth_prob=0.2,
    )


_RESNET = _named("layer1", "layer2", "layer3", "layer4")

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("resnet18", 32, stages=_RESNET),
        ZooModel("resnet50", 32, stages=_RESNET),
        ZooModel("resnext50_32x4d", 32, stages=_RESNET),
        ZooModel("wide_resnet50_2", 32, stages=_RESNET),
        # stage 1 of the mobile nets (16 channels) is narrower than the default divisor of 32: nothing to prune
        ZooModel("mobilenet_v2", 32, stages=_seq("features", (2, 3), (4, 6), (7, 10), (11, 13), (14, 16), (17, 18))),
        ZooModel("mobilenet_v3_small", 32, stages=_seq("features", (2, 3), (4, 8), (9, 12))),
        ZooModel("mnasnet0_5", 32, stages=_seq("layers", (8, 8), (9, 9), (10, 10), (11, 11), (12, 12), (13, 14))),
        ZooModel("efficientnet_b0", 32, stages=_seq("features", (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 8))),
        ZooModel("efficientnet_v2_s", 32, stages=_seq("features", (2, 2), (3, 3), (4, 4), (5, 5), (6, 7))),
        ZooModel("regnet_y_400mf", 32, stages=_named(*(f"trunk_output.block{i}" for i in range(1, 5)))),
        ZooModel("densenet121", 32, stages=_named(*(f"features.denseblock{i}" for i in range(1, 5)))),
        ZooModel(
            "googlenet",
            64,
            kwargs=_NO_AUX,
            stages=(
                ("inception3a", "inception3b"),
                tuple(f"inception4{c}" for c in "abcde"),
                ("inception5a", "inception5b"),
            ),
        ),
        ZooModel(
            "inception_v3",
            96,
            full=299,
            kwargs=_NO_AUX,
            stages=(
                ("Mixed_5b", "Mixed_5c", "Mixed_5d"),
                tuple(f"Mixed_6{c}" for c in "abcde"),
                ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
            ),
        ),
        ZooModel("shufflenet_v2_x1_0", 32, stages=_named("stage2", "stage3", "stage4")),
        ZooModel("squeezenet1_0", 64, stages=_seq("features", (3, 5), (7, 10), (12, 12))),
        ZooModel("vgg11_bn", 32, stages=_seq("features", (0, 1), (4, 5), (8, 12), (15, 19), (22, 26))),
        ZooModel("alexnet", 64, stages=_seq("features", (0, 0), (3, 3), (6, 10))),
        ZooModel("convnext_tiny", 32, stages=_named("features.1", "features.3", "features.5", "features.7")),
        ZooModel(
            "vit_b_16",
            32,
            small_kwargs={"image_size": 32},
            transformer=True,
            stages=_named(*(f"encoder.layers.encoder_layer_{i}" for i in range(12))),
        ),
        ZooModel("swin_t", 64, transformer=True, stages=_named("features.1", "features.3", "features.5", "features.7")),
        ZooModel(
            "maxvit_t",
            64,
            transformer=True,
            stages=_named("blocks.0", "blocks.1", "blocks.2", "blocks.3"),
            small_build=_small_maxvit_t,
        ),
    ]
}


def stage_counts(entry: ZooModel, hparam_members: dict[str, tuple[str, ...]]) -> list[int]:
    """Per stage, how many width hparams change a layer inside it (members are "layer.side" names)."""
    counts = []
    for prefixes in entry.stages:
        count = 0
        for members in hparam_members.values():
            layers = {m.rsplit(".", 1)[0] for m in members}
            if any(layer == p or layer.startswith(f"{p}.") for layer in layers for p in prefixes):
                count += 1
        counts.append(count)
    return counts


def with_ratios(recipe: Recipe, ratios: list[float]) -> Recipe:
    """The recipe with these width ratios in every rule: the same groups, fewer choices to search."""
    data = recipe_to_dict(recipe)
    for patterns in data["rules"].values():
        for config in (patterns or {}).values():
            for key in ("channels_ratio", "features_ratio"):
                if config and key in config:
                    config[key] = list(ratios)
    return recipe_from_dict(data)
