"""Built-in --data sources: `imagefolder:DIR` (torchvision's ImageFolder) and `tensors:FILE` (.pt / .npz).

Options follow a `?`, as in a URL: `imagefolder:val?batch=32&mean=0.5,0.5,0.5&std=0.25,0.25,0.25`,
`tensors:calib.pt?batch=64`. Both yield `(inputs, labels)` batches in file order (no shuffling), so the first
--max-batches are the same in every run; a tensors file without labels yields bare input batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch

from nasprune_cli.errors import LoadError, SearchError

DATA_KINDS = ("imagefolder", "tensors")
DEFAULT_BATCH = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # resize the shorter side to this share of the crop, then center-crop (ImageNet eval)
INPUT_KEYS = ("inputs", "x")
LABEL_KEYS = ("labels", "y")
OPTIONS = {"imagefolder": ("batch", "mean", "std"), "tensors": ("batch",)}


@dataclass(frozen=True)
class DataSource:
    """A built-in --data: its spec, file or folder, and options; `batches(dummy_input)` yields its batches."""

    kind: str  # one of DATA_KINDS
    spec: str
    path: Path
    batch_size: int = DEFAULT_BATCH
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def batches(self, dummy_input: Any) -> Iterator[Any]:
        """The batches, made for the model input the dummy input stands for (its H x W and dtype)."""
        if self.kind == "imagefolder":
            return _image_batches(self, dummy_input)
        return _tensor_batches(self, dummy_input)


def data_source(spec: str) -> DataSource | None:
    """The built-in data source a --data value names ("imagefolder:DIR", "tensors:FILE"), None for another value.

    The folder or file is checked here, before the model is built: a LoadError says what is missing."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in DATA_KINDS:
        return None
    where, _, query = rest.partition("?")
    if not where:
        raise LoadError(f"--data '{spec}': no {'folder' if kind == 'imagefolder' else 'file'} after '{kind}:'")
    options = _options(spec, kind, query)
    path = Path(where).expanduser()
    if kind == "imagefolder":
        _check_folder(spec, path)
        return DataSource(
            kind, spec, path, options.get("batch", DEFAULT_BATCH), options.get("mean"), options.get("std")
        )
    return DataSource(kind, spec, path, options.get("batch", DEFAULT_BATCH), tensors=_load_tensors(spec, path))


def _options(spec: str, kind: str, query: str) -> dict[str, Any]:
    allowed = OPTIONS[kind]
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise LoadError(f"--data '{spec}': unknown option '{key}' (expected one of {', '.join(allowed)})")
        try:
            if key == "batch":
                options[key] = int(value)
                if options[key] < 1:
                    raise ValueError
            else:
                options[key] = tuple(float(v) for v in value.split(","))
                if key == "std" and any(v <= 0 for v in options[key]):
                    raise ValueError
        except ValueError:
            expected = "a positive integer" if key == "batch" else "numbers separated by commas (std: positive)"
            raise LoadError(f"--data '{spec}': option {key}={value!r} must be {expected}") from None
    return options


def _check_folder(spec: str, path: Path) -> None:
    if not path.exists():
        raise LoadError(
            f"--data '{spec}': folder '{path}' does not exist; expected a folder with one subfolder per class"
        )
    if not path.is_dir():
        raise LoadError(f"--data '{spec}': '{path}' is not a folder; expected a folder with one subfolder per class")
    if not any(p.is_dir() for p in path.iterdir()):
        raise LoadError(
            f"--data '{spec}': folder '{path}' has no class subfolders; expected DIR/<class>/<image> files "
            "(ImageFolder layout)"
        )


def _image_shape(spec: str, dummy_input: Any) -> tuple[int, int, int]:
    """(channels, height, width) of a single image input, from the dummy input."""
    if not isinstance(dummy_input, torch.Tensor) or dummy_input.dim() != 4 or dummy_input.shape[1] not in (1, 3):
        found = list(dummy_input.shape) if isinstance(dummy_input, torch.Tensor) else type(dummy_input).__name__
        raise SearchError(
            f"--data '{spec}': images need one input of shape N,C,H,W with C 1 or 3 (got {found}); set --input-shape"
        )
    return int(dummy_input.shape[1]), int(dummy_input.shape[2]), int(dummy_input.shape[3])


