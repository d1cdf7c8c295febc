"""Run the model once on the dummy input and record how channels flow between layers.

No torch.fx: the model runs for real (Python control flow is fine) under a TorchFunctionMode that sees
every torch function call, plus forward hooks that treat each convertible layer as one atomic op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils.hooks import RemovableHandle

from nasprune_cli.errors import TraceError
from nasprune_cli.graph.branches import follow_values, freeze_branching_modules, module_returned
from nasprune_cli.graph.context import SequentialCall, Trace, TraceContext
from nasprune_cli.graph.fills import FACTORY_OPS, made_from_count
from nasprune_cli.graph.layers import PARAM_SIDES, handle_layer, is_atomic
from nasprune_cli.graph.ops import SPLIT_OPS, TABLE, unknown
from nasprune_cli.graph.watch import use_all, watched_ints
from nasprune_cli.inputs import call_model, eval_mode, tensors_in

_WATCH_AWARE = frozenset(("view", "reshape", *SPLIT_OPS))  # rules that decide themselves which channel counts are used


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


class _LabelMode(TorchFunctionMode):
    """Sees every torch function call of the traced run and applies its channel rule."""

    def __init__(self, ctx: TraceContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._names: dict[Callable, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.ctx.suspended:
            return self.on_function(func, args, kwargs, out)
        return out

    def on_function(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        """Apply the channel rule of one torch function call; returns the (possibly watched) output."""
        ctx = self.ctx
        name = self._names.get(func)
        if name is None:
            name = _canonical(func)
            self._names[func] = name
        tensors = tensors_in((args, kwargs))
        follow_values(ctx, name, args, tensors, out)
        has_labels = any(ctx.labels_of(t) is not None for t in tensors)
        if name in FACTORY_OPS and made_from_count(ctx, name, args, kwargs, out):
            return out
        if name not in _WATCH_AWARE or not has_labels:  # a channel count passed to a torch function is used by it
            use_all(watched_ints((args, kwargs)))
        if not has_labels:
            ctx.set_outputs(out, None)
            return out
        ctx.current_func = func
        replaced = TABLE.get(name, unknown)(ctx, name, args, kwargs, out)
        return out if replaced is None else replaced


def trace_model(model: nn.Module, dummy_input: Any, depth_sequentials: Iterable[str] = ()) -> Trace:
    """Run the model in eval mode on the dummy input and return the channel-flow trace."""
    ctx = TraceContext(model, PARAM_SIDES)
    handles: list[RemovableHandle] = []
    try:
        _add_layer_hooks(ctx, model, handles)
        _add_sequential_hooks(ctx, model, set(depth_sequentials), handles)
        ctx.mark_from_input(dummy_input)
        with eval_mode(model), torch.no_grad(), _LabelMode(ctx):
            try:
                output = call_model(model, dummy_input)
            except Exception as exc:  # noqa: BLE001 - any model failure becomes one clear error
                raise TraceError(
                    f"running the model on the dummy input failed: {type(exc).__name__}: {exc} "
                    "(check --input-shape / the recipe's input section)"
                ) from exc
        check_model_output(model, output)
        freeze_branching_modules(ctx)
        _freeze_shared_parameters(ctx, model)
        for t in tensors_in(output):
            ctx.freeze(ctx.labels_of(t), "model output (the channels of the model's outputs are never pruned)")
    finally:
        for h in handles:
            h.remove()
    return Trace(
        book=ctx.book,
        sides=ctx.sides,
        sources=ctx.sources,
        flops=ctx.flops,
        params=ctx.params,
        sequentials=ctx.sequentials,
        layer_info=ctx.layer_info,
        cuts=ctx.cuts,
    )


def _freeze_shared_parameters(ctx: TraceContext, model: nn.Module) -> None:
    """Freeze every traced layer holding a parameter that another module holds too: slicing one of them would untie
    the copies (a module called twice is one layer, not a shared parameter)."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(f"{module_name}.{param_name}" if module_name else param_name)
    shared = {full: names for names in owners.values() if len(names) > 1 for full in names}
    if not shared:
        return
    for (module, _side), record in ctx.sides.items():
        for full, names in shared.items():
            layer, _, param_name = full.rpartition(".")
            if layer == module:
                other = next(n for n in names if n != full).rpartition(".")[0] or "the model"
                ctx.freeze(record.vec, f"layer {module} shares its {param_name} with {other} (kept tied: not pruned)")
                break


