"""Depth search of a transformers layer stack: an nn.ModuleList of decoder / encoder layers the model's forward
iterates (`for layer in self.layers[: self.config.num_hidden_layers]`), whose layers may be skipped.

The list cannot skip a layer itself (the model's forward iterates it), so each of its layers becomes skippable: a
skipped layer returns its `hidden_states` unchanged (the layers the tracer accepts return one tensor of the input's
shape). The export drops the skipped layers from the list, numbers the kept layers' `layer_idx` again (the key/value
cache indexes layers by it) and sets the shared config's `num_hidden_layers` (and its per-layer `layer_types`) to
the kept layers, so the model's own forward runs the shorter stack.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from torch import nn

from nasprune_cli.dynamic.base import FALLBACK_LOOKUPS, DynamicModule

RECIPE_TYPE = "transformers.Layers"
_SKIPPABLE: dict[type[nn.Module], type[DynamicModule]] = {}


def is_layer_stack(module: nn.Module) -> bool:
    """An nn.ModuleList of two or more transformers layers of one class (a model's decoder / encoder layers)."""
    if type(module) is not nn.ModuleList or len(module) < 2:
        return False
    kinds = {type(child) for child in module}
    kind = next(iter(kinds))
    return len(kinds) == 1 and kind.__module__.startswith("transformers.")


class SkippableLayer(DynamicModule):
    """A layer of a stack that returns its hidden states unchanged while skipped; it has no sliceable sides."""

    original_cls: ClassVar[type[nn.Module]]
    _nasprune_skip: bool

    def _init_state(self) -> None:
        self._nasprune_skip = False

    def side_size(self, side: str) -> int:
        """A layer of a stack has no sides: always raises."""
        self._check_side(side)
        raise AssertionError("unreachable")  # pragma: no cover

    def skipped(self) -> frozenset[int]:
        """{0} (the layer itself) while skipped, else empty: a skipped layer runs other than in the original."""
        return frozenset({0}) if self._nasprune_skip else frozenset()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The layer's own forward, or its hidden states unchanged while skipped."""
        if self._nasprune_skip:
            return args[0] if args else kwargs["hidden_states"]
        return super().forward(*args, **kwargs)

    def export(self) -> nn.Module:
        """The layer as its own class (its submodules exported already)."""
        plain = copy.copy(self)
        plain.__class__ = self.original_cls
        for key in [k for k in plain.__dict__ if k.startswith("_nasprune")]:
            del plain.__dict__[key]
        return plain


def skippable_class(module_type: type[nn.Module]) -> type[DynamicModule]:
    """The skippable subclass of a layer class (made once)."""
    if module_type not in _SKIPPABLE:
        name = f"Skippable{module_type.__name__}"
        doc = f"{module_type.__name__} that can be skipped (depth search of its stack)."
        cls = type(name, (SkippableLayer, module_type), {"__module__": __name__, "__doc__": doc})
        cls.original_cls = module_type
        setattr(sys.modules[__name__], name, cls)  # picklable by name
        _SKIPPABLE[module_type] = cls
    return _SKIPPABLE[module_type]


class DynamicLayerList(DynamicModule, nn.ModuleList):
    """A transformers layer stack whose layers can be skipped (depth search); it has no sliceable sides."""

    original_cls: ClassVar[type[nn.Module]] = nn.ModuleList

    _nasprune_skipped: frozenset[int]

    def _init_state(self) -> None:
        self._nasprune_skipped = frozenset()
        for index, layer in enumerate(self):
            if not isinstance(layer, SkippableLayer):
                layer.__class__ = skippable_class(type(layer))
                layer._nasprune_init(f"{self._nasprune_name}.{index}" if self._nasprune_name else str(index))

    def side_size(self, side: str) -> int:
        """A layer stack has no sides: always raises."""
        self._check_side(side)
        raise AssertionError("unreachable")  # pragma: no cover

    def set_skipped(self, positions: Iterable[int] | None) -> None:
        """Skip the layers at these positions (0-based); None runs them all."""
        skipped = frozenset(positions or ())
        bad = [p for p in skipped if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(self)]
        if bad:
            raise self._nasprune_error(f"set_skipped({sorted(bad, key=str)!r}): expected positions in [0, {len(self)})")
        self._nasprune_skipped = skipped
        for index, layer in enumerate(self):
            layer._nasprune_skip = index in skipped

    def skipped(self) -> frozenset[int]:
        """Positions of the layers that are skipped."""
        return self._nasprune_skipped

    def export(self) -> nn.Module:
        """A plain nn.ModuleList of the kept layers, numbered again, with the config's layer count to match."""
        skipped = self.skipped()
        kept = [layer for i, layer in enumerate(self) if i not in skipped]
        plain = nn.ModuleList(kept)
        plain.training = self.training
        for new_index, layer in enumerate(kept):
            for module in layer.modules():
                if type(module.__dict__.get("layer_idx")) is int:
                    module.__dict__["layer_idx"] = new_index
        config = next((m.config for layer in kept for m in layer.modules() if hasattr(m, "config")), None)
        if skipped and config is not None:
            old = len(self)
            if getattr(config, "num_hidden_layers", None) == old:
                config.num_hidden_layers = len(kept)
            types = getattr(config, "layer_types", None)
            if isinstance(types, list) and len(types) == old:
                config.layer_types = [t for i, t in enumerate(types) if i not in skipped]
        return plain

    def _active_note(self) -> str:
        skipped = self.skipped()
        return f"active: skips {sorted(skipped)} of {len(self)}" if skipped else ""


def _layer_list(module_type: type[nn.Module]) -> type[DynamicModule] | None:
    return DynamicLayerList if module_type is nn.ModuleList else None


FALLBACK_LOOKUPS.append(_layer_list)