def _image_batches(source: DataSource, dummy_input: Any) -> Iterator[Any]:
    """ImageFolder batches: resized, center-cropped to H x W, normalized, in the dummy input's dtype."""
    from torchvision import datasets, transforms

    channels, height, width = _image_shape(source.spec, dummy_input)
    mean = source.mean or (IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,))
    std = source.std or (IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,))
    if len(mean) != channels or len(std) != channels:
        raise SearchError(
            f"--data '{source.spec}': mean and std need {channels} value(s), one per input channel "
            f"(got {len(mean)} and {len(std)})"
        )
    steps = [transforms.Grayscale(1)] if channels == 1 else []
    steps += [
        transforms.Resize(round(max(height, width) * RESIZE_RATIO)),
        transforms.CenterCrop((height, width)),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ]
    try:
        dataset = datasets.ImageFolder(str(source.path), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:  # no image files in any class folder
        raise LoadError(f"--data '{source.spec}': {exc}") from None
    loader = torch.utils.data.DataLoader(dataset, batch_size=source.batch_size, shuffle=False, num_workers=0)
    for images, labels in loader:
        yield images.to(dummy_input.dtype), labels


def _load_tensors(spec: str, path: Path) -> dict[str, torch.Tensor]:
    """{"inputs", "labels"?} read from a .pt (weights_only) or .npz file, checked."""
    if not path.is_file():
        raise LoadError(f"--data '{spec}': file '{path}' does not exist; expected a .pt or .npz file")
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as npz:
                raw: Any = {key: torch.from_numpy(npz[key]) for key in npz.files}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one error line
        raise LoadError(f"--data '{spec}': cannot read '{path}' ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise LoadError(f"--data '{spec}': '{path}' holds a {type(raw).__name__}, expected a dict of tensors")
    inputs = _pick(spec, path, raw, INPUT_KEYS, required=True)
    labels = _pick(spec, path, raw, LABEL_KEYS, required=False)
    if labels is not None and (labels.dim() != 1 or len(labels) != len(inputs)):
        raise LoadError(
            f"--data '{spec}': '{path}' has {len(inputs)} inputs but labels of shape {list(labels.shape)}; expected "
            f"one label per input, shape [{len(inputs)}]"
        )
    if labels is not None and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
        raise LoadError(f"--data '{spec}': labels must be integer class indices (got {labels.dtype})")
    return {"inputs": inputs} if labels is None else {"inputs": inputs, "labels": labels.long()}


def _pick(spec: str, path: Path, raw: dict, keys: tuple[str, ...], required: bool) -> torch.Tensor | None:
    found = [key for key in keys if key in raw]
    if len(found) > 1:
        raise LoadError(f"--data '{spec}': '{path}' has both '{found[0]}' and '{found[1]}'; keep one")
    if not found:
        if required:
            have = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
            raise LoadError(
                f"--data '{spec}': '{path}' has no key {' or '.join(repr(k) for k in keys)} (its keys: {have}); "
                "expected inputs under 'inputs' (or 'x') and optional labels under 'labels' (or 'y')"
            )
        return None
    value = raw[found[0]]
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or len(value) == 0:
        raise LoadError(f"--data '{spec}': '{path}' key '{found[0]}' must be a non-empty tensor with a batch dim")
    return value


def _tensor_batches(source: DataSource, dummy_input: Any) -> Iterator[Any]:
    """Consecutive slices of the file's tensors; floating inputs cast to the dummy input's dtype."""
    inputs, labels = source.tensors["inputs"], source.tensors.get("labels")
    if isinstance(dummy_input, torch.Tensor) and inputs.is_floating_point() and dummy_input.is_floating_point():
        inputs = inputs.to(dummy_input.dtype)
    for start in range(0, len(inputs), source.batch_size):
        part = inputs[start : start + source.batch_size]
        yield part if labels is None else (part, labels[start : start + source.batch_size])
