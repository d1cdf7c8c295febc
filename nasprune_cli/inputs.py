"""Model inputs and running a model on them: dummy inputs, random batches shaped like them, the walk over nested
tensors, and eval mode.

A *dummy input* is a tensor, or a tuple of positional inputs whose last item may be a dict of keyword inputs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
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


def make_dummy_input(
    shape: list[int] | list[list[int]],
    dtype: str = "float32",
    seed: int = 0,
    *,
    high: int | None = None,
    keywords: Mapping[str, Any] | None = None,
) -> Any:
    """A deterministic dummy input: randn (seeded) for float dtypes; for int64 random ids in [0, high), or zeros
    without `high`; a tuple for several shapes or with `keywords` (a trailing dict: "ones" / "zeros" make int64
    tensors shaped like the first input, other values are passed as they are)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shape if shape and isinstance(shape[0], (list, tuple)) else [shape]
    problem = input_size_problem([list(s) for s in shapes], dtype)  # type: ignore[arg-type]
    if problem is not None:
        raise NasPruneError(f"dummy input: {problem}")
    tensors = []
    for s in shapes:
        if DTYPES[dtype].is_floating_point:
            tensors.append(torch.randn(*s, generator=gen).to(DTYPES[dtype]))
        elif high is not None:
            tensors.append(torch.randint(0, high, tuple(s), generator=gen, dtype=DTYPES[dtype]))
        else:
            tensors.append(torch.zeros(*s, dtype=DTYPES[dtype]))
    if keywords:
        fills = {"ones": torch.ones, "zeros": torch.zeros}
        named = {
            k: fills[v](*shapes[0], dtype=torch.int64) if isinstance(v, str) and v in fills else v
            for k, v in keywords.items()
        }
        return (*tensors, named)
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def dummy_input_for(recipe: Recipe | None, model: nn.Module | None = None) -> Any:
    """The dummy input a recipe's `input` section describes (1x3x224x224 float32 without a recipe), completed for
    the model (token ids within its vocabulary, caches off: see `dummy_input_from_spec`)."""
    if recipe is None:
        return dummy_input_from_spec({"shape": DEFAULT_SHAPE}, model)
    return dummy_input_from_spec(recipe.input.model_dump(), model)


def dummy_input_from_spec(spec: Mapping[str, Any], model: nn.Module | None = None) -> Any:
    """The dummy input of an input section (as a recipe or a stored file spells it) for this model: int64 ids
    drawn in [0, input.high) or [0, config.vocab_size), its keyword inputs, and use_cache=False where the model's
    forward takes it (no key/value caches while tracing, counting FLOPs or searching)."""
    dtype = spec.get("dtype", "float32")
    shape = list(spec["shape"])
    if _takes_token_ids(model) and (DTYPES[dtype].is_floating_point or len(shape) != 2):
        found = f"{dtype} of shape {shape}"
        raise NasPruneError(
            f"input: {type(model).__name__} takes token ids (its forward's first input is input_ids), expected "
            f"int64 of shape BATCH,SEQUENCE (found {found}); pass --input-dtype int64 and --input-shape 1,128, or "
            "set input.dtype: int64 and input.shape: [1, 128] in the recipe"
        )
    high = token_bound(model, spec.get("high")) if not DTYPES[dtype].is_floating_point else None
    keywords = {**model_keywords(model), **dict(spec.get("keywords") or {})}
    return make_dummy_input(shape, dtype, high=high, keywords=keywords)


def token_bound(model: nn.Module | None, high: int | None = None) -> int | None:
    """The exclusive upper bound of random token ids: `high` when given, else the model's `config.vocab_size`."""
    if high is not None:
        return high
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return vocab if type(vocab) is int and vocab > 0 else None


def _takes_token_ids(model: nn.Module | None) -> bool:
    """Whether a model's forward takes `input_ids` first (a transformers language model)."""
    try:
        names = list(inspect.signature(model.forward).parameters) if model is not None else []
    except (TypeError, ValueError):
        return False
    return bool(names) and names[0] == "input_ids"


def model_keywords(model: nn.Module | None) -> dict[str, Any]:
    """Keyword inputs always passed to this model: use_cache=False where its forward takes `use_cache`."""
    if model is None:
        return {}
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in parameters else {}


