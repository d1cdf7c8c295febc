"""A small ResNet on scikit-learn's 8x8 digits: trained in seconds on first use, then cached.

`build()` returns the trained model, `score(model)` its validation accuracy (a named score, shown as a percent),
`data()` training batches. The digits ship with scikit-learn: nothing is downloaded. The weights are cached under
$XDG_CACHE_HOME/nasprune (or ~/.cache/nasprune), keyed by a hash of the training settings.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune_cli.errors import LoadError
from nasprune_cli.inputs import eval_mode

SETTINGS: dict[str, Any] = {
    "version": 1,
    "width": 32,
    "epochs": 6,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "seed": 0,
    "val_fraction": 0.2,
}
BATCH_SIZE = 64  # batches yielded by data()


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class DigitsResNet(nn.Module):
    """stem (8x8) -> block (8x8) -> block (4x4, twice the width) -> global average pool -> linear."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@lru_cache(maxsize=1)
def _split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, val x, val y): digits scaled to [0, 1], standardised, split with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise LoadError(
            "the demo needs scikit-learn for its digits data set; install it with `pip install 'nasprune[demo]'`"
        ) from exc
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4  # roughly zero mean, unit variance
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SETTINGS["seed"]))
    n_val = int(len(y) * SETTINGS["val_fraction"])
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/nasprune, or ~/.cache/nasprune."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nasprune"


def _cache_path(width: int) -> Path:
    from nasprune_cli.fileio import digest

    return cache_dir() / f"digits-resnet-{digest({**SETTINGS, 'width': width})}.pt"


def train(width: int = SETTINGS["width"]) -> DigitsResNet:
    """Train the demo model from scratch (fixed seed, a few seconds on two CPU cores)."""
    x, y, _, _ = _split()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: a second thread costs more in synchronisation than it saves
    try:
        return _train(x, y, width)
    finally:
        torch.set_num_threads(threads)


def _train(x: torch.Tensor, y: torch.Tensor, width: int) -> DigitsResNet:
    with torch.random.fork_rng():
        torch.manual_seed(SETTINGS["seed"])
        model = DigitsResNet(width)
        gen = torch.Generator().manual_seed(SETTINGS["seed"])
        opt = torch.optim.AdamW(model.parameters(), lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
        steps = SETTINGS["epochs"] * ((len(y) + SETTINGS["batch_size"] - 1) // SETTINGS["batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=SETTINGS["lr"], total_steps=steps)
        model.train()
        for _ in range(SETTINGS["epochs"]):
            perm = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), SETTINGS["batch_size"]):
                idx = perm[i : i + SETTINGS["batch_size"]]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def build(width: int = SETTINGS["width"]) -> DigitsResNet:
    """The trained demo model (eval mode): loaded from the cache, or trained and cached on first use."""
    path = _cache_path(width)
    with torch.random.fork_rng():  # the initial weights are replaced: leave the caller's RNG untouched
        model = DigitsResNet(width)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:  # noqa: BLE001 - a corrupt cache entry is simply rebuilt
            pass
    model = train(width)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(model.state_dict(), f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model


def score(model: nn.Module) -> float:
    """Validation accuracy (0..1, shown as a percent) on the held-out 20% of the digits."""
    _, _, x, y = _split()
    with eval_mode(model), torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# what the score measures, for the summary, the JSON and the progress display (the named-score protocol)
score.name = "validation accuracy (held-out digits)"  # type: ignore[attr-defined]
score.percent = True  # type: ignore[attr-defined]


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches (images, labels) in a fixed order, for BatchNorm recalibration."""
    x, y, _, _ = _split()
    return [(x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE]) for i in range(0, len(y), BATCH_SIZE)]
