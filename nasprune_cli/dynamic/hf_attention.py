"""Dynamic transformers attention modules, pruned by whole heads (imported only for models that use transformers).

The module keeps its own forward: its q/k/v (and o) projections become dynamic linear layers whose output rows
(the o projection: input columns) follow the kept heads, and the head count is read from the projections' widths
(`view(..., -1, head_dim)`), so the attention math is transformers' own. With grouped-query attention a key/value
group is kept or removed with its query heads, so `num_key_value_groups` stays the same. The exported module is
the same class with smaller projections and per-layer head counts (`num_attention_heads`, `all_head_size`,
`num_key_value_heads` where the class has them); the shared config is not changed.
"""

from __future__ import annotations

import copy
import importlib
import sys

import torch
from torch import nn

from nasprune_cli.dynamic.base import EXTERNAL_TYPE_NAMES, DynamicModule, is_dynamic, make_dynamic, register
from nasprune_cli.graph.hf_layers import EXTERNAL_LAYERS, HeadsLayout, handle_hf_attention, heads_layout

RECIPE_TYPE = "transformers.Attention"
# (module, class) of the supported attention classes; those this transformers version lacks are skipped
SUPPORTED = (
    ("transformers.models.bert.modeling_bert", "BertSelfAttention"),
    ("transformers.models.roberta.modeling_roberta", "RobertaSelfAttention"),
    ("transformers.models.llama.modeling_llama", "LlamaAttention"),
    ("transformers.models.mistral.modeling_mistral", "MistralAttention"),
    ("transformers.models.qwen2.modeling_qwen2", "Qwen2Attention"),
    ("transformers.models.vit.modeling_vit", "ViTAttention"),
)


class DynamicHFAttention(DynamicModule):
    """Sides: "heads" (the query features, kept in whole key/value groups) and, with an output projection inside,
    "out" (the hidden size written, always whole)."""

    def _init_state(self) -> None:
        layout = self.layout()
        for proj in (layout.q, layout.k, layout.v, layout.o):
            if proj is not None:
                make_dynamic(getattr(self, proj), name=f"{self._nasprune_name}.{proj}" if self._nasprune_name else proj)

    def layout(self) -> HeadsLayout:
        """Projections and head layout of the original module."""
        assert isinstance(self, nn.Module)
        return heads_layout(self)

    def sides(self) -> tuple[str, ...]:
        """("heads", "out") with an output projection inside, else ("heads",)."""
        return ("heads", "out") if self.layout().o is not None else ("heads",)

    def side_size(self, side: str) -> int:
        """Query features (heads x head_dim), or the hidden size written."""
        self._check_side(side)
        layout = self.layout()
        if side == "heads":
            return layout.heads * layout.head_dim
        return getattr(self, layout.o).side_size("out")

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        if side == "out":
            if index.numel() != self.side_size("out"):
                raise self._nasprune_error("set_index('out'): the hidden size it writes is kept whole")
            return
        unit = self.layout().unit
        counts = torch.bincount(index // unit, minlength=self.side_size("heads") // unit)
        if bool(((counts != 0) & (counts != unit)).any()):
            raise self._nasprune_error(
                f"set_index('heads'): attention is pruned by whole key/value groups of {unit} query features "
                f"(kept per group: {counts.tolist()})"
            )

    def set_index(self, side: str, index: torch.Tensor | None) -> None:
        """Keep these query features (whole groups); the projections follow."""
        super().set_index(side, index)
        if side != "heads":
            return
        layout = self.layout()
        index = self.get_index("heads")
        kv = None
        if index is not None:
            groups = torch.unique(index // layout.unit)
            kv = (groups[:, None] * layout.head_dim + torch.arange(layout.head_dim)).flatten()
        getattr(self, layout.q).set_index("out", index)
        getattr(self, layout.k).set_index("out", kv)
        getattr(self, layout.v).set_index("out", kv)
        if layout.o is not None:
            getattr(self, layout.o).set_index("in", index)

    def side_magnitude(self, side: str) -> torch.Tensor | None:
        """Per query feature: L1 of its q row, its key/value group's k and v rows, and its o column (None: "out")."""
        if side != "heads":
            return None
        layout = self.layout()
        with torch.no_grad():
            score = getattr(self, layout.q).weight.detach().abs().sum(1).double()
            kv = sum(getattr(self, p).weight.detach().abs().sum(1).double() for p in (layout.k, layout.v))
            per_group = kv.view(-1, layout.head_dim).sum(1) / layout.unit  # shared by the group's query features
            score = score + per_group.repeat_interleave(layout.unit)
            if layout.o is not None:
                score = score + getattr(self, layout.o).weight.detach().abs().sum(0).double()
        return score

    def active_heads(self) -> int:
        """Query heads the active subnet keeps."""
        return self.active_size("heads") // self.layout().head_dim

    def export(self) -> nn.Module:
        """The same transformers class with the kept heads: smaller projections, per-layer head counts."""
        assert isinstance(self, nn.Module)
        layout = self.layout()
        heads = self.active_heads()
        config = getattr(self, "config", None)
        plain = copy.deepcopy(self, memo={id(config): config} if config is not None else None)
        for name, child in list(plain._modules.items()):
            if is_dynamic(child):
                plain._modules[name] = child.export()
        plain.__class__ = self.original_cls
        for key in [k for k in plain.__dict__ if k.startswith("_nasprune")]:
            del plain.__dict__[key]
        counts = {
            "num_attention_heads": heads,
            "num_heads": heads,
            "num_key_value_heads": heads // layout.groups,
            "all_head_size": heads * layout.head_dim,
        }
        for attr, value in counts.items():
            if type(plain.__dict__.get(attr)) is int:
                plain.__dict__[attr] = value
        return plain


def register_transformers(
    supported: tuple[tuple[str, str], ...] = SUPPORTED, base: type[DynamicHFAttention] = DynamicHFAttention
) -> list[type[nn.Module]]:
    """Register a dynamic class, the tracer's rule and the recipe type name of every supported attention class."""
    registered = []
    for module_name, class_name in supported:
        try:
            original = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if original in EXTERNAL_LAYERS:
            continue
        doc = f"Sliceable transformers {class_name}, pruned by whole heads."
        dynamic = type(f"Dynamic{class_name}", (base, original), {"__module__": base.__module__, "__doc__": doc})
        setattr(sys.modules[base.__module__], dynamic.__name__, dynamic)  # picklable by name
        register(original)(dynamic)
        EXTERNAL_LAYERS[original] = handle_hf_attention
        EXTERNAL_TYPE_NAMES[original] = RECIPE_TYPE
        registered.append(original)
    return registered


register_transformers()
