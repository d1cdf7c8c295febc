"""What a trace records and the label store the op rules and the layer handlers share while it runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.graph.labels import ChannelBook, ChannelLabels
from nasprune_cli.inputs import tensors_in

# one call of a Sequential's child: (child name, input shape, input labels, output shape, output labels)
ChildCall = tuple[str, tuple[int, ...], ChannelLabels | None, tuple[int, ...], ChannelLabels | None]


@dataclass
class SideRecord:
    """The labels a layer's side (in / out / features / channels) sees: one per position."""

    module: str
    side: str
    vec: torch.Tensor


@dataclass
class CostTerm:
    """factor * prod(kept positions of each vec): FLOPs of one counted op or params of one tensor."""

    factor: float
    vecs: list[torch.Tensor]
    scope: tuple[str, ...] = ()  # enclosing module names, to drop ops inside skipped blocks
    kernel_of: str | None = None  # conv whose kernel_size hparam scales this term
    einsum: bool = False  # fvcore counts this op through numpy's einsum_path, which rounds to 4 digits


@dataclass
class SegmentCut:
    """An op that cut a tensor's channels into equal parts the pruned model computes from the tensor (chunk): each
    part is a segment, and every part must keep the same number of channels."""

    op: str
    where: str
    pieces: list[torch.Tensor]  # the labels of each part, in order


@dataclass
class SequentialCall:
    """Input/output labels and shapes of each child call of a depth-searchable Sequential."""

    name: str
    children: list[ChildCall] = field(default_factory=list)


@dataclass
class Trace:
    """What one traced forward pass found."""

    book: ChannelBook
    sides: dict[tuple[str, str], SideRecord]
    sources: list[SideRecord]  # sides that created channel ids, in call order
    flops: list[CostTerm]
    params: list[CostTerm]
    sequentials: dict[str, SequentialCall]
    layer_info: dict[str, dict[str, Any]]  # module name -> facts (groups, kernel, num_groups ...)
    cuts: list[SegmentCut] = field(default_factory=list)  # equal cuts of channel dims, in call order


