"""The torchvision detection and segmentation models nasprune covers: builder, keyword arguments, inputs, and which
parts must have prunable groups (backbone, FPN / decoder) or may stay frozen (the heads' output convs).

Every model is randomly initialised (weights=None, weights_backbone=None): nothing is downloaded. Segmentation
models take a tensor and return a dict; detectors run in eval mode on a list of images and return a list of dicts.
A detector's box-head FLOPs depend on how many proposals and detections survive its thresholds and NMS, which the
weights decide; so the detectors are built with the score thresholds at 0 and the NMS IoU thresholds at 1.0 (NMS
keeps every box): the counts are then the fixed caps (proposals, detections per image), the same for the original,
every subnet and the export, and FLOPs are counted (fvcore, one per multiply-add) at those caps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

_NO_WEIGHTS = {"weights": None, "weights_backbone": None}
_RCNN = {"rpn_nms_thresh": 1.0, "box_score_thresh": 0.0, "box_nms_thresh": 1.0}
_ONE_STAGE = {"score_thresh": 0.0, "nms_thresh": 1.0}


@dataclass(frozen=True)
class DenseModel:
    """One detection or segmentation entry."""

    name: str
    task: str  # "segmentation" | "detection"
    small: int  # input size of the zoo tests
    full: int  # input size of the coverage table
    kwargs: dict[str, Any] = field(default_factory=dict)
    small_kwargs: dict[str, Any] = field(default_factory=dict)  # smaller caps for the zoo tests
    stages: tuple[tuple[str, ...], ...] = ()  # (backbone, neck / decoder): each must have a prunable group
    heads: tuple[str, ...] = ()  # module prefixes whose layers may stay frozen (the output convs)
    sized: bool = True  # detectors resize their images to min_size / max_size: set to the input size

    def build(self, small: bool = False) -> nn.Module:
        """A randomly initialised model in eval mode."""
        package = torchvision.models.segmentation if self.task == "segmentation" else torchvision.models.detection
        builder: Callable[..., nn.Module] = getattr(package, self.name)
        size = self.small if small else self.full
        extra = {"min_size": size, "max_size": size} if self.task == "detection" and self.sized else {}
        return builder(**_NO_WEIGHTS, **self.kwargs, **extra, **(self.small_kwargs if small else {})).eval()

    def dummy_input(self, small: bool = False, seed: int = 1) -> Any:
        """A tensor batch of one (segmentation) or a tuple holding a list of one image (detection)."""
        size = self.small if small else self.full
        gen = torch.Generator().manual_seed(seed)
        if self.task == "segmentation":
            return torch.randn(1, 3, size, size, generator=gen)
        return ([torch.rand(3, size, size, generator=gen)],)

    def search_data(self, small: bool = False, images: int = 2) -> list[Any] | None:
        """Detectors: one batch of `images` random images (a random batch nasprune draws for a list input holds 8
        images: each search would take about four times as long on two cores); None otherwise."""
        if self.task != "detection":
            return None
        size = self.small if small else self.full
        gen = torch.Generator().manual_seed(2)
        return [([torch.rand(3, size, size, generator=gen) for _ in range(images)],)]


_RCNN_SMALL = {"rpn_post_nms_top_n_test": 50, "box_detections_per_img": 10}
_FPN = ("backbone.fpn",)

DENSE: dict[str, DenseModel] = {
    m.name: m
    for m in [
        DenseModel(
            "lraspp_mobilenet_v3_large",
            "segmentation",
            64,
            224,
            stages=(("backbone",), ("classifier.cbr", "classifier.scale")),
            heads=("classifier.low_classifier", "classifier.high_classifier"),
        ),
        DenseModel(
            "deeplabv3_mobilenet_v3_large",
            "segmentation",
            64,
            224,
            stages=(("backbone",), ("classifier.0",)),
            heads=("classifier.4",),
        ),
        DenseModel(
            "fcn_resnet50", "segmentation", 64, 224, stages=(("backbone",), ("classifier.0",)), heads=("classifier.4",)
        ),
        DenseModel(
            "fasterrcnn_mobilenet_v3_large_fpn",
            "detection",
            128,
            320,
            kwargs=_RCNN,
            small_kwargs=_RCNN_SMALL,
            stages=(("backbone.body",), _FPN),
            heads=("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor"),
        ),
        DenseModel(
            "fasterrcnn_resnet50_fpn",
            "detection",
            128,
            320,
            kwargs=_RCNN,
            small_kwargs=_RCNN_SMALL,
            stages=(("backbone.body",), _FPN),
            heads=("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor"),
        ),
        DenseModel(
            "maskrcnn_resnet50_fpn",
            "detection",
            128,
            320,
            kwargs=_RCNN,
            small_kwargs=_RCNN_SMALL,
            stages=(("backbone.body",), _FPN),
            heads=("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor", "roi_heads.mask_predictor"),
        ),
        DenseModel(
            "keypointrcnn_resnet50_fpn",
            "detection",
            128,
            320,
            kwargs=_RCNN,
            small_kwargs=_RCNN_SMALL,
            stages=(("backbone.body",), _FPN),
            heads=(
                "rpn.head.cls_logits",
                "rpn.head.bbox_pred",
                "roi_heads.box_predictor",
                "roi_heads.keypoint_predictor",
            ),
        ),
        DenseModel(
            "retinanet_resnet50_fpn",
            "detection",
            128,
            320,
            kwargs=_ONE_STAGE,
            small_kwargs={"detections_per_img": 10},
            stages=(("backbone.body",), _FPN),
            heads=("head.classification_head.cls_logits", "head.regression_head.bbox_reg"),
        ),
        DenseModel(
            "fcos_resnet50_fpn",
            "detection",
            128,
            320,
            kwargs=_ONE_STAGE,
            small_kwargs={"detections_per_img": 10},
            stages=(("backbone.body",), _FPN),
            heads=(
                "head.classification_head.cls_logits",
                "head.regression_head.bbox_reg",
                "head.regression_head.bbox_ctrness",
            ),
        ),
        DenseModel(
            "ssdlite320_mobilenet_v3_large",
            "detection",
            320,
            320,
            kwargs=_ONE_STAGE,
            small_kwargs={"detections_per_img": 10},
            stages=(("backbone.features.0",), ("backbone.extra",)),
            heads=("head.classification_head", "head.regression_head"),
            sized=False,
        ),
    ]
}
