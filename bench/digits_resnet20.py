"""The quality benchmark's task: a CIFAR-style ResNet20 on scikit-learn's digits (bundled, no download).

Digits (1797 8x8 grey images, 10 classes) are used at their native 8x8 (upsampling to 32x32 makes training 16x
slower on two CPU cores for no change in the comparison) and split 60/20/20 (stratified, seed 0) into
train / val / test. The val split drives every search's score function; the test split is only reported.
Everything here is deterministic for a fixed seed on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

SIZE = 8  # digits are 8x8; any other size upsamples them (bilinear)
NUM_CLASSES = 10
SEED = 0


@dataclass(frozen=True)
class Splits:
    """Normalized image tensors (N, 1, SIZE, SIZE) and int64 labels for the three splits."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_splits(seed: int = SEED) -> Splits:
    """Digits at SIZE x SIZE, standardized with train statistics, split 60/20/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if SIZE != 8:
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = list(range(len(y)))
    idx_train, idx_rest = train_test_split(idx, test_size=0.4, random_state=seed, stratify=y.numpy())
    idx_val, idx_test = train_test_split(idx_rest, test_size=0.5, random_state=seed, stratify=y[idx_rest].numpy())
    mean, std = x[idx_train].mean(), x[idx_train].std()
    x = (x - mean) / std
    t = torch.tensor
    return Splits(x[t(idx_train)], y[t(idx_train)], x[t(idx_val)], y[t(idx_val)], x[t(idx_test)], y[t(idx_test)])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int | None = None) -> Iterator[tuple]:
    """(images, labels) mini-batches; shuffled with a fixed generator when a seed is given."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)) if seed is not None else None
    for i in range(0, len(y), batch_size):
        sel = order[i : i + batch_size] if order is not None else slice(i, i + batch_size)
        yield x[sel], y[sel]


def calib_batches(splits: Splits, num_batches: int = 8, batch_size: int = 64) -> list[torch.Tensor]:
    """The fixed BN-calibration batches (images only) every method gets: the first train batches, seed 1."""
    out = []
    for i, (xb, _) in enumerate(batches(splits.x_train, splits.y_train, batch_size, seed=1)):
        if i >= num_batches:
            break
        out.append(xb)
    return out


# ---- model -------------------------------------------------------------------------------------------------
class ResNet20(nn.Module):
    """CIFAR ResNet20 (He et al. 2016): 3 stages x 3 torchvision BasicBlocks, widths 16/32/64, 1x1-conv shortcuts."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, widths: tuple = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], widths[0]
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(3):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = None
                if stride != 1 or inplanes != planes:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                    )
                blocks.append(BasicBlock(inplanes, planes, stride, downsample))
                inplanes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def dummy_input() -> torch.Tensor:
    """The input every method traces / counts FLOPs on (batch 1)."""
    return torch.zeros(1, 1, SIZE, SIZE)


# ---- training / evaluation ---------------------------------------------------------------------------------
def train(
    model: nn.Module,
    splits: Splits,
    epochs: int,
    lr: float,
    seed: int = SEED,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
) -> nn.Module:
    """SGD + momentum with a cosine schedule; small random shifts as augmentation; deterministic for a seed."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps = epochs * math.ceil(len(splits.y_train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        for xb, yb in batches(splits.x_train, splits.y_train, batch_size, seed=seed * 1000 + epoch):
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def fine_tune(model: nn.Module, splits: Splits, epochs: int = 2, lr: float = 0.02, seed: int = SEED) -> nn.Module:
    """The short fine-tune every pruned model gets (same epochs, lr, seed and batch order)."""
    return train(model, splits, epochs=epochs, lr=lr, seed=seed + 100)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (training flag restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / len(y)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, calib: Iterable[torch.Tensor]) -> nn.Module:
    """Reset BatchNorm running statistics and re-estimate them (cumulative average) on the calibration batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for xb in calib:
        model(xb)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model


class CountingScore:
    """A score function (model -> float, higher is better) that counts its calls and their time."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        start = time.perf_counter()
        try:
            return float(self.fn(model))
        finally:
            self.seconds += time.perf_counter() - start


def val_score(splits: Splits):
    """The search score every method maximizes: validation accuracy (the model is put in eval mode)."""

    def score(model: nn.Module) -> float:
        model.eval()
        return accuracy(model, splits.x_val, splits.y_val)

    return score


def trained_model(splits: Splits, epochs: int = 12, seed: int = SEED) -> tuple[nn.Module, float]:
    """The trained baseline (fixed seed, CPU) and its training seconds."""
    torch.manual_seed(seed)
    model = ResNet20()
    start = time.perf_counter()
    train(model, splits, epochs=epochs, lr=0.1, seed=seed)
    return model, time.perf_counter() - start


def clone(model: nn.Module) -> nn.Module:
    """An independent copy (each method prunes its own copy of the baseline)."""
    return copy.deepcopy(model)
