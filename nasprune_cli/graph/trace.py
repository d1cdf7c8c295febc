"""Run the model once on the dummy input and record how channels flow between layers.

No torch.fx: the model runs for real (Python control flow is fine) under a TorchFunctionMode that sees
every torch function call, plus forward hooks that treat each convertible layer as one atomic op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

from nasprune_cli.errors import TraceError
from nasprune_cli.graph.labels import ChannelBook, Lab
from nasprune_cli.graph.layers import ATOMIC_TYPES, PARAM_SIDES, handle_layer
from nasprune_cli.graph.rules import TABLE, unknown
from nasprune_cli.graph.watch import use_all, watched_ints
from nasprune_cli.inputs import call_model, eval_mode, tensors_in

_WATCH_AWARE = frozenset(("view", "reshape"))  # rules that decide themselves which channel counts are used


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
class SequentialCall:
    """Input/output labels and shapes of each child call of a depth-searchable Sequential."""

    name: str
    children: list[tuple[str, tuple[int, ...], Lab | None, tuple[int, ...], Lab | None]] = field(default_factory=list)


@dataclass
class Trace:
    """What one traced forward pass found."""

    book: ChannelBook
    sides: dict[tuple[str, str], SideRecord]
    sources: list[SideRecord]  # sides that created channel ids, in call order
    flops: list[CostTerm]
    params: list[CostTerm]
    call_order: list[str]
    sequentials: dict[str, SequentialCall]
    layer_info: dict[str, dict[str, Any]]  # module name -> facts (groups, kernel, num_groups ...)


def _canonical(func: Callable) -> str:
    name = resolve_name(func) or getattr(func, "__name__", repr(func))
    prefixes = (
        "torch.Tensor.",
        "torch.nn.functional.",
        "torch.functional.",  # torch.split, torch.chunk wrappers, ...
        "torch._C._nn.",
        "torch._C._VariableFunctions.",
        "torch.",
    )
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


class TraceContext:
    """Label store and helpers shared by the op rules and the layer handlers."""

    def __init__(self, model: nn.Module) -> None:
        self.book = ChannelBook()
        self._labels: dict[int, tuple[torch.Tensor, Lab | None]] = {}
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.suspended = 0
        self.current_func: Callable | None = None
        self.sides: dict[tuple[str, str], SideRecord] = {}
        self.sources: list[SideRecord] = []
        self.flops: list[CostTerm] = []
        self.params: list[CostTerm] = []
        self.call_order: list[str] = []
        self.layer_info: dict[str, dict[str, Any]] = {}
        self.sequentials: dict[str, SequentialCall] = {}
        self._name_cache: dict[Callable, str] = {}
        # sliceable parameters of traced modules: id -> (module name, parameter name, channel dim, the parameter)
        self.param_sides: dict[int, tuple[str, str, int, torch.Tensor]] = {}
        for module_name, module in model.named_modules():
            for param_name, dim in PARAM_SIDES.get(type(module), {}).items():
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

    def where(self) -> str:
        """The innermost module being run, for messages."""
        return self.stack[-1] if self.stack and self.stack[-1] else "the model's forward()"

    def lab(self, t: Any) -> Lab | None:
        """Labels of a tensor (None: no prunable channels, every position fixed)."""
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._labels.get(id(t))
        if entry is None or entry[0] is not t:
            return None
        return entry[1]

    def set_lab(self, t: torch.Tensor, lab: Lab | None) -> None:
        """Attach labels to a tensor (kept alive with it for the whole trace)."""
        if lab is not None and (lab.dim >= t.dim() or t.shape[lab.dim] != lab.vec.numel()):
            self.freeze(lab, f"internal shape mismatch at {self.where()}")
            lab = None
        if lab is not None and not lab.has_ids():
            lab = None
        self._labels[id(t)] = (t, lab)

    def set_outputs(self, out: Any, lab: Lab | None) -> None:
        """Attach the same labels to every tensor output (tuples of outputs share one labelling)."""
        if isinstance(out, torch.Tensor):
            self.set_lab(out, lab)
        elif isinstance(out, (list, tuple)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    self.set_lab(o, lab if lab is not None and o.dim() > lab.dim else None)

    def freeze(self, lab: Lab | torch.Tensor | None, reason: str) -> None:
        """Freeze the channel ids in a label set."""
        self.book.freeze(lab, reason)

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

    def spatial_cost(self, name: str, args: tuple, kwargs: dict, x: torch.Tensor, out: torch.Tensor, lab: Lab) -> None:
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

    def on_function(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        """Apply the channel rule of one torch function call; returns the (possibly watched) output."""
        name = self._name_cache.get(func)
        if name is None:
            name = _canonical(func)
            self._name_cache[func] = name
        has_labels = any(self.lab(t) is not None for t in tensors_in((args, kwargs)))
        if name not in _WATCH_AWARE or not has_labels:  # a channel count passed to a torch function is used by it
            use_all(watched_ints((args, kwargs)))
        if not has_labels:
            self.set_outputs(out, None)
            return out
        self.current_func = func
        replaced = TABLE.get(name, unknown)(self, name, args, kwargs, out)
        return out if replaced is None else replaced


class _LabelMode(TorchFunctionMode):
    def __init__(self, ctx: TraceContext) -> None:
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.ctx.suspended:
            return self.ctx.on_function(func, args, kwargs, out)
        return out


def trace_model(model: nn.Module, dummy_input: Any, depth_sequentials: Iterable[str] = ()) -> Trace:
    """Run the model in eval mode on the dummy input and return the channel-flow trace."""
    ctx = TraceContext(model)
    depth_names = set(depth_sequentials)
    handles = []

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = ctx.names.get(id(module), "")
        ctx.stack.append(name)
        if type(module) in ATOMIC_TYPES:
            ctx.suspended += 1

    def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        name = ctx.stack.pop() if ctx.stack else ""
        if type(module) in ATOMIC_TYPES:
            if ctx.suspended == 1:  # our own tensor calls below must not be traced: stay suspended
                ctx.stack.append(name)
                try:
                    handle_layer(ctx, name, module, args, kwargs, output)
                finally:
                    ctx.stack.pop()
            ctx.suspended -= 1

    def child_post(seq_name: str, child_name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and not ctx.suspended:
                ctx.suspended += 1  # reading shapes here is ours, not the model's
                try:
                    x_shape, out_shape = tuple(x.shape), tuple(output.shape)
                finally:
                    ctx.suspended -= 1
                ctx.sequentials[seq_name].children.append((child_name, x_shape, ctx.lab(x), out_shape, ctx.lab(output)))

        return hook

    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
        for name, module in model.named_modules():
            if name in depth_names and isinstance(module, nn.Sequential):
                ctx.sequentials[name] = SequentialCall(name)
                for child_name, child in module.named_children():
                    full = f"{name}.{child_name}" if name else child_name
                    handles.append(child.register_forward_hook(child_post(name, full), with_kwargs=True))
        with eval_mode(model), torch.no_grad(), _LabelMode(ctx):
            try:
                output = call_model(model, dummy_input)
            except Exception as exc:  # noqa: BLE001 - any model failure becomes one clear error
                raise TraceError(
                    f"running the model on the dummy input failed: {type(exc).__name__}: {exc} "
                    "(check --input-shape / the recipe's input section)"
                ) from exc
        for t in tensors_in(output):
            ctx.freeze(ctx.lab(t), "model output (the channels of the model's outputs are never pruned)")
    finally:
        for h in handles:
            h.remove()
    return Trace(
        book=ctx.book,
        sides=ctx.sides,
        sources=ctx.sources,
        flops=ctx.flops,
        params=ctx.params,
        call_order=ctx.call_order,
        sequentials=ctx.sequentials,
        layer_info=ctx.layer_info,
    )
