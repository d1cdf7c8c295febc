"""Toy models, one per topology the tracer must handle; contract tests are parametrized over TOYS."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    """conv-bn-relu."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(3, 64), cbr(64, 96), cbr(96, 64))
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.a = nn.Sequential(cbr(64, 64), nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.b = nn.Sequential(cbr(64, 96), nn.Conv2d(96, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.a(x))
        x = x * 1.0 + self.b(x)  # a second residual, with a scalar op in between
        x = x.mean((2, 3))
        return self.fc(x)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.left = cbr(64, 64)
        self.right = cbr(64, 96)
        self.fuse = cbr(64 + 96 + 64, 64, k=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x), x], dim=1)
        return self.fc(F.adaptive_avg_pool2d(self.fuse(x), 1).flatten(1))


class Split(nn.Module):
    """chunk on the channel dim (frozen) next to prunable inner channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 128)
        self.branch = nn.Sequential(cbr(64, 96), cbr(96, 64))
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], dim=1)
        return self.fc(y.mean((2, 3)))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = cbr(3, 96, k=1)
        self.dw = cbr(96, 96, groups=96)
        self.project = nn.Sequential(nn.Conv2d(96, 64, 1, bias=False), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.project(self.dw(self.expand(x))).mean((2, 3)))


class DepthwiseMultiplier(nn.Module):
    """MobileOne-style: two depthwise convs with channel multiplier 2 (3x3 and 1x1, with bias) added; output channel
    j of each reads input channel j // 2. A 1x1 conv added to their sum (MobileOneBlock's identity branch) has its
    channels 2i and 2i + 1 tied."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.dw3 = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1, groups=64), nn.BatchNorm2d(128))
        self.dw1 = nn.Sequential(nn.Conv2d(64, 128, 1, groups=64), nn.BatchNorm2d(128))
        self.mix = nn.Sequential(nn.Conv2d(128, 128, 1, bias=False), nn.BatchNorm2d(128))
        self.project = cbr(128, 48, k=1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.relu(self.dw3(x) + self.dw1(x))
        return self.fc(self.project(y + self.mix(y)).mean((2, 3)))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.grouped = cbr(64, 128, groups=4)
        self.mid = cbr(128, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mid(self.grouped(self.stem(x))).mean((2, 3)))


class GroupedUniform(nn.Module):
    """ResNeXt-style: a grouped 3x3 between 1x1s; both of its sides shrink by the same count per group."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = cbr(3, 128, k=1)
        self.grouped = cbr(128, 128, groups=4)
        self.expand = nn.Sequential(nn.Conv2d(128, 64, 1), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.expand(self.grouped(self.reduce(x))).mean((2, 3)))


class Shared(nn.Module):
    """One conv applied twice (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.shared = nn.Conv2d(64, 64, 3, padding=1)
        self.mid = cbr(64, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.shared(x))
        x = F.relu(self.shared(x))
        return self.fc(self.mid(x).amax((2, 3)))


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(3, 64), nn.MaxPool2d(2), cbr(64, 64), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(64 * 4, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 96)
        self.fc1 = nn.Conv2d(96, 64, 1)
        self.fc2 = nn.Conv2d(64, 96, 1)
        self.out = nn.Conv2d(96, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.out(x * s).mean((2, 3))


class PadChannels(nn.Module):
    """CIFAR ResNet 'option A' shortcut: stride-2 subsample and zero-pad the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.body = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64))
        self.inner = cbr(64, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 16, 16))
        y = F.relu(self.body(x) + short)
        return self.fc(self.inner(y).mean((2, 3)))


class Shuffle(nn.Module):
    """Channel shuffle (view/transpose/view) after a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.branch = nn.Sequential(cbr(64, 96, k=1), cbr(96, 64, k=1))
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.branch(x)], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(x.mean((2, 3)))


class Attention(nn.Module):
    """A transformer block: prunable MLP hidden, heads split by view (frozen), LayerNorm on the stream."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(16, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp(self.norm2(x))
        return self.head(x[:, 0])


class Windowed(nn.Module):
    """MaxViT-style window partition: the model reads its channel count and reshapes with it (still prunable)."""

    def __init__(self, p: int = 4) -> None:
        super().__init__()
        self.p = p
        self.stem = cbr(3, 64)
        self.norm = nn.LayerNorm(64)
        self.mlp = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        p = self.p
        y = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p, c)
        y = y + self.mlp(self.norm(y))
        _, _, _, c2 = y.shape
        y = y.reshape(b, h // p, w // p, p, p, c2).permute(0, 5, 1, 3, 2, 4).reshape(b, c2, h, w)
        return self.head(y.mean((2, 3)))


class TinyConvNeXt(nn.Module):
    """ConvNeXt-style: torchvision's LayerNorm2d and CNBlock (per-channel layer_scale) on a residual stream."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.convnext import CNBlock, LayerNorm2d

        self.stem = nn.Sequential(nn.Conv2d(3, 64, 2, stride=2), LayerNorm2d(64, eps=1e-6))
        self.stage1 = nn.Sequential(CNBlock(64, 0.5, 0.0), CNBlock(64, 0.5, 0.0))
        self.down = nn.Sequential(LayerNorm2d(64, eps=1e-6), nn.Conv2d(64, 96, 2, stride=2))
        self.stage2 = CNBlock(96, 0.5, 0.0)
        self.head = nn.Sequential(LayerNorm2d(96), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10))
        with torch.no_grad():  # distinct scales per channel, so that a wrong slice shows
            for block in (*self.stage1, self.stage2):
                block.layer_scale.copy_(torch.rand(block.layer_scale.shape) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


class Norms(nn.Module):
    """GroupNorm, InstanceNorm and 1-d / 3-d / transposed convs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 64, 3, padding=1)
        self.in1 = nn.InstanceNorm1d(64, affine=True)
        self.c2 = nn.Conv1d(64, 64, 3, padding=1)
        self.gn = nn.GroupNorm(4, 64)
        self.up = nn.ConvTranspose1d(64, 96, 2, stride=2)
        self.bn = nn.BatchNorm1d(96)
        self.c3 = nn.Conv3d(1, 8, 3, padding=1)
        self.out = nn.Linear(96 + 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.c1(x)))
        y = F.relu(self.gn(self.c2(y)))
        y = F.relu(self.bn(self.up(y))).mean(-1)
        z = self.c3(x.unsqueeze(1).unsqueeze(-1).expand(-1, -1, -1, -1, 2)).mean((2, 3, 4))
        return self.out(torch.cat([y, z], 1))


TOYS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "chain": (Chain, (2, 3, 16, 16)),
    "residual": (Residual, (2, 3, 16, 16)),
    "concat": (Concat, (2, 3, 16, 16)),
    "split": (Split, (2, 3, 16, 16)),
    "depthwise": (Depthwise, (2, 3, 16, 16)),
    "depthwise_multiplier": (DepthwiseMultiplier, (2, 3, 16, 16)),
    "grouped": (Grouped, (2, 3, 16, 16)),
    "shared": (Shared, (2, 3, 16, 16)),
    "flatten_linear": (FlattenLinear, (2, 3, 16, 16)),
    "squeeze_excite": (SqueezeExcite, (2, 3, 16, 16)),
    "pad_channels": (PadChannels, (2, 3, 16, 16)),
    "shuffle": (Shuffle, (2, 3, 16, 16)),
    "attention": (Attention, (2, 8, 16)),
    "norms": (Norms, (2, 3, 32)),
    "windowed": (Windowed, (2, 3, 16, 16)),
    "convnext": (TinyConvNeXt, (2, 3, 16, 16)),
    "grouped_uniform": (GroupedUniform, (2, 3, 16, 16)),
}


class TiedConvs(nn.Module):
    """Two convs holding one weight Parameter (weight tying between distinct layers, not one layer called twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.a = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.b = nn.Conv2d(64, 64, 3, padding=1)
        self.b.weight = self.a.weight
        self.mid = cbr(64, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.bn(self.a(x)))
        x = F.relu(self.b(x))
        return self.fc(self.mid(x).mean((2, 3)))


class Gate(nn.Module):
    """Picks one of two paths by the sign of its input's mean: data-dependent control flow."""

    def __init__(self, cin: int, cout: int, read: str = "bool") -> None:
        super().__init__()
        self.read = read
        self.a = cbr(cin, cout)
        self.b = nn.Sequential(cbr(cin, cout // 2), cbr(cout // 2, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positive = x.mean() > 0 if self.read == "bool" else x.mean().item() > 0
        return self.a(x) if positive else self.b(x)


class DataDependent(nn.Module):
    """A gate on the model input, then a prunable tail."""

    def __init__(self, read: str = "bool") -> None:
        super().__init__()
        self.gate = Gate(3, 64, read)
        self.mid = cbr(64, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mid(self.gate(x)).mean((2, 3)))


class ValueReadsWithoutInput(nn.Module):
    """Reads Python values only from a parameter, a buffer and the input's shape: no data-dependent control flow."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("enabled", torch.ones(1))
        self.body = nn.Sequential(cbr(3, 64), cbr(64, 96))
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = x.new_ones(1).int().item() - int(torch.zeros_like(x).sum())  # 1: values of the input's shape only
        x = self.body(x)
        if self.enabled.sum() > 0 and self.scale.item() > 0:
            x = x * float(self.scale)
        size = int(torch.tensor(x.shape[-1]) // 2) + offset - 1
        return self.fc(F.adaptive_avg_pool2d(x, size).mean((2, 3)))


# ---- channel segments (concat, equal cuts) and a YOLOv8-style detector --------------------------------------------


class ConvBnSiLU(nn.Module):
    """YOLOv8's Conv: conv-bn-SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """YOLOv8's Bottleneck: two 3x3 convs, with a shortcut when asked and the widths allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(c1, c2, 3)
        self.cv2 = ConvBnSiLU(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's CSP block: cv1's output chunked in two, the bottlenecks grown from the second half, all concatenated."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = ConvBnSiLU(c1, 2 * self.c)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """YOLOv8's spatial pyramid pooling: one max-pool applied three times, the four maps concatenated."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(c1, c1 // 2)
        self.cv2 = ConvBnSiLU(c1 // 2 * 4, c2)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class C2fBlock(nn.Module):
    """(a) a C2f block with shortcuts between a stem and a pooled classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnSiLU(3, 64, 3)
        self.c2f = C2f(64, 128, n=2, shortcut=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2f(self.stem(x)).mean((2, 3)))


class ConcatSE(nn.Module):
    """(b) squeeze-and-excitation after a concat: fc2's output channels are the two branches' segments."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.b1 = cbr(64, 64)
        self.b2 = cbr(64, 96)
        self.fc1 = nn.Conv2d(160, 64, 1)
        self.fc2 = nn.Conv2d(64, 160, 1)
        self.out = cbr(160, 64, k=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b2(x)], 1)
        x = x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.fc(self.out(x).mean((2, 3)))


class EqualSplit(nn.Module):
    """(c) equal splits whose sizes the model computes from the tensor: split(C // 2) and tensor_split(2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 128)
        self.left = cbr(64, 96)
        self.right = nn.Sequential(cbr(64, 96), nn.Conv2d(96, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.mix = cbr(160, 128, k=1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = torch.split(x, x.shape[1] // 2, dim=1)
        y = torch.cat([self.left(a), b + self.right(b)], 1)  # a residual on one part
        p, q = torch.tensor_split(self.mix(y), 2, dim=1)
        return self.fc(torch.cat([p.mean((2, 3)), q.amax((2, 3))], 1))


class GhostModule(nn.Module):
    """GhostNet's module: half the channels from a conv, half from a cheap depthwise conv of them, sliced to `oup`."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.oup = oup
        init = (oup + 1) // 2
        self.primary = cbr(inp, init, k=1)
        self.cheap = cbr(init, init, k=3, groups=init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary(x)
        x2 = self.cheap(x1)
        return torch.cat([x1, x2], 1)[:, : self.oup]


class Ghost(nn.Module):
    """(d) a concat sliced with a bound fixed at construction: below the cat's size (odd `oup`) it is kept whole (the
    reason names the slice); at the size (even `oup`, as in timm's ghostnet_100) the slice is the identity, and a
    residual conv added to it (GhostBottleneck's shortcut) has its channel i tied to i + oup / 2."""

    def __init__(self, oup: int = 127, residual: bool = False) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.ghost = GhostModule(64, oup)
        self.short = nn.Sequential(nn.Conv2d(64, oup, 1, bias=False), nn.BatchNorm2d(oup)) if residual else None
        self.mid = cbr(oup, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.ghost(x) if self.short is None else self.ghost(x) + self.short(x)
        return self.fc(self.mid(y).mean((2, 3)))


class DetectHead(nn.Module):
    """YOLOv8's Detect head, training form: per level, a box branch and a class branch, concatenated."""

    def __init__(self, channels: tuple[int, ...], classes: int = 8, reg_max: int = 16) -> None:
        super().__init__()
        c2, c3 = max(16, channels[0] // 4, reg_max * 4), max(channels[0], classes)
        self.cv2 = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, c2, 3), ConvBnSiLU(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, c3, 3), ConvBnSiLU(c3, c3, 3), nn.Conv2d(c3, classes, 1)) for c in channels
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat([box(x), cls(x)], 1) for x, box, cls in zip(xs, self.cv2, self.cv3, strict=True)]


class TinyYolo(nn.Module):
    """A YOLOv8-style detector: C2f backbone, SPPF, an upsample / concat PAN neck and a Detect head of convs."""

    def __init__(self, w: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBnSiLU(3, w[0], 3, 2), ConvBnSiLU(w[0], w[1], 3, 2), C2f(w[1], w[1], 1, True))
        self.p3 = nn.Sequential(ConvBnSiLU(w[1], w[2], 3, 2), C2f(w[2], w[2], 2, True))
        self.p4 = nn.Sequential(ConvBnSiLU(w[2], w[3], 3, 2), C2f(w[3], w[3], 2, True))
        self.p5 = nn.Sequential(ConvBnSiLU(w[3], w[3], 3, 2), C2f(w[3], w[3], 1, True), SPPF(w[3], w[3]))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C2f(2 * w[3], w[2])
        self.top3 = C2f(w[2] + w[2], w[1])
        self.down3 = ConvBnSiLU(w[1], w[1], 3, 2)
        self.out4 = C2f(w[1] + w[2], w[2])
        self.down4 = ConvBnSiLU(w[2], w[2], 3, 2)
        self.out5 = C2f(w[2] + w[3], w[3])
        self.detect = DetectHead((w[1], w[2], w[3]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        n3 = self.top3(torch.cat([self.up(t4), p3], 1))
        n4 = self.out4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.out5(torch.cat([self.down4(n4), p5], 1))
        return self.detect([n3, n4, n5])


SEGMENT_TOYS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "c2f": (C2fBlock, (2, 3, 16, 16)),
    "concat_se": (ConcatSE, (2, 3, 16, 16)),
    "equal_split": (EqualSplit, (2, 3, 16, 16)),
    "ghost": (Ghost, (2, 3, 16, 16)),
    "ghost_full": (functools.partial(Ghost, 128, residual=True), (2, 3, 16, 16)),
    "tiny_yolo": (TinyYolo, (1, 3, 32, 32)),
}
