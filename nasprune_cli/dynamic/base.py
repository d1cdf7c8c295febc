"""The sliceable-module mixin, the registry of dynamic classes by exact type, make_dynamic and is_dynamic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from nasprune_cli.errors import NasPruneError

DYNAMIC_REGISTRY: dict[type[nn.Module], type[DynamicModule]] = {}
# lookups tried after the registry of exact types: users' registered layers, subclasses of the registered types
FALLBACK_LOOKUPS: list[Callable[[type[nn.Module]], type[DynamicModule] | None]] = []
# recipe type names of other libraries' layers, registered when a model uses them (transformers.Attention)
EXTERNAL_TYPE_NAMES: dict[type[nn.Module], str] = {}

_D = TypeVar("_D", bound="type[DynamicModule]")
_PLAIN_ATTR_TYPES = (bool, int, float, str, tuple, type(None))


def register(original: type[nn.Module]) -> Callable[[_D], _D]:
    """Class decorator: make the decorated class the dynamic class of the exact type `original`."""

    def wrap(cls: _D) -> _D:
        if original in DYNAMIC_REGISTRY:
            raise NasPruneError(f"dynamic registry: {type_label(original)} is registered twice")
        cls.original_cls = original
        DYNAMIC_REGISTRY[original] = cls
        return cls

    return wrap


class DynamicModule:
    """Mixin placed before a torch layer class: sliced forward from the original parameters, export to plain."""

    original_cls: ClassVar[type[nn.Module]]
    _nasprune_name: str
    _nasprune_index: dict[str, torch.Tensor | None]
    _nasprune_cache: dict[Any, Any]

    # ---- state -----------------------------------------------------------------------------------------------
    def _nasprune_init(self, name: str | None) -> None:
        """Called once by make_dynamic after the class swap."""
        self._nasprune_name = name or ""
        self._nasprune_index = {side: None for side in self.sides()}
        self._nasprune_cache = {}
        self._init_state()

    def _init_state(self) -> None:
        """Extra per-instance state of a dynamic class (kernel size, depth, ...)."""

    def _invalidate(self) -> None:
        self._nasprune_cache.clear()

    def _after_forward(self, tensors: dict[str, torch.Tensor | None]) -> None:
        """Write back what a forward updated in sliced copies of buffers (running statistics); most have none."""

    @property
    def _nasprune_label(self) -> str:
        """How errors name this layer: the torch type and, when known, the module name."""
        kind = type_label(self.original_cls)
        return f"{kind} '{self._nasprune_name}'" if self._nasprune_name else kind

    def _nasprune_error(self, message: str) -> NasPruneError:
        """A NasPruneError whose message starts with this layer's label."""
        return NasPruneError(f"{self._nasprune_label}: {message}")

    # ---- sides -----------------------------------------------------------------------------------------------
    def sides(self) -> tuple[str, ...]:
        """Names of the sliceable sides, e.g. ("in", "out")."""
        return ()

    def side_size(self, side: str) -> int:
        """Original size of a side."""
        self._check_side(side)
        raise NotImplementedError  # pragma: no cover - every class with sides overrides this

    def _check_side(self, side: str) -> None:
        if side not in self.sides():
            names = ", ".join(repr(s) for s in self.sides()) or "none"
            raise self._nasprune_error(f"unknown side {side!r} (its sides: {names})")

    def set_index(self, side: str, index: torch.Tensor | None) -> None:
        """Keep only these positions of a side (1-D integer tensor, ascending, unique); None keeps all."""
        self._check_side(side)
        if index is not None:
            index = self._validated(side, index)
            self._check_index(side, index)
        self._nasprune_index[side] = index
        self._invalidate()

    def get_index(self, side: str) -> torch.Tensor | None:
        """The index set on a side (None: all positions kept)."""
        self._check_side(side)
        return self._nasprune_index[side]

    def active_size(self, side: str) -> int:
        """Number of positions a side keeps."""
        index = self.get_index(side)
        return self.side_size(side) if index is None else int(index.numel())

    def _validated(self, side: str, index: torch.Tensor) -> torch.Tensor:
        where = f"set_index({side!r})"
        size = self.side_size(side)
        if not isinstance(index, torch.Tensor):
            raise self._nasprune_error(f"{where}: expected a 1-D integer tensor or None (got {type(index).__name__})")
        if index.dtype == torch.bool or index.dtype.is_floating_point or index.dtype.is_complex:
            raise self._nasprune_error(
                f"{where}: expected an integer tensor of positions (got dtype {index.dtype}); "
                "for a mask use torch.nonzero(mask).flatten()"
            )
        if index.dim() != 1:
            raise self._nasprune_error(f"{where}: expected a 1-D tensor (got shape {tuple(index.shape)})")
        index = index.detach().to("cpu", torch.long)
        if index.numel() == 0:
            raise self._nasprune_error(
                f"{where}: the index is empty; at least one of the {size} positions must be kept"
            )
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= size:
            raise self._nasprune_error(f"{where}: positions must be in [0, {size}) (got {low if low < 0 else high})")
        steps = index[1:] - index[:-1]
        if bool((steps == 0).any()):
            dup = int(index[1:][steps == 0][0])
            raise self._nasprune_error(
                f"{where}: the index has duplicate positions (e.g. {dup}); positions must be unique"
            )
        if bool((steps < 0).any()):
            raise self._nasprune_error(f"{where}: the index is not in ascending order; sort it first (torch.sort)")
        return index.clone()

    def _check_index(self, side: str, index: torch.Tensor) -> None:
        """Type-specific checks of a valid-looking index (grouped conv, GroupNorm, ...)."""

    def slice_index(self, side: str, device: torch.device) -> torch.Tensor | None:
        """The index of a side on `device`, or None when the side keeps every position (no slicing needed)."""
        index = self.get_index(side)
        if index is None or index.numel() == self.side_size(side):
            return None
        key = ("index", side, device)
        cached = self._nasprune_cache.get(key)
        if cached is None:
            cached = self._nasprune_cache[key] = index.to(device)
        return cached

    def _nasprune_device(self) -> torch.device:
        """Device of this layer's own parameters and buffers (cpu when it has none)."""
        assert isinstance(self, nn.Module)
        for tensor in [*self._parameters.values(), *self._buffers.values()]:
            if tensor is not None:
                return tensor.device
        return torch.device("cpu")

    # ---- export ----------------------------------------------------------------------------------------------
    def export(self) -> nn.Module:
        """A new plain module of the original class with the active sizes and sliced copies of the tensors."""
        raise NotImplementedError  # pragma: no cover - every dynamic class overrides this

    def _build_plain(self, kwargs: dict[str, Any], tensors: dict[str, torch.Tensor | None]) -> nn.Module:
        """Build the original class on the meta device, then give it copies of `tensors` (params and buffers)."""
        assert isinstance(self, nn.Module)
        plain = self.original_cls(**kwargs, device="meta")
        for name in list(plain._parameters):
            if plain._parameters[name] is None:
                continue
            source = self._parameters[name]
            assert source is not None and tensors[name] is not None, name
            value = tensors[name].detach().clone()
            setattr(plain, name, nn.Parameter(value, requires_grad=source.requires_grad))
        for name in list(plain._buffers):
            if plain._buffers[name] is None:
                continue
            assert tensors[name] is not None, name
            setattr(plain, name, tensors[name].detach().clone())
        for key, value in self.__dict__.items():  # plain user flags set on the layer travel with it
            if key not in plain.__dict__ and not key.startswith("_nasprune") and isinstance(value, _PLAIN_ATTR_TYPES):
                plain.__dict__[key] = value
        plain.training = self.training
        assert not any(t.is_meta for t in [*plain.parameters(), *plain.buffers()]), "export left a meta tensor"
        return plain

    def _active_note(self) -> str:
        parts = [
            f"{side}={self.active_size(side)}/{self.side_size(side)}"
            for side in self.sides()
            if self.get_index(side) is not None
        ]
        return f"active: {', '.join(parts)}" if parts else ""

    def extra_repr(self) -> str:
        """The torch layer's repr plus the active sizes when sliced."""
        base = super().extra_repr()  # type: ignore[misc]
        note = self._active_note()
        return f"{base}, {note}" if base and note else base or note


