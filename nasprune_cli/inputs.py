"""Model inputs and running a model on them: dummy inputs, random batches shaped like them, the walk over nested
tensors, and eval mode.

A *dummy input* is a tensor, or a tuple of positional inputs whose last item may be a dict of keyword inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasprune_cli.errors import NasPruneError

if TYPE_CHECKING:
    from nasprune_cli.recipe.schema import Recipe

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
DEFAULT_SHAPE = [1, 3, 224, 224]
RANDOM_BATCH_SIZE = 8  # random calibration batches: BatchNorm needs more than one value per channel
MAX_INPUT_ELEMENTS = 100_000_000  # 400 MB as float32; the trace and the searches hold many tensors that large


def input_size_problem(shapes: list[list[int]], dtype: str = "float32") -> str | None:
    """Why a dummy input of these shapes is too large to allocate (every dimension counted), or None when it fits."""
    elements = sum(math.prod(s) for s in shapes)
    if elements <= MAX_INPUT_ELEMENTS:
        return None
    itemsize = torch.empty((), dtype=DTYPES.get(dtype, torch.float32)).element_size()
    shown = " + ".join("x".join(str(d) if d < 10**12 else _sci(d) for d in s) for s in shapes)
    return (
        f"{shown} is {_sci(elements)} elements ({_bytes(elements * itemsize)} as {dtype}), more than the "
        f"{MAX_INPUT_ELEMENTS:,} a dummy input may have; pass a smaller shape (e.g. 1,3,224,224): one sample is enough "
        "to trace and count FLOPs"
    )


def _sci(value: int) -> str:
    """An int as 1.23e+45 (also one beyond a float's range)."""
    try:
        return f"{float(value):.3g}"
    except OverflowError:
        return f"about 1e+{int(value.bit_length() * 0.30103)}"


def _bytes(count: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{_sci(count // scale) if count >= 1000 * scale else f'{count / scale:.3g}'} {unit}"
    return f"{count} bytes"


def make_dummy_input(shape: list[int] | list[list[int]], dtype: str = "float32", seed: int = 0) -> Any:
    """A deterministic dummy input: randn (seeded) for float dtypes, zeros for int64; a tuple for several shapes."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shape if shape and isinstance(shape[0], (list, tuple)) else [shape]
    problem = input_size_problem([list(s) for s in shapes], dtype)  # type: ignore[arg-type]
    if problem is not None:
        raise NasPruneError(f"dummy input: {problem}")
    tensors = []
    for s in shapes:
        if DTYPES[dtype].is_floating_point:
            tensors.append(torch.randn(*s, generator=gen).to(DTYPES[dtype]))
        else:
            tensors.append(torch.zeros(*s, dtype=DTYPES[dtype]))
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def dummy_input_for(recipe: Recipe | None) -> Any:
    """The dummy input a recipe's `input` section describes (1x3x224x224 float32 without a recipe)."""
    if recipe is None:
        return make_dummy_input(DEFAULT_SHAPE)
    return make_dummy_input(list(recipe.input.shape), recipe.input.dtype)


def input_spec(dummy_input: Any) -> dict[str, Any]:
    """{"shape", "dtype"} of a dummy input (a tensor or a tuple of them), as a recipe's input section spells them."""
    tensors = [dummy_input] if isinstance(dummy_input, torch.Tensor) else []
    if isinstance(dummy_input, tuple):
        tensors = [t for t in dummy_input if isinstance(t, torch.Tensor)]
    if not tensors:
        return {"shape": [], "dtype": "float32"}
    shapes = [list(t.shape) for t in tensors]
    return {
        "shape": shapes[0] if len(shapes) == 1 else shapes,
        "dtype": DTYPE_NAMES.get(tensors[0].dtype, "float32"),
    }


def input_tensors(dummy_input: Any) -> list[torch.Tensor]:
    """The tensors of a dummy input's top level (the input itself, or the tensor items of a tuple or list)."""
    items = dummy_input if isinstance(dummy_input, (tuple, list)) else (dummy_input,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def tensors_in(obj: Any, sort_keys: bool = False) -> list[torch.Tensor]:
    """Every tensor in a nested structure of tuples, lists and dicts, in order (dict keys sorted by str if asked)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensors_in(item, sort_keys)]
    if isinstance(obj, dict):
        keys = sorted(obj, key=str) if sort_keys else obj
        return [t for k in keys for t in tensors_in(obj[k], sort_keys)]
    return []


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run a model on inputs given like a dummy input: a tuple is positional args (a trailing dict is kwargs)."""
    if isinstance(inputs, tuple):
        if inputs and isinstance(inputs[-1], dict):
            return model(*inputs[:-1], **inputs[-1])
        return model(*inputs)
    return model(inputs)


def inputs_as_given(batch: Any) -> Any:
    """A batch that already is the model's inputs (random batches shaped like the dummy input)."""
    return batch


def random_batches(dummy_input: Any, count: int, seed: int = 0) -> list[Any]:
    """`count` random batches shaped like the dummy input (float tensors randn, batch dim at least 8)."""
    gen = torch.Generator().manual_seed(seed)

    def one(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            if t.dim() == 0:
                return t.clone()
            size = max(t.shape[0], RANDOM_BATCH_SIZE)
            if t.is_floating_point():
                return torch.randn((size, *t.shape[1:]), generator=gen).to(t.dtype)
            return _first_row_repeated(t, size)
        if isinstance(t, tuple):
            return tuple(one(x) for x in t)
        if isinstance(t, dict):
            return {k: one(v) for k, v in t.items()}
        return t

    return [one(dummy_input) for _ in range(count)]


def batched_input(dummy_input: Any, batch: int) -> Any:
    """The dummy input with its batch dimension set to `batch` (seeded randn drawn in each float tensor's dtype).

    Unlike `random_batches` (float32 draws cast to the dtype; nested tuples and dicts walked), the values are drawn
    in the tensor's own dtype and only a top-level tuple is walked; merging the two would change the inputs that one
    of them gives for float16 / bfloat16 / float64 or nested dummy inputs.
    """
    gen = torch.Generator().manual_seed(0)

    def grow(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        if t.is_floating_point():
            return torch.randn((batch, *t.shape[1:]), generator=gen, dtype=t.dtype)
        return _first_row_repeated(t, batch)

    if isinstance(dummy_input, tuple):
        return tuple(grow(t) for t in dummy_input)
    return grow(dummy_input)


def _first_row_repeated(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Ids / masks: the dummy's first row repeated `rows` times."""
    return t[:1].expand(rows, *t.shape[1:]).clone()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of `model` in eval mode inside the block; each one's training flag restored on exit."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def move_to(obj: Any, device: torch.device | str) -> Any:
    """A nested structure of tuples, lists and dicts with every tensor moved to `device` (other values kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple keeps its type
        return type(obj)(*(move_to(item, device) for item in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(item, device) for item in obj)
    if isinstance(obj, dict):
        return {key: move_to(value, device) for key, value in obj.items()}
    return obj
