"""The op -> channel rule table: how each torch function moves, couples or freezes channel labels.

Every handler gets the trace context, the canonical op name, the call's args/kwargs and its output. An op
that is not in the table freezes the channels of all its tensor inputs: we never guess that an unknown op
is elementwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nasprune_cli.graph.context import TraceContext
from nasprune_cli.graph.cuts import STALE, cut_channels, cut_dim
from nasprune_cli.graph.fills import setitem
from nasprune_cli.graph.labels import ChannelLabels, fixed_vec
from nasprune_cli.graph.watch import WatchedInt, WatchedSize, use_all, watched_ints
from nasprune_cli.inputs import tensors_in

Handler = Callable[[TraceContext, str, tuple, dict, Any], None]

_UNARY = {
    "relu",
    "relu_",
    "relu6",
    "hardtanh",
    "hardtanh_",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "hardswish",
    "hardsigmoid",
    "softplus",
    "softsign",
    "logsigmoid",
    "tanhshrink",
    "prelu_scalar",
    "threshold",
    "threshold_",
    "rrelu",
    "glu_none",
    "dropout",
    "dropout_",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "clone",
    "contiguous",
    "detach",
    "detach_",
    "float",
    "half",
    "double",
    "bfloat16",
    "to",
    "type",
    "cpu",
    "cuda",
    "requires_grad_",
    "abs",
    "abs_",
    "neg",
    "neg_",
    "exp",
    "exp_",
    "log",
    "log_",
    "sqrt",
    "sqrt_",
    "rsqrt",
    "square",
    "clamp",
    "clamp_",
    "clip",
    "clip_",
    "clamp_min",
    "clamp_max",
    "clamp_min_",
    "clamp_max_",
    "sign",
    "erf",
    "cos",
    "sin",
    "reciprocal",
    "round",
    "floor",
    "ceil",
    "trunc",
    "nan_to_num",
    "__neg__",
    "__pos__",
    "__abs__",
    "__invert__",
    "logical_not",
    "bitwise_not",
    "data.__get__",
    "silu_",
    "hardswish_",
    "mul_scalar",
    "log1p",
    "expm1",
    "pin_memory",
    "as_subclass",
    "float_power",
    "positive",
    "mish_",
    "relu6_",
    "celu_",
}
_NARY = {
    "add",
    "add_",
    "__add__",
    "__radd__",
    "__iadd__",
    "sub",
    "sub_",
    "__sub__",
    "__rsub__",
    "__isub__",
    "rsub",
    "mul",
    "mul_",
    "__mul__",
    "__rmul__",
    "__imul__",
    "div",
    "div_",
    "__truediv__",
    "__rtruediv__",
    "__itruediv__",
    "true_divide",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "where",
    "addcmul",
    "addcdiv",
    "lerp",
    "pow",
    "pow_",
    "__pow__",
    "__rpow__",
    "__ipow__",
    "floor_divide",
    "__floordiv__",
    "remainder",
    "fmod",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "__eq__",
    "__ne__",
    "__lt__",
    "__gt__",
    "__le__",
    "__ge__",
    "logical_and",
    "logical_or",
    "logical_xor",
    "masked_fill",
    "masked_fill_",
    "__and__",
    "__or__",
    "__xor__",
    "copysign",
    "hypot",
    "atan2",
    "type_as",
    "expand_as_pair",
    "addcmul_",
    "addcdiv_",
    "lerp_",
}
_LIKE = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}
_REDUCE = {
    "mean",
    "sum",
    "amax",
    "amin",
    "std",
    "var",
    "prod",
    "logsumexp",
    "norm",
    "nansum",
    "nanmean",
    "all",
    "any",
    "argmax",
    "argmin",
    "max",
    "min",
    "median",
    "std_mean",
    "var_mean",
    "count_nonzero",
    "cumsum",
    "cumprod",
}
_SOFTMAX = {"softmax", "log_softmax", "softmin", "_softmax"}
# channel-preserving spatial ops: name -> number of trailing spatial dims they work on (None = ndim - 2)
_SPATIAL = {
    "max_pool1d": 1,
    "max_pool2d": 2,
    "max_pool3d": 3,
    "_max_pool1d": 1,
    "_max_pool2d": 2,
    "_max_pool3d": 3,
    "max_pool1d_with_indices": 1,
    "max_pool2d_with_indices": 2,
    "max_pool3d_with_indices": 3,
    "avg_pool1d": 1,
    "avg_pool2d": 2,
    "avg_pool3d": 3,
    "lp_pool1d": 1,
    "lp_pool2d": 2,
    "lp_pool3d": 3,
    "adaptive_avg_pool1d": 1,
    "adaptive_avg_pool2d": 2,
    "adaptive_avg_pool3d": 3,
    "adaptive_max_pool1d": 1,
    "adaptive_max_pool2d": 2,
    "adaptive_max_pool3d": 3,
    "adaptive_max_pool1d_with_indices": 1,
    "adaptive_max_pool2d_with_indices": 2,
    "adaptive_max_pool3d_with_indices": 3,
    "_adaptive_max_pool1d": 1,
    "_adaptive_max_pool2d": 2,
    "_adaptive_max_pool3d": 3,
    "interpolate": None,
    "upsample": None,
    "upsample_nearest": None,
    "upsample_bilinear": None,
    "local_response_norm": None,
}
SPLIT_OPS = {
    "chunk",
    "split",
    "unbind",
    "tensor_split",
    "split_with_sizes",
    "narrow",
    "select",
    "index_select",
    "hsplit",
    "vsplit",
    "unsafe_split",
    "unsafe_chunk",
}
_PERMUTE = {
    "permute",
    "transpose",
    "transpose_",
    "swapaxes",
    "swapdims",
    "movedim",
    "moveaxis",
    "t",
    "t_",
    "T.__get__",
    "mT.__get__",
    "mH.__get__",
    "H.__get__",
    "adjoint",
}
_VIEW = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "ravel"}
_SIZE_READS = {"size", "shape.__get__", "numel", "nelement", "__len__"}
_IGNORED_NON_TENSOR = {
    "dim",
    "dtype.__get__",
    "device.__get__",
    "item",
    "tolist",
    "__len__",
    "__bool__",
    "__format__",
    "__repr__",
    "__hash__",
    "is_contiguous",
    "stride",
    "requires_grad.__get__",
    "is_floating_point",
    "__iter__",
    "ndim.__get__",
    "grad_fn.__get__",
    "layout.__get__",
    "is_cuda.__get__",
    "data_ptr",
    "element_size",
    "__index__",
    "__int__",
    "__float__",
    "ndimension",
    "get_device",
    "is_complex",
    "_set_grad_enabled",
    "is_quantized.__get__",
    "is_sparse.__get__",
    "is_meta.__get__",
    "is_mkldnn.__get__",
    "is_nested.__get__",
}


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument lookup."""
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _dims_arg(dim: Any, ndim: int) -> list[int] | None:
    """Normalise a dim / dims argument; None means all dims."""
    if dim is None:
        return None
    if isinstance(dim, (list, tuple, torch.Size)):
        return [_norm_dim(int(d), ndim) for d in dim]
    return [_norm_dim(int(dim), ndim)]


