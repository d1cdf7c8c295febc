"""Channel rule of transformers' attention modules, each traced as one atomic op and pruned by whole heads.

The module's query heads are a new group of channels (its "heads" side, `num_heads x head_dim` wide): with
grouped-query attention a unit is one key/value group with its query heads, otherwise one head. The hidden size
the module reads (and, with an output projection, writes) stays whole. transformers is not imported here: the
layout is read from the module's attributes, and `nasprune_cli.dynamic.hf_attention` registers the classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.graph.context import CostTerm, TraceContext
from nasprune_cli.graph.labels import ChannelLabels, fixed_vec

# atomic layers of other libraries: exact type -> channel rule (filled by nasprune_cli.dynamic.hf_attention)
EXTERNAL_LAYERS: dict[type[nn.Module], Any] = {}


@dataclass(frozen=True)
class HeadsLayout:
    """Where a transformers attention module keeps its projections and how its heads are laid out."""

    q: str
    k: str
    v: str
    o: str | None  # the output projection inside the module (None: it lives in the next module, as in BERT)
    head_dim: int
    heads: int  # query heads
    groups: int  # query heads per key/value head (1 without grouped-query attention)
    fused: bool = False  # q, k and v are three equal segments of one projection's output (GPT-2's c_attn)

    @property
    def unit(self) -> int:
        """Query features pruned together: one key/value group's query heads."""
        return self.head_dim * self.groups


def heads_layout(module: nn.Module) -> HeadsLayout:
    """The projections and head layout of a transformers attention module (Llama / ViT, BERT or GPT-2 style)."""
    if hasattr(module, "c_attn"):  # GPT-2: Conv1D projections (weight [in, out]), q/k/v fused in c_attn
        head_dim = int(module.head_dim)
        heads = int(module.c_proj.weight.shape[0]) // head_dim
        return HeadsLayout("c_attn", "c_attn", "c_attn", "c_proj", head_dim=head_dim, heads=heads, groups=1, fused=True)
    if hasattr(module, "q_proj"):
        names: tuple[str, str, str, str | None] = ("q_proj", "k_proj", "v_proj", "o_proj")
        head_dim = int(module.head_dim)
    else:
        names = ("query", "key", "value", None)
        head_dim = int(module.attention_head_size)
    q_proj: nn.Linear = getattr(module, names[0])
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    return HeadsLayout(*names, head_dim=head_dim, heads=q_proj.out_features // head_dim, groups=groups)


def out_features(proj: nn.Module) -> int:
    """Output features of an nn.Linear, or of transformers' Conv1D (weight [in, out])."""
    return proj.out_features if isinstance(proj, nn.Linear) else int(proj.weight.shape[1])


def handle_hf_attention(ctx: TraceContext, name: str, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
    """Heads as a new group; the hidden size read (and written) frozen; FLOPs and params of the projections."""
    x = args[0] if args else kwargs.get("hidden_states")
    attn = out[0] if isinstance(out, tuple) and out else out
    kind = f"transformers.{type(m).__name__}"
    if not isinstance(x, torch.Tensor) or not isinstance(attn, torch.Tensor):
        for t in [*args, *kwargs.values()]:
            ctx.freeze(ctx.labels_of(t), f"{name} ({kind}) is called with unusual arguments")
        return
    if getattr(m, "is_cross_attention", False):
        for t in [*args, *kwargs.values()]:
            ctx.freeze(ctx.labels_of(t), f"{name} ({kind}): cross-attention is not pruned")
        return
    layout = heads_layout(m)
    hidden = x.shape[-1]
    reason = f"{name} ({kind}) reads the hidden size whole: transformers attention is pruned by whole heads only"
    lab = ctx.labels_of(x)
    ctx.freeze(lab, reason)
    in_vec = fixed_vec(hidden)
    heads = ctx.new_source(name, "heads", layout.heads * layout.head_dim)
    ctx.layer_info[name] = {
        "type": type(m).__name__,
        "head_width": layout.unit,
        "head_side": "heads",
        "out_name": "head_features",  # the hparam: query features kept (heads x head_dim)
    }
    tokens, keys = math.prod(x.shape[:-1]), x.shape[-2]
    kv_share = 2 / layout.groups  # key and value features per query feature
    ctx.add_flops(tokens * (1 + kv_share), [in_vec, heads])
    ctx.params.append(CostTerm(1 + kv_share, [in_vec, heads], ()))
    q_bias = getattr(m, layout.q).bias is not None
    if q_bias:
        ctx.params.append(CostTerm(1 + kv_share, [heads], ()))
    if getattr(getattr(m, "config", None), "_attn_implementation", None) == "eager":  # two matmuls fvcore counts
        ctx.add_flops(2 * tokens * keys, [heads])
    if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        ctx.set_labels(out[1], None)  # attention weights: one row per kept head
    if layout.o is None:
        ctx.set_labels(attn, ChannelLabels(attn.dim() - 1, heads))
        return
    o_proj: nn.Module = getattr(m, layout.o)
    out_vec = ctx.new_source(name, "out", out_features(o_proj))
    ctx.freeze(out_vec, f"{name} ({kind}) writes the hidden size whole: transformers attention is pruned by heads only")
    ctx.set_labels(attn, ChannelLabels(attn.dim() - 1, out_vec))
    ctx.add_flops(tokens, [heads, out_vec])
    ctx.params.append(CostTerm(1, [heads, out_vec], ()))
    if o_proj.bias is not None:
        ctx.params.append(CostTerm(1, [out_vec], ()))
