"""Channel rules of the convertible layers, each traced as one atomic op."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention

from nasprune_cli.graph.context import CostTerm, TraceContext
from nasprune_cli.graph.hf_layers import EXTERNAL_LAYERS
from nasprune_cli.graph.labels import ChannelLabels, fixed_vec

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVT_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
IN_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
ATTENTION_TYPES = (ShiftedWindowAttention, RelativePositionalMultiHeadAttention)
ATOMIC_TYPES = frozenset(
    (*CONV_TYPES, *CONVT_TYPES, nn.Linear, *BN_TYPES, *IN_TYPES, nn.LayerNorm, LayerNorm2d, nn.GroupNorm)
    + ATTENTION_TYPES
)


# parameters that scale channels inside a traced (not atomic) module: type -> {parameter name: its channel dim}
PARAM_SIDES: dict[type[nn.Module], dict[str, int]] = {CNBlock: {"layer_scale": 0}}


def _input_vec(ctx: TraceContext, name: str, x: torch.Tensor, dim: int, size: int, what: str) -> torch.Tensor:
    """Labels along the dim a layer reads channels from; channels arriving along another dim are frozen."""
    lab = ctx.labels_of(x)
    if lab is None:
        return fixed_vec(size)
    if lab.dim != dim:
        ctx.freeze(lab, f"{name} ({what}) receives channels along dim {lab.dim}, not its {what} dim {dim}")
        return fixed_vec(size)
    return lab.vec


# lookups the dynamic package adds when it is imported (it imports graph, not the other way round): the LayerSpec of
# a layer registered with register_layer or by name, and the registered type a subclass is sliced like
SPEC_LOOKUPS: list[Callable[[type[nn.Module]], Any]] = []
PARENT_LOOKUPS: list[Callable[[type[nn.Module]], type[nn.Module] | None]] = []


def layer_spec(module_type: type[nn.Module]) -> Any:
    """The LayerSpec of a registered layer type (None: not registered)."""
    return next((s for s in (f(module_type) for f in SPEC_LOOKUPS) if s is not None), None)


def registered_parent(module_type: type[nn.Module]) -> type[nn.Module] | None:
    """The convertible type a subclass is sliced like (None: not such a subclass)."""
    return next((p for p in (f(module_type) for f in PARENT_LOOKUPS) if p is not None), None)


def is_atomic(module: nn.Module) -> bool:
    """Whether the tracer runs a module as one op: a convertible layer, another library's (EXTERNAL_LAYERS), a
    subclass of a convertible layer, or a layer registered with register_layer."""
    module_type = type(module)
    return (
        module_type in ATOMIC_TYPES
        or module_type in EXTERNAL_LAYERS
        or layer_spec(module_type) is not None
        or registered_parent(module_type) in ATOMIC_TYPES
    )


def handle_layer(ctx: TraceContext, name: str, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
    """Apply the channel rule of one call of a convertible layer."""
    external = EXTERNAL_LAYERS.get(type(module))
    if external is not None:
        first = name not in ctx.layer_info
        params_before = len(ctx.params)
        external(ctx, name, module, args, kwargs, out)
        if not first:  # a shared layer's parameters are counted once
            del ctx.params[params_before:]
        for term in ctx.params[params_before:]:
            term.scope = tuple(ctx.stack)
        return
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        for t in list(args) + list(kwargs.values()):
            if isinstance(t, torch.Tensor):
                ctx.freeze(ctx.labels_of(t), f"{name} is called with unusual arguments")
        if isinstance(out, torch.Tensor):
            ctx.set_labels(out, None)
        return
    first = name not in ctx.layer_info
    params_before = len(ctx.params)
    calls = ctx.layer_info.get(name, {}).get("calls", 0)
    spec = layer_spec(type(module))
    if spec is not None:
        _custom(ctx, name, module, spec, x, out)
    elif isinstance(module, (*CONV_TYPES, *CONVT_TYPES)):
        _conv(ctx, name, module, x, out)
    elif isinstance(module, nn.Linear):
        _linear(ctx, name, module, x, out)
    elif isinstance(module, ATTENTION_TYPES):
        _attention(ctx, name, module, x, out)
    else:
        _norm(ctx, name, module, x, out)
    info = ctx.layer_info.setdefault(name, {})
    info["calls"] = calls + 1
    info.setdefault("input_shape", tuple(x.shape))  # the first call's: conversion checks subclasses on it
    out_labels = ctx.labels_of(out)
    info.setdefault("channel_dim", out_labels.dim if out_labels is not None else None)
    if not first:  # a shared layer's parameters are counted once
        del ctx.params[params_before:]
    for term in ctx.params[params_before:]:
        term.scope = tuple(ctx.stack)


def _conv(ctx: TraceContext, name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    transposed = isinstance(m, CONVT_TYPES)
    batched = x.dim() == m.weight.dim()
    cdim = 1 if batched else 0
    cin, cout, groups = m.in_channels, m.out_channels, m.groups
    kernel = math.prod(m.kernel_size)
    info = {"type": type(m).__name__, "groups": groups, "kernel_size": tuple(m.kernel_size), "transposed": transposed}
    ctx.layer_info[name] = info
    in_vec = _input_vec(ctx, name, x, cdim, cin, "input channel")
    batch = x.shape[0]
    spatial = math.prod(x.shape[2:]) if transposed else math.prod(out.shape[2:])
    if groups > 1 and groups == cin and (cout == cin or not transposed):  # depthwise (channel multiplier cout // cin)
        # output channel j reads input channel j // multiplier only: it carries that channel's label
        info["depthwise"] = True
        vec = ctx.add_side(name, "in", in_vec)
        out_vec = ctx.add_side(name, "out", vec.repeat_interleave(cout // cin))
        ctx.set_labels(out, ChannelLabels(cdim, out_vec))
        ctx.add_flops(batch * spatial * kernel, [out_vec], kernel_of=name)
        ctx.params.append(_param_term(kernel, [out_vec], name))
        if m.bias is not None:
            ctx.params.append(_param_term(1, [out_vec]))
        return
    if groups > 1 and groups == cin:  # transposed depthwise with a channel multiplier: not proven
        reason = f"{name}: depthwise convolution with channel multiplier {cout // cin} is kept whole"
        ctx.freeze(in_vec, reason)
        ctx.add_side(name, "in", in_vec)
        out_vec = ctx.new_source(name, "out", cout)
        ctx.freeze(out_vec, reason)
        ctx.set_labels(out, ChannelLabels(cdim, out_vec))
        ctx.add_flops(batch * spatial * kernel * cout, [])
        ctx.params.append(_param_term(m.weight.numel() + (cout if m.bias is not None else 0), []))
        return
    if groups > 1:  # grouped: each side is pruned by the same number of channels in every group (see groups.py)
        info["blocks"] = groups
    in_vec = ctx.add_side(name, "in", in_vec)
    out_vec = ctx.new_source(name, "out", cout)
    ctx.set_labels(out, ChannelLabels(cdim, out_vec))
    ctx.add_flops(batch * spatial * kernel / groups, [in_vec, out_vec], kernel_of=name)
    ctx.params.append(_param_term(kernel / groups, [in_vec, out_vec], name))
    if m.bias is not None:
        ctx.params.append(_param_term(1, [out_vec]))


def _linear(ctx: TraceContext, name: str, m: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> None:
    ctx.layer_info[name] = {"type": "Linear"}
    in_vec = ctx.add_side(name, "in", _input_vec(ctx, name, x, x.dim() - 1, m.in_features, "input feature"))
    out_vec = ctx.new_source(name, "out", m.out_features)
    ctx.set_labels(out, ChannelLabels(out.dim() - 1, out_vec))
    ctx.add_flops(math.prod(x.shape[:-1]), [in_vec, out_vec])
    ctx.params.append(_param_term(1, [in_vec, out_vec]))
    if m.bias is not None:
        ctx.params.append(_param_term(1, [out_vec]))


def _attention(ctx: TraceContext, name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """A torchvision attention block: features in = q/k/v dims = features out, pruned by whole heads."""
    if isinstance(m, ShiftedWindowAttention):
        width, heads, qkv, proj = m.qkv.in_features, m.num_heads, m.qkv, m.proj
        window = math.prod(m.window_size)
        pad_h, pad_w = (-x.shape[-3] % m.window_size[0]), (-x.shape[-2] % m.window_size[1])
        tokens = math.prod(x.shape[:-3]) * (x.shape[-3] + pad_h) * (x.shape[-2] + pad_w)
        keys = window  # every token attends to the tokens of its window
    else:
        width, heads, qkv, proj = m.n_heads * m.head_dim, m.n_heads, m.to_qkv, m.merge
        tokens, keys = math.prod(x.shape[:-1]), x.shape[-2]
    ctx.layer_info[name] = {"type": type(m).__name__, "head_width": width // heads}
    vec = ctx.add_side(name, "features", _input_vec(ctx, name, x, x.dim() - 1, width, "feature"))
    ctx.set_labels(out, ChannelLabels(out.dim() - 1, vec))
    ctx.add_flops(3 * tokens, [vec, vec])  # q, k, v projections
    if isinstance(m, ShiftedWindowAttention):
        ctx.add_flops(2 * tokens * keys, [vec])  # q @ k^T and attention @ v (matmul), summed over heads
    else:  # two einsums, which fvcore counts with numpy's rounding
        ctx.add_flops(tokens * keys, [vec], einsum=True)
        ctx.add_flops(tokens * keys, [vec], einsum=True)
    ctx.add_flops(tokens, [vec, vec])  # output projection
    ctx.params.append(_param_term(3, [vec, vec]))
    ctx.params.append(_param_term(1, [vec, vec]))
    for bias, per_feature in ((qkv.bias, 3), (proj.bias, 1)):
        if bias is not None:
            ctx.params.append(_param_term(per_feature, [vec]))
    table = m.relative_position_bias_table
    ctx.params.append(_param_term(table.shape[0] / (width // heads), [vec]))  # one column per head


def _norm(ctx: TraceContext, name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    info: dict[str, Any] = {"type": type(m).__name__}
    ctx.layer_info[name] = info
    if isinstance(m, LayerNorm2d):  # a LayerNorm over the channels (dim 1) of an NCHW tensor
        side, dim, size = "features", 1, m.normalized_shape[0]
        per_elem = 5 if m.weight is not None else 4
        affine = m.weight is not None
    elif isinstance(m, nn.LayerNorm):
        side, dim, size = "features", _layer_norm_dim(ctx, m, x, out), m.normalized_shape[-1]
        affine = m.weight is not None
        per_elem = 5 if affine else 4
        if len(m.normalized_shape) > 1:
            lab = ctx.labels_of(x)
            if lab is not None and lab.dim >= x.dim() - len(m.normalized_shape):
                ctx.freeze(lab, f"{name}: LayerNorm over {len(m.normalized_shape)} dims cannot be sliced")
            ctx.set_labels(out, None if lab is None or lab.dim >= x.dim() - len(m.normalized_shape) else lab)
            ctx.add_flops(x.numel() * per_elem, [])
            ctx.params.append(_param_term(sum(p.numel() for p in m.parameters(recurse=False)), []))
            return
    elif isinstance(m, nn.GroupNorm):
        side, dim, size = "channels", 1, m.num_channels
        affine = m.weight is not None
        per_elem = 5 if affine else 4
        info["num_groups"] = m.num_groups
    else:  # batch / instance norm
        side, size = "features", m.num_features
        dim = 1 if x.dim() > 2 or isinstance(m, BN_TYPES) else 0
        if isinstance(m, IN_TYPES):
            ranks = ((nn.InstanceNorm1d, 3), (nn.InstanceNorm2d, 4), (nn.InstanceNorm3d, 5))
            batched = next(n for t, n in ranks if isinstance(m, t))
            dim = 1 if x.dim() == batched else 0
        affine = m.weight is not None
        per_elem = (2 if affine else 1) if isinstance(m, BN_TYPES) else (5 if affine else 4)
    vec = ctx.add_side(name, side, _input_vec(ctx, name, x, dim, size, "feature"))
    ctx.set_labels(out, ChannelLabels(dim, vec))
    ctx.add_flops(x.numel() / size * per_elem, [vec])
    if affine:
        n_affine = sum(1 for p in (m.weight, getattr(m, "bias", None)) if p is not None)
        ctx.params.append(_param_term(n_affine, [vec]))


def _layer_norm_dim(ctx: TraceContext, m: nn.LayerNorm, x: torch.Tensor, out: torch.Tensor) -> int:
    """The last dim, or for a subclass (timm's LayerNorm2d, HF's ConvNextLayerNorm channels_first) the dim its input
    channels arrive on when it has the normalized size (conversion checks that the subclass agrees)."""
    lab = ctx.labels_of(x)
    last = x.dim() - 1
    if type(m) is nn.LayerNorm or lab is None or len(m.normalized_shape) != 1 or out.shape != x.shape:
        return last
    return lab.dim if x.shape[lab.dim] == m.normalized_shape[0] else last


def _custom(ctx: TraceContext, name: str, m: nn.Module, spec: Any, x: torch.Tensor, out: torch.Tensor) -> None:
    """A layer registered with register_layer: its sides along its channel dim; conversion measures its FLOPs."""
    info: dict[str, Any] = {"type": type(m).__name__, "custom": True}
    ctx.layer_info[name] = info
    dim = spec.channel_dim_of(m) % x.dim()
    sizes = spec.side_sizes(m)
    if len(sizes) < (2 if spec.kind == "linear" else 1):  # no tensor or attribute says how wide a side is: kept whole
        for t in (x, out):
            ctx.freeze(ctx.labels_of(t), f"{type(m).__name__} '{name}': its registration gives no size for a side")
        ctx.set_labels(out, None)
        return
    if spec.kind == "linear":
        in_vec = ctx.add_side(name, "in", _input_vec(ctx, name, x, dim, sizes["in"], "input channel"))
        out_vec = ctx.new_source(name, "out", sizes["out"])
        vecs = {"in": in_vec, "out": out_vec}
        out_dim = spec.channel_dim_of(m) % out.dim()
    else:
        vec = ctx.add_side(name, "features", _input_vec(ctx, name, x, dim, sizes["features"], "channel"))
        vecs, out_dim = {"features": vec}, dim
        out_vec = vec
    if out.dim() <= out_dim or out.shape[out_dim] != out_vec.numel():
        ctx.freeze(out_vec, f"{type(m).__name__} '{name}' returns a tensor without its channels on dim {out_dim}")
        ctx.set_labels(out, None)
    else:
        ctx.set_labels(out, ChannelLabels(out_dim, out_vec))
    ctx.add_flops(0.0, list(vecs.values()))  # the factor is measured with fvcore by conversion
    for tensor_name, dims in spec.tensors.items():
        tensor = getattr(m, tensor_name, None)
        if isinstance(tensor, torch.Tensor) and tensor_name in m._parameters:
            kept = [vecs[s] for s in dims]
            ctx.params.append(_param_term(tensor.numel() / math.prod(v.numel() for v in kept), kept))


def _param_term(factor: float, vecs: list[torch.Tensor], kernel_of: str | None = None) -> CostTerm:
    return CostTerm(float(factor), vecs, (), kernel_of)