def type_label(cls: type[nn.Module]) -> str:
    """How recipes and messages name a layer type: "nn.Conv2d", "torchvision.ShiftedWindowAttention"."""
    package = cls.__module__.split(".")[0]
    return f"nn.{cls.__name__}" if package == "torch" else f"{package}.{cls.__name__}"


def take(tensor: torch.Tensor | None, dim: int, index: torch.Tensor | None) -> torch.Tensor | None:
    """index_select along dim, or the tensor itself when index is None (gradients flow to the original)."""
    if tensor is None or index is None:
        return tensor
    return tensor.index_select(dim, index)


def is_sequential_like(module_type: type) -> bool:
    """A subclass of nn.Sequential that keeps its forward (torchvision's AnyStage): it runs its children in order."""
    return (
        isinstance(module_type, type)
        and issubclass(module_type, nn.Sequential)
        and module_type is not nn.Sequential
        and module_type.forward is nn.Sequential.forward
    )


def is_dynamic(module: nn.Module | None) -> bool:
    """Whether a module has been converted by make_dynamic."""
    return isinstance(module, DynamicModule)


def dynamic_class_for(module_type: type[nn.Module]) -> type[DynamicModule] | None:
    """The dynamic class make_dynamic gives a layer of this type (None: it cannot be converted)."""
    cls = DYNAMIC_REGISTRY.get(module_type)
    if cls is None and is_sequential_like(module_type):
        cls = DYNAMIC_REGISTRY.get(nn.Sequential)
    for lookup in FALLBACK_LOOKUPS:
        if cls is None:
            cls = lookup(module_type)
    return cls


def make_dynamic(module: nn.Module, *, name: str | None = None) -> DynamicModule:
    """Convert a module in place (its class is swapped, its parameters kept); `name` is used in error messages."""
    if isinstance(module, DynamicModule):
        if name:
            module._nasprune_name = name
        return module
    cls = dynamic_class_for(type(module))
    if cls is None:
        supported = ", ".join(sorted(type_label(t) for t in DYNAMIC_REGISTRY))
        where = f" '{name}'" if name else ""
        raise NasPruneError(
            f"make_dynamic: layer{where} of type {type(module).__module__}.{type(module).__qualname__} cannot be "
            f"converted; supported types: {supported}, their subclasses that keep their tensors, and the layers "
            "registered with nasprune_cli.register_layer"
        )
    module.__class__ = cls
    assert isinstance(module, DynamicModule)
    module._nasprune_init(name)
    return module