class TraceContext:
    """Label store and helpers shared by the op rules and the layer handlers."""

    def __init__(self, model: nn.Module, param_sides: Mapping[type[nn.Module], Mapping[str, int]]) -> None:
        self.book = ChannelBook()
        self._labels: dict[int, tuple[torch.Tensor, ChannelLabels | None]] = {}
        self.names = {id(m): n for n, m in model.named_modules()}
        self.kinds = {n: type(m).__name__ for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.call_inputs: list[list[torch.Tensor]] = []  # the tensor inputs of each module on the stack
        self._from_input: dict[int, torch.Tensor] = {}  # tensors whose values depend on the model's input
        self.value_reads: dict[str, str] = {}  # module -> the first op that read an input-dependent value in it
        self.value_read_touched: set[str] = set()  # modules of value_reads whose freeze held a channel id
        self._channel_values: dict[int, torch.Tensor] = {}  # tensors whose values depend on prunable channels
        # module -> (op, where in the code) of the first read of an input-dependent value no prunable channel reaches
        self.free_reads: dict[str, tuple[str, str]] = {}
        self.ran: set[str] = set()  # modules called during the trace
        self.holders = {n for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None}
        self.suspended = 0
        self.current_func: Callable | None = None
        self.sides: dict[tuple[str, str], SideRecord] = {}
        self.sources: list[SideRecord] = []
        self.flops: list[CostTerm] = []
        self.params: list[CostTerm] = []
        self.layer_info: dict[str, dict[str, Any]] = {}
        self.sequentials: dict[str, SequentialCall] = {}
        self.cuts: list[SegmentCut] = []
        # sliceable parameters of traced modules: id -> (module name, parameter name, channel dim, the parameter)
        self.param_sides: dict[int, tuple[str, str, int, torch.Tensor]] = {}
        for module_name, module in model.named_modules():
            for param_name, dim in param_sides.get(type(module), {}).items():
                param = getattr(module, param_name)
                self.param_sides[id(param)] = (module_name, param_name, dim, param)

    def param_side(self, t: torch.Tensor) -> tuple[str, str, int] | None:
        """(module, parameter name, channel dim) when `t` is a sliceable parameter of a traced module."""
        entry = self.param_sides.get(id(t))
        return entry[:3] if entry is not None and entry[3] is t else None

    def add_param_side(self, t: torch.Tensor, vec: torch.Tensor) -> None:
        """A sliceable parameter meets channels: it keeps the positions they keep (counted once as params)."""
        module, name, _ = self.param_side(t)
        first = (module, name) not in self.sides
        self.add_side(module, name, vec)
        if first:
            self.params.append(CostTerm(float(t.numel() / vec.numel()), [vec]))

    def mark_from_input(self, obj: Any) -> None:
        """Record that the tensors in `obj` (nested) hold values computed from the model's input."""
        for t in tensors_in(obj):
            self._from_input[id(t)] = t

    def mark_channel_values(self, obj: Any) -> None:
        """Record that the tensors in `obj` (nested) hold values computed from prunable channels or a layer."""
        for t in tensors_in(obj):
            self._channel_values[id(t)] = t

    def carries_channels(self, t: torch.Tensor) -> bool:
        """Whether pruning can change a tensor's values: it has channel ids, or was computed from such a tensor."""
        return self.labels_of(t) is not None or self._channel_values.get(id(t)) is t

    def from_input(self, t: torch.Tensor) -> bool:
        """Whether a tensor's values were computed from the model's input (not only from parameters or shapes)."""
        return self._from_input.get(id(t)) is t

    def where(self) -> str:
        """The innermost module being run and its class, for messages: "layer1.0.attn (Attention)"."""
        if not self.stack or not self.stack[-1]:
            return "the model's forward()"
        name = self.stack[-1]
        return f"{name} ({self.kinds[name]})" if name in self.kinds else name

    def labels_of(self, t: Any) -> ChannelLabels | None:
        """Labels of a tensor (None: no prunable channels, every position fixed)."""
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._labels.get(id(t))
        if entry is None or entry[0] is not t:
            return None
        return entry[1]

    def set_labels(self, t: torch.Tensor, lab: ChannelLabels | None) -> None:
        """Attach labels to a tensor (kept alive with it for the whole trace)."""
        if lab is not None and (lab.dim >= t.dim() or t.shape[lab.dim] != lab.vec.numel()):
            self.freeze(lab, f"internal shape mismatch at {self.where()}")
            lab = None
        if lab is not None and not lab.has_ids():
            lab = None
        self._labels[id(t)] = (t, lab)

    def set_outputs(self, out: Any, lab: ChannelLabels | None) -> None:
        """Attach the same labels to every tensor output (tuples of outputs share one labelling)."""
        if isinstance(out, torch.Tensor):
            self.set_labels(out, lab)
        elif isinstance(out, (list, tuple)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    self.set_labels(o, lab if lab is not None and o.dim() > lab.dim else None)

    def freeze(self, lab: ChannelLabels | torch.Tensor | None, reason: str, overriding: bool = False) -> bool:
        """Freeze the channel ids in a label set; returns whether it held any."""
        return self.book.freeze(lab, reason, overriding)

    def add_side(self, module: str, side: str, vec: torch.Tensor) -> torch.Tensor:
        """Record the labels a layer side sees; a second call of a shared layer is united with the first."""
        key = (module, side)
        if key in self.sides:
            merged = self.book.pair(self.sides[key].vec, vec, f"shared layer {module} sees fixed positions")
            self.sides[key].vec = merged
            return merged
        self.sides[key] = SideRecord(module, side, vec)
        return vec

    def new_source(self, module: str, side: str, size: int) -> torch.Tensor:
        """Channel ids for a layer's output (reused when the layer is called again)."""
        key = (module, side)
        if key in self.sides:
            return self.sides[key].vec
        vec = self.book.allocate(size)
        record = SideRecord(module, side, vec)
        self.sides[key] = record
        self.sources.append(record)
        return vec

    def add_flops(
        self, factor: float, vecs: list[torch.Tensor], kernel_of: str | None = None, einsum: bool = False
    ) -> None:
        """Record an fvcore-counted op."""
        self.flops.append(CostTerm(float(factor), vecs, tuple(self.stack), kernel_of, einsum))

    def spatial_cost(
        self, name: str, args: tuple, kwargs: dict, x: torch.Tensor, out: torch.Tensor, lab: ChannelLabels
    ) -> None:
        """FLOPs fvcore counts for pooling / resizing ops whose channels may shrink."""
        n = lab.vec.numel()
        if name == "adaptive_avg_pool2d":
            self.add_flops(x.numel() / n, [lab.vec])
        elif name in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear") and out.dim() == 4:
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            if name == "upsample_bilinear":
                mode = "bilinear"
            if mode == "nearest":
                self.add_flops(out.numel() / n, [lab.vec])
            elif mode == "bilinear":
                self.add_flops(4 * out.numel() / n, [lab.vec])