def input_spec(dummy_input: Any, high: int | None = None) -> dict[str, Any]:
    """{"shape", "dtype"} of a dummy input (a tensor or a tuple of them), as a recipe's input section spells them;
    with "high" when given and "keywords" for keyword tensors of ones or zeros."""
    tensors = [dummy_input] if isinstance(dummy_input, torch.Tensor) else []
    if isinstance(dummy_input, tuple):
        tensors = [t for t in dummy_input if isinstance(t, torch.Tensor)]
    if not tensors:
        return {"shape": [], "dtype": "float32"}
    shapes = [list(t.shape) for t in tensors]
    spec: dict[str, Any] = {
        "shape": shapes[0] if len(shapes) == 1 else shapes,
        "dtype": DTYPE_NAMES.get(tensors[0].dtype, "float32"),
    }
    if high is not None and not tensors[0].is_floating_point():
        spec["high"] = high
    named = keyword_inputs(dummy_input)
    keywords = {k: _fill_name(v) for k, v in named.items() if isinstance(v, torch.Tensor)}
    if keywords and None not in keywords.values():
        spec["keywords"] = keywords
    return spec


def keyword_inputs(dummy_input: Any) -> dict[str, Any]:
    """The keyword inputs of a dummy input (the trailing dict of a tuple; empty when there is none)."""
    if isinstance(dummy_input, tuple) and dummy_input and isinstance(dummy_input[-1], dict):
        return dummy_input[-1]
    return {}


def _fill_name(t: torch.Tensor) -> str | None:
    """ "ones" / "zeros" for a keyword tensor of ones / zeros (None: other values)."""
    if bool((t == 1).all()):
        return "ones"
    return "zeros" if bool((t == 0).all()) else None


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


class PositionalModel(nn.Module):
    """A model called with positional tensors only, as the jit tracer (fvcore, TorchScript, ONNX) calls it: its
    positional inputs, then its keyword tensors in order; other keyword values are bound; the output's tensors are
    returned as a tuple (a transformers ModelOutput is a dict the tracer does not take)."""

    def __init__(self, model: nn.Module, positional: int, keywords: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.positional = positional
        self.tensor_keys = [k for k, v in keywords.items() if isinstance(v, torch.Tensor)]
        self.constants = {k: v for k, v in keywords.items() if not isinstance(v, torch.Tensor)}

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The model on its positional and keyword inputs; its output's tensors in order."""
        named = dict(zip(self.tensor_keys, args[self.positional :], strict=True))
        return tuple(tensors_in(self.model(*args[: self.positional], **named, **self.constants)))


def positional_model(model: nn.Module, dummy_input: Any) -> tuple[PositionalModel, tuple[torch.Tensor, ...]]:
    """The model wrapped to take the dummy input's tensors positionally, and those tensors."""
    items = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    named = keyword_inputs(dummy_input)
    positional = tuple(items[:-1] if items and isinstance(items[-1], dict) else items)
    tensors = tuple(v for v in named.values() if isinstance(v, torch.Tensor))
    return PositionalModel(model, len(positional), named), (*positional, *tensors)


def inputs_as_given(batch: Any) -> Any:
    """A batch that already is the model's inputs (random batches shaped like the dummy input)."""
    return batch


def random_batches(dummy_input: Any, count: int, seed: int = 0, high: int | None = None) -> list[Any]:
    """`count` random batches shaped like the dummy input (float tensors randn, batch dim at least 8; positional
    integer inputs random ids in [0, high) when `high` is given, else, like keyword tensors, the first row repeated).
    A list of tensors (a detector's images) is a batch of samples: at least 8 new ones, each shaped like the dummy's
    (cycling through them)."""
    gen = torch.Generator().manual_seed(seed)

    def one(t: Any, ids: bool = True) -> Any:
        if isinstance(t, torch.Tensor):
            return t.clone() if t.dim() == 0 else _random_like(t, max(t.shape[0], RANDOM_BATCH_SIZE), gen, ids, high)
        if isinstance(t, list) and t and all(isinstance(x, torch.Tensor) for x in t):
            rows = max(len(t), RANDOM_BATCH_SIZE)
            return [_random_like(t[i % len(t)][None], 1, gen, ids, high)[0] for i in range(rows)]
        if isinstance(t, tuple):
            return tuple(one(x, ids) for x in t)
        if isinstance(t, dict):
            return {k: one(v, False) for k, v in t.items()}
        return t

    return [one(dummy_input) for _ in range(count)]


def _random_like(t: torch.Tensor, rows: int, gen: torch.Generator, ids: bool, high: int | None) -> torch.Tensor:
    """`rows` random rows shaped like t's (randn cast to a float dtype; ids in [0, high); else t's first row)."""
    if t.is_floating_point():
        return torch.randn((rows, *t.shape[1:]), generator=gen).to(t.dtype)
    if ids and high is not None:
        return torch.randint(0, high, (rows, *t.shape[1:]), generator=gen, dtype=t.dtype)
    return _first_row_repeated(t, rows)


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

    if isinstance(dummy_input, tuple):  # keyword tensors (a trailing dict: masks) grow with the batch too
        return tuple({k: grow(v) for k, v in t.items()} if isinstance(t, dict) else grow(t) for t in dummy_input)
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
