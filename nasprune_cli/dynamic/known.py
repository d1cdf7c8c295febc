"""Layers of other libraries registered by qualified name (nothing is imported): how their tensors hold channels.

Each is probed at convert time like any registered layer (dynamic/probe.py) and frozen with the reason if it fails.
"""

from __future__ import annotations

from nasprune_cli.dynamic.spec import LayerSpec

# timm's ScaledStdConv2d has a per-output-channel `gain` its parent nn.Conv2d does not: registered as a whole (groups=1;
# a grouped one fails the probe and stays whole)
_SCALED_STD_CONV = LayerSpec(
    "linear",
    {"weight": {"out": 0, "in": 1}, "bias": {"out": 0}, "gain": {"out": 0}},
    {"in": ("in_channels",), "out": ("out_channels",)},
    1,
)
_RMS_LAST = LayerSpec("channelwise", {"weight": {"features": 0}}, {"features": ("normalized_shape",)}, -1)
_SCALE_LAST = LayerSpec("channelwise", {"gamma": {"features": 0}}, {}, -1)  # x * gamma, channels last
_SCALE_NCHW = LayerSpec("channelwise", {"gamma": {"features": 0}}, {}, 1)  # x * gamma.view(1, -1, 1, 1)

KNOWN_LAYERS: dict[str, LayerSpec] = {
    # HF transformers' GPT-2 linear layer: weight [in, out], nf output features, nx input features
    "transformers.pytorch_utils.Conv1D": LayerSpec(
        "linear", {"weight": {"in": 0, "out": 1}, "bias": {"out": 0}}, {"in": ("nx",), "out": ("nf",)}, -1
    ),
    "timm.layers.std_conv.ScaledStdConv2d": _SCALED_STD_CONV,
    "timm.layers.std_conv.ScaledStdConv2dSame": _SCALED_STD_CONV,
    "timm.layers.layer_scale.LayerScale": _SCALE_LAST,
    "timm.layers.layer_scale.LayerScale2d": _SCALE_NCHW,
    "timm.models.fastvit.LayerScale2d": _SCALE_NCHW,  # gamma [C, 1, 1]
    "timm.models.swiftformer.LayerScale2d": _SCALE_NCHW,
    # RMSNorm over the channels: the root mean square over the kept channels (like LayerNorm's statistics)
    "torch.nn.modules.normalization.RMSNorm": _RMS_LAST,
    "timm.layers.norm.RmsNorm": _RMS_LAST,
    "timm.layers.norm.RmsNorm2d": LayerSpec(
        "channelwise", {"weight": {"features": 0}}, {"features": ("normalized_shape",)}, 1
    ),
    # torchvision's BatchNorm with fixed statistics and affine, all four buffers (detectors' pretrained backbones)
    "torchvision.ops.misc.FrozenBatchNorm2d": LayerSpec(
        "channelwise",
        {
            "weight": {"features": 0},
            "bias": {"features": 0},
            "running_mean": {"features": 0},
            "running_var": {"features": 0},
        },
    ),
    # ConvNeXt-V2's GRN: a per-channel affine of x * (spatial L2 norm / its mean over the channels); the mean over the
    # kept channels is what the export computes too (docs/COVERAGE.md, normalizations over channels)
    "timm.layers.grn.GlobalResponseNorm": LayerSpec(
        "channelwise", {"weight": {"features": 0}, "bias": {"features": 0}}, {}, "channel_dim"
    ),
}