def unknown(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """An op without a rule: freeze the channels of every tensor input; outputs carry no channels."""
    where = ctx.stack[-1] if ctx.stack else ""
    kind = ctx.kinds.get(where, "the model")
    caller = f"{kind} '{where}'" if where else f"{kind}.forward()"
    reason = f"{caller} calls '{name}', which nasprune has no channel rule for (the channels it reads are kept whole)"
    for t in tensors_in((args, kwargs)):
        ctx.freeze(ctx.labels_of(t), reason)
    ctx.set_outputs(out, None)


def unary(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Elementwise op of one tensor: labels pass through."""
    ctx.set_outputs(out, ctx.labels_of(args[0]) if args and isinstance(args[0], torch.Tensor) else None)


def nary(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Elementwise op of several (broadcast) tensors: channels paired position by position are united."""
    operands = [t for t in tensors_in((args, kwargs)) if t.dim() > 0]
    if not isinstance(out, torch.Tensor):
        return unknown(ctx, name, args, kwargs, out)
    ctx.set_outputs(out, broadcast_pair(ctx, name, operands, out.dim()))


def broadcast_pair(ctx: TraceContext, name: str, operands: Sequence[torch.Tensor], ndim: int) -> ChannelLabels | None:
    """Pair broadcast operands along their channel dims; return the labels of the result."""
    labs = []
    for t in operands:
        lab = ctx.labels_of(t)
        labs.append(None if lab is None else lab.moved(lab.dim + ndim - t.dim()))
    dims = {lab.dim for lab in labs if lab is not None}
    if not dims:
        return None
    if len(dims) > 1:  # channels along two different dims: we cannot keep both consistent
        for lab in labs:
            ctx.freeze(lab, f"'{name}' combines channels along different dims")
        return None
    (cdim,) = dims
    merged: torch.Tensor | None = None
    params = []
    for t, lab in zip(operands, labs, strict=True):
        size = t.shape[cdim - ndim + t.dim()] if cdim - ndim + t.dim() >= 0 else 1
        side = ctx.param_side(t) if lab is None else None
        if side is not None and side[2] == cdim - ndim + t.dim() and size > 1:
            params.append(t)  # a per-channel parameter (ConvNeXt's layer_scale): sliced like the channels
            continue
        if lab is not None:
            vec = lab.vec
        elif size > 1:
            vec = fixed_vec(size)  # a fixed-size operand meets the channels: they cannot shrink
        else:
            continue  # broadcast along the channel dim: no coupling
        if merged is None:
            merged = vec
        elif merged.numel() == vec.numel():
            merged = ctx.book.pair(merged, vec, f"'{name}' pairs them with fixed positions at {ctx.where()}")
        elif vec.numel() == 1 or merged.numel() == 1:
            # one side broadcasts a single channel: no coupling
            merged = merged if merged.numel() > 1 else vec
        else:  # pragma: no cover - shapes were valid for torch, so this cannot happen
            raise AssertionError("broadcast mismatch")
    for t in params:
        size = t.shape[cdim - ndim + t.dim()]
        if merged is not None and merged.numel() == size:
            ctx.add_param_side(t, merged)
        elif merged is None or merged.numel() == 1:  # the parameter's own positions: fixed, as for any tensor
            merged = fixed_vec(size)
    return (
        None if merged is None or merged.numel() <= 1 and not bool((merged >= 0).any()) else ChannelLabels(cdim, merged)
    )


def like(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """zeros_like(x) and friends: same shape as x, so the same labels."""
    unary(ctx, name, args, kwargs, out)


def reduce(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Reductions: fine over other dims; over the channel dim the channels are frozen."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        return ctx.set_outputs(out, None)
    dims = _dims_arg(_arg(args, kwargs, 1, "dim"), x.dim())
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return nary(ctx, name, args, kwargs, out)
    if dims is None or lab.dim in dims:
        ctx.freeze(lab, f"'{name}' reduces over the channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    if name in ("cumsum", "cumprod"):
        keepdim = True
    new_dim = lab.dim if keepdim else lab.dim - sum(1 for d in dims if d < lab.dim)
    ctx.set_outputs(out, lab.moved(new_dim))


def softmax(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Softmax over a non-channel dim passes labels; over the channel dim it freezes them."""
    x = args[0]
    lab = ctx.labels_of(x)
    dim = _arg(args, kwargs, 1, "dim")
    if lab is not None and (dim is None or _norm_dim(int(dim), x.dim()) == lab.dim):
        ctx.freeze(lab, f"'{name}' normalises over the channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    ctx.set_outputs(out, lab)


def spatial(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Pooling / resizing: the channel dim must not be one of the spatial dims."""
    x = args[0]
    lab = ctx.labels_of(x)
    n_spatial = _SPATIAL[name] if _SPATIAL[name] is not None else x.dim() - 2
    if lab is not None and lab.dim >= x.dim() - n_spatial:
        ctx.freeze(lab, f"'{name}' works along the channel dim at {ctx.where()}")
        lab = None
    ctx.set_outputs(out, lab)
    if lab is not None and isinstance(out, torch.Tensor):
        ctx.spatial_cost(name, args, kwargs, x, out, lab)


def pad(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """F.pad: padding the channel dim adds fixed positions; other dims pass labels."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        return ctx.set_outputs(out, None)
    widths = list(_arg(args, kwargs, 1, "pad"))
    mode = _arg(args, kwargs, 2, "mode", "constant")
    pos_from_end = x.dim() - 1 - lab.dim
    if 2 * pos_from_end + 1 >= len(widths):
        return ctx.set_outputs(out, lab)
    left, right = int(widths[2 * pos_from_end]), int(widths[2 * pos_from_end + 1])
    if left == 0 and right == 0:
        return ctx.set_outputs(out, lab)
    if mode != "constant" or left < 0 or right < 0:
        ctx.freeze(lab, f"'{name}' ({mode}) pads or crops the channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    ctx.set_outputs(out, ChannelLabels(lab.dim, torch.cat([fixed_vec(left), lab.vec, fixed_vec(right)])))


def permute(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Permutes / transposes: follow the channel dim with a meta-tensor probe."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        return ctx.set_outputs(out, None)
    sizes = [2 + i for i in range(x.dim())]
    sizes[lab.dim] = 1000  # a marker size no other dim has
    probe = torch.empty(sizes, device="meta")
    func = ctx.current_func
    moved = func.__get__(probe) if name.endswith(".__get__") else func(probe, *args[1:], **kwargs)
    ctx.set_outputs(out, lab.moved(list(moved.shape).index(1000)))


def squeeze(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """squeeze/unsqueeze: shift the channel dim past the removed or added size-1 dims."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None or not isinstance(out, torch.Tensor):
        return ctx.set_outputs(out, None)
    if name.startswith("unsqueeze"):
        d = _norm_dim(int(_arg(args, kwargs, 1, "dim")), x.dim() + 1)
        return ctx.set_outputs(out, lab.moved(lab.dim + (1 if d <= lab.dim else 0)))
    dims = _dims_arg(_arg(args, kwargs, 1, "dim"), x.dim())
    removed = [d for d in range(x.dim()) if x.shape[d] == 1 and (dims is None or d in dims)]
    if lab.dim in removed:
        ctx.freeze(lab, f"'{name}' removes a single-channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    ctx.set_outputs(out, lab.moved(lab.dim - sum(1 for d in removed if d < lab.dim)))


def expand(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """expand / broadcast_to / repeat: new leading dims; repeating the channel dim freezes it."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None or not isinstance(out, torch.Tensor):
        return ctx.set_outputs(out, None)
    new_dim = lab.dim + out.dim() - x.dim()
    if out.shape[new_dim] != x.shape[lab.dim]:
        ctx.freeze(lab, f"'{name}' repeats the channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    ctx.set_outputs(out, lab.moved(new_dim))


def view(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """view/reshape/flatten: merging the channel dim with others is safe; splitting it is not."""
    x = args[0]
    lab = ctx.labels_of(x)
    watched = list(watched_ints((args[1:], kwargs)))
    if lab is None or not isinstance(out, torch.Tensor):
        use_all(watched)
        return ctx.set_outputs(out, None)
    groups = _reshape_groups(list(x.shape), list(out.shape))
    for in_dims, out_dims in groups:
        if lab.dim not in in_dims:
            continue
        if len(out_dims) != 1:
            use_all(watched)
            ctx.freeze(lab, f"'{name}' splits the channel dim {tuple(x.shape)} -> {tuple(out.shape)} at {ctx.where()}")
            return ctx.set_outputs(out, None)
        literal = _literal_size(name, args, kwargs, out_dims[0])
        if isinstance(literal, WatchedInt) and len(in_dims) == 1 and torch.equal(literal.origin.vec, lab.vec):
            # the count was read from this tensor's own channels: the pruned model reads the pruned count there
            watched = [w for w in watched if w is not literal]
            literal = None
        use_all(watched)
        if literal is not None:
            ctx.freeze(
                lab,
                f"'{name}' gives the channel dim a fixed size ({int.__int__(literal)}) at {ctx.where()}; it would be "
                "stale once channels are removed (write -1 or flatten())",
            )
            return ctx.set_outputs(out, None)
        sizes = [x.shape[d] for d in in_dims]
        shape = [1] * len(in_dims)
        shape[in_dims.index(lab.dim)] = x.shape[lab.dim]
        vec = lab.vec.view(shape).expand(sizes).reshape(-1)
        return ctx.set_outputs(out, ChannelLabels(out_dims[0], vec))
    # the channel dim had size 1 and vanished
    use_all(watched)
    ctx.freeze(lab, f"'{name}' drops the channel dim at {ctx.where()}")
    ctx.set_outputs(out, None)


def _literal_size(name: str, args: tuple, kwargs: dict, out_dim: int) -> int | None:
    """The size a view/reshape call spells out for output dim `out_dim` (None: -1, or derived by torch)."""
    if name not in ("view", "reshape"):
        return None  # flatten / unflatten of other dims / *_as derive the merged size themselves
    shape: Any = kwargs.get("shape", kwargs.get("size"))
    if shape is None:
        rest = args[1:]
        shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)) else rest
    if not isinstance(shape, (list, tuple, torch.Size)) or out_dim >= len(shape):
        return None  # view(dtype) and the like
    size = tuple.__getitem__(tuple(shape), out_dim)
    if isinstance(size, WatchedInt):
        return size
    return None if size == -1 else int(size)


def _reshape_groups(src: list[int], dst: list[int]) -> list[tuple[list[int], list[int]]]:
    """Match the non-size-1 dims of a reshape into groups (input dims, output dims) of equal products."""
    src_nz = [(i, s) for i, s in enumerate(src) if s != 1]
    dst_nz = [(j, s) for j, s in enumerate(dst) if s != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src_nz) and j < len(dst_nz):
        gi, pi = [src_nz[i][0]], src_nz[i][1]
        gj, pj = [dst_nz[j][0]], dst_nz[j][1]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                gi.append(src_nz[i][0])
                pi *= src_nz[i][1]
                i += 1
            else:
                gj.append(dst_nz[j][0])
                pj *= dst_nz[j][1]
                j += 1
        groups.append((gi, gj))
    return groups


def getitem(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """x[idx]: basic indexing that leaves the channel dim whole passes labels; anything else freezes."""
    x, idx = args[0], args[1]
    lab = ctx.labels_of(x)
    if lab is None or not isinstance(out, torch.Tensor):
        return ctx.set_outputs(out, None)
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if any(isinstance(it, (torch.Tensor, list)) or (isinstance(it, bool)) for it in items):
        ctx.freeze(lab, f"advanced indexing at {ctx.where()}")
        return ctx.set_outputs(out, None)
    n_consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    expanded: list[Any] = []
    for it in items:
        if it is Ellipsis:
            expanded.extend([slice(None)] * (x.dim() - n_consuming))
        else:
            expanded.append(it)
    expanded.extend([slice(None)] * (x.dim() - sum(1 for it in expanded if it is not None)))
    in_dim = out_dim = 0
    for it in expanded:
        if it is None:
            out_dim += 1
            continue
        if in_dim == lab.dim:
            problem = _channel_index_problem(it, in_dim, lab.vec.numel())
            if problem is not None:
                ctx.freeze(lab, f"{problem} at {ctx.where()}; {STALE}")
                return ctx.set_outputs(out, None)
            return ctx.set_outputs(out, lab.moved(out_dim))
        if not isinstance(it, int):
            out_dim += 1
        in_dim += 1
    raise AssertionError("channel dim not reached while indexing")  # pragma: no cover


def _channel_index_problem(item: Any, dim: int, size: int) -> str | None:
    """Why indexing the channel dim with `item` would be wrong once channels are removed (None: it keeps them all).

    A slice with a bound written out (`x[:, :16]`) is fixed when the model was written. One is safe: `[0:b]` with a
    plain int `b >= size` keeps every channel, and still does once the dim shrinks (Python, TorchScript and ONNX
    Slice clamp the bound), as GhostNet's `torch.cat([x1, x2], 1)[:, :self.out_chs]` when the cat has `out_chs`."""
    if isinstance(item, slice) and item.start in (None, 0) and item.step in (None, 1) and _covers(item.stop, size):
        return None
    if isinstance(item, slice):
        shown = ":".join("" if v is None else str(int.__int__(v)) for v in (item.start, item.stop, item.step))
        return f"indexing slices the channel dim ({dim}) with fixed bounds [{shown.rstrip(':') or ':'}]"
    return f"indexing picks channel {item} of the channel dim ({dim})"


def _covers(stop: Any, size: int) -> bool:
    """Whether a slice's stop keeps a dim of `size` (or fewer) entries whole: None, or a plain int >= size."""
    if stop is None:
        return True
    return type(stop) is int and stop >= size


def split(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """chunk/split/narrow/select along another dim pass labels; along the channel dim see graph/cuts.py."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        use_all(watched_ints((args[1:], kwargs)))
        return ctx.set_outputs(out, None)
    d = cut_dim(name, args, kwargs, x.dim())
    if d == lab.dim:
        return cut_channels(ctx, name, args, kwargs, out, lab)
    use_all(watched_ints((args[1:], kwargs)))
    drops = name in ("select", "unbind")
    ctx.set_outputs(out, lab.moved(lab.dim - (1 if drops and d < lab.dim else 0)))


def cat(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """cat: along the channel dim the labels concatenate; along another dim the inputs pair like an add."""
    tensors = [t for t in _arg(args, kwargs, 0, "tensors") if isinstance(t, torch.Tensor)]
    if not isinstance(out, torch.Tensor):
        return unknown(ctx, name, args, kwargs, out)
    ndim = out.dim()
    if name == "stack":
        d = _norm_dim(int(_arg(args, kwargs, 1, "dim", 0)), ndim)
        lab = broadcast_pair(ctx, name, tensors, ndim - 1)
        return ctx.set_outputs(out, None if lab is None else lab.moved(lab.dim + (1 if d <= lab.dim else 0)))
    tensors = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)]  # legacy empty tensors
    d = _norm_dim(int(_arg(args, kwargs, 1, "dim", 0)), ndim)
    labs = [ctx.labels_of(t) for t in tensors]
    if not any(lab is not None and lab.dim == d for lab in labs):
        return ctx.set_outputs(out, broadcast_pair(ctx, name, tensors, ndim))
    parts = []
    for t, lab in zip(tensors, labs, strict=True):
        if lab is not None and lab.dim != d:
            ctx.freeze(lab, f"'{name}' joins channels along a different dim at {ctx.where()}")
            lab = None
        parts.append(lab.vec if lab is not None else fixed_vec(t.shape[d]))
    ctx.set_outputs(out, ChannelLabels(d, torch.cat(parts)))


def roll_flip(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """roll/flip along other dims pass labels; along the channel dim they freeze."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        return ctx.set_outputs(out, None)
    dims = _arg(args, kwargs, 2 if name == "roll" else 1, "dims")
    dims_n = _dims_arg(dims, x.dim())
    if dims_n is None or lab.dim in dims_n:
        ctx.freeze(lab, f"'{name}' moves positions along the channel dim at {ctx.where()}")
        return ctx.set_outputs(out, None)
    ctx.set_outputs(out, lab)


def size_read(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> Any:
    """Reading the channel count (x.shape, x.size(1)) gives a WatchedInt: using it freezes the channels."""
    x = args[0]
    lab = ctx.labels_of(x)
    if lab is None:
        return None
    where = ctx.where()
    reason = f"the model computes with its channel count (read by {name} at {where})"

    def on_use() -> None:
        ctx.freeze(lab, reason)

    dim = _arg(args, kwargs, 1, "dim") if name == "size" else None
    if name in ("shape.__get__", "size") and dim is None and isinstance(out, torch.Size):
        return WatchedSize(out, lab.dim, lab, on_use)
    if dim is not None and _norm_dim(int(dim), x.dim()) == lab.dim:
        return WatchedInt(int(out), lab, on_use)
    if name in ("numel", "nelement") or (name == "__len__" and lab.dim == 0):
        on_use()
    return None


def roi_pool(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """torchvision's roi_align / roi_pool: features [N, C, H, W] and boxes -> [K, C, h, w], channels kept in place."""
    x = args[0]
    lab = ctx.labels_of(x)
    for t in tensors_in((args[1:], kwargs)):
        ctx.freeze(ctx.labels_of(t), f"'{name}' reads channels as boxes at {ctx.where()}")
    if lab is not None and (lab.dim != 1 or x.dim() != 4 or not isinstance(out, torch.Tensor)):
        ctx.freeze(lab, f"'{name}' pools channels along dim {lab.dim}, not the feature dim 1, at {ctx.where()}")
        lab = None
    if isinstance(out, torch.Tensor):
        ctx.set_labels(out, lab)
    else:
        ctx.set_outputs(out, None)


def ignore(ctx: TraceContext, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Ops that return no tensor (size(), dim(), ...)."""
    if isinstance(out, torch.Tensor):
        ctx.set_outputs(out, None)


def build_table() -> dict[str, Handler]:
    """Canonical op name -> handler."""
    table: dict[str, Handler] = {}
    for names, handler in (
        (_UNARY, unary),
        (_NARY, nary),
        (_LIKE, like),
        (_REDUCE, reduce),
        (_SOFTMAX, softmax),
        (set(_SPATIAL), spatial),
        (SPLIT_OPS, split),
        (_PERMUTE, permute),
        (_VIEW, view),
        (_IGNORED_NON_TENSOR, ignore),
        (_SIZE_READS, size_read),
    ):
        for n in names:
            table[n] = handler
    table.update(
        {
            "pad": pad,
            "__getitem__": getitem,
            "cat": cat,
            "concat": cat,
            "concatenate": cat,
            "stack": cat,
            "squeeze": squeeze,
            "squeeze_": squeeze,
            "unsqueeze": squeeze,
            "unsqueeze_": squeeze,
            "expand": expand,
            "expand_as": expand,
            "broadcast_to": expand,
            "repeat": expand,
            "tile": expand,
            "__setitem__": setitem,
            "torchvision.roi_align": roi_pool,
            "torchvision.roi_pool": roi_pool,
            "roll": roll_flip,
            "flip": roll_flip,
        }
    )
    return table


TABLE = build_table()