def check_model_output(model: nn.Module, output: Any) -> None:
    """A TraceError unless the output is a tensor, or tuples / lists / dicts of tensors (None items allowed)."""
    problem = _non_tensor(output, "output")
    if problem is None and not tensors_in(output):
        problem = f"output {_describe(output)} (no tensor in it)"
    if problem is not None:
        raise TraceError(
            f"model {type(model).__name__} returned {problem}; nasprune needs its outputs as tensors (or tuples / "
            "lists / dicts of tensors) to follow the channels and count the FLOPs: return the tensors, and compute "
            "anything else from them outside the model"
        )


def _non_tensor(obj: Any, path: str) -> str | None:
    """Where a nested output holds something other than a tensor (None: nowhere)."""
    if isinstance(obj, torch.Tensor):
        return None
    items: list[tuple[str, Any]] = []
    if isinstance(obj, (tuple, list)):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(obj)]
    elif isinstance(obj, dict):
        items = [(f"{path}[{key!r}]", item) for key, item in obj.items()]
    elif path == "output" or obj is not None:
        return f"{path} {_describe(obj)}"
    for item_path, item in items:
        problem = _non_tensor(item, item_path)
        if problem is not None:
            return problem
    return None


def _describe(obj: Any) -> str:
    return f"{type(obj).__name__} {str(obj)[:40]!r}" if obj is not None else "None"


def _add_layer_hooks(ctx: TraceContext, model: nn.Module, handles: list[RemovableHandle]) -> None:
    """Hook every module: keep the stack of running modules, and run each convertible layer as one atomic op."""

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = ctx.names.get(id(module), "")
        ctx.stack.append(name)
        ctx.ran.add(name)
        ctx.call_inputs.append(tensors_in((args, kwargs)))
        if is_atomic(module):
            ctx.suspended += 1

    def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        name = ctx.stack.pop() if ctx.stack else ""
        inputs = ctx.call_inputs.pop() if ctx.call_inputs else []
        atomic = is_atomic(module)
        if not atomic:
            if not ctx.suspended:
                module_returned(ctx, name, inputs, output)
        elif ctx.suspended == 1:  # the ops inside it are not followed; pruning it changes its output's values
            ctx.mark_channel_values(output)
            if any(ctx.from_input(t) for t in inputs):
                ctx.mark_from_input(output)
        if atomic:
            if ctx.suspended == 1:  # our own tensor calls below must not be traced: stay suspended
                ctx.stack.append(name)
                try:
                    handle_layer(ctx, name, module, args, kwargs, output)
                finally:
                    ctx.stack.pop()
            ctx.suspended -= 1

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))


def _add_sequential_hooks(
    ctx: TraceContext, model: nn.Module, depth_names: set[str], handles: list[RemovableHandle]
) -> None:
    """Hook the children of the depth-searchable Sequentials: the shapes and labels around each child call."""

    def child_post(seq_name: str, child_name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and not ctx.suspended:
                ctx.suspended += 1  # reading shapes here is ours, not the model's
                try:
                    x_shape, out_shape = tuple(x.shape), tuple(output.shape)
                finally:
                    ctx.suspended -= 1
                call = (child_name, x_shape, ctx.labels_of(x), out_shape, ctx.labels_of(output))
                ctx.sequentials[seq_name].children.append(call)

        return hook

    for name, module in model.named_modules():
        if name in depth_names and isinstance(module, (nn.Sequential, nn.ModuleList)):
            ctx.sequentials[name] = SequentialCall(name)
            for child_name, child in module.named_children():
                full = f"{name}.{child_name}" if name else child_name
                handles.append(child.register_forward_hook(child_post(name, full), with_kwargs=True))
