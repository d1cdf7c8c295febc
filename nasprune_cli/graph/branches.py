"""Data-dependent control flow: the traced model turns a tensor computed from its input into a Python value.

`if x.sum() > 0:` (or `.item()`, `.tolist()`, `int(x)`, indexing a list with a tensor) lets the values of one input
decide which layers run. The trace follows one branch; a pruned model could take another on other inputs and meet
layers that were never traced, with channel counts they were not pruned for. So the module whose forward read the
value is frozen: every traced layer inside it and the channels of its inputs and outputs. Values read from
parameters, buffers or shapes do not depend on the input and are fine.

A value no prunable channel reaches (computed from the input alone, as transformers' mask builders compute from an
`attention_mask`: no layer's output, no tensor with channel ids) is the same in the original and in every pruned
model, so pruning cannot change the branch taken. Such a read is accepted with a warning when every layer inside the
reading module ran (no branch can reach a layer that was never traced) and none of the module's inputs has prunable
channels; otherwise it freezes as above.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nasprune_cli.graph.context import TraceContext
from nasprune_cli.inputs import tensors_in

# torch functions that give a tensor's values to Python (the bool of a condition, a number, a list, an index)
VALUE_READS = frozenset(
    (
        "__bool__",
        "item",
        "tolist",
        "__int__",
        "__float__",
        "__complex__",
        "__index__",
        "__contains__",
        "numpy",
        "is_nonzero",
        "equal",
        "allclose",
    )
)
# ops whose output depends on the shape of their first argument, not on its values
SHAPE_OF_FIRST = frozenset(
    (
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_tensor",
    )
)


def follow_values(ctx: TraceContext, name: str, args: tuple, tensors: Sequence[torch.Tensor], out: Any) -> None:
    """Mark the outputs of an op on input-dependent values as input-dependent (and on values of prunable channels
    as such); record a read of an input-dependent value."""
    if name in SHAPE_OF_FIRST:
        tensors = [t for t in tensors if not (args and t is args[0])]
    if name not in VALUE_READS and any(ctx.carries_channels(t) for t in tensors):
        ctx.mark_channel_values(out)
    if not any(ctx.from_input(t) for t in tensors):
        return
    if name in VALUE_READS:
        record_read(ctx, name, tensors)
    else:
        ctx.mark_from_input(out)


def record_read(ctx: TraceContext, op: str, tensors: Sequence[torch.Tensor]) -> None:
    """The innermost running module read an input-dependent value: freeze what the read and its inputs touch."""
    module = ctx.stack[-1] if ctx.stack else ""
    if not any(ctx.carries_channels(t) for t in tensors):  # decided when the module returns
        if module not in ctx.free_reads:
            ctx.free_reads[module] = (op, _code_location())
        return
    ctx.value_reads.setdefault(module, op)
    reason = branch_reason(ctx, module)
    inputs = ctx.call_inputs[-1] if ctx.call_inputs else []
    touched = any([ctx.freeze(ctx.labels_of(t), reason, overriding=True) for t in [*tensors, *inputs]])
    if touched:
        ctx.value_read_touched.add(module)


def module_returned(ctx: TraceContext, module: str, inputs: Sequence[torch.Tensor], output: Any) -> None:
    """A module that read an input-dependent value returns: its outputs' channels are frozen too. A read no prunable
    channel reached is kept only when every layer in the module ran and no input of it has prunable channels."""
    if module in ctx.free_reads and module not in ctx.value_reads and not _free_read_is_safe(ctx, module, inputs):
        ctx.value_reads[module] = ctx.free_reads.pop(module)[0]
        reason = branch_reason(ctx, module)
        if any([ctx.freeze(ctx.labels_of(t), reason, overriding=True) for t in inputs]):
            ctx.value_read_touched.add(module)
    if module in ctx.value_reads:
        reason = branch_reason(ctx, module)
        if any([ctx.freeze(ctx.labels_of(t), reason, overriding=True) for t in tensors_in(output)]):
            ctx.value_read_touched.add(module)


def _free_read_is_safe(ctx: TraceContext, module: str, inputs: Sequence[torch.Tensor]) -> bool:
    """Every parameter holder inside the module ran, and none of its inputs has prunable channels."""
    prefix = f"{module}." if module else ""
    if any(name.startswith(prefix) and name not in ctx.ran for name in ctx.holders):
        return False
    return not any(ctx.labels_of(t) is not None for t in inputs)


def _code_location() -> str:
    """The innermost frame of the model's code (not torch's, not nasprune's): "file.py:line (function)"."""
    frame = sys._getframe(1)
    while frame is not None:
        parts = Path(frame.f_code.co_filename).parts
        if "torch" not in parts and "nasprune_cli" not in parts:
            return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "unknown code"


def freeze_branching_modules(ctx: TraceContext) -> None:
    """After the run: freeze every traced layer inside a module that read an input-dependent value; warn about
    reads no channel could be attributed to and about the reads kept because no prunable channel reaches them."""
    for module, (op, where) in ctx.free_reads.items():
        if module not in ctx.value_reads:
            warnings.warn(
                f"{_where(ctx, module)} turns a tensor computed from the input into a Python value ('{op}' at "
                f"{where}), but no prunable channel reaches it and every layer in it ran: its layers stay prunable; "
                "if the model branches on it, check that the pruned model runs on inputs that take every branch",
                stacklevel=3,
            )
    for module, _op in ctx.value_reads.items():
        reason = branch_reason(ctx, module)
        prefix = f"{module}."
        for (layer, _side), record in ctx.sides.items():
            if not module or layer == module or layer.startswith(prefix):
                if ctx.freeze(record.vec, reason, overriding=True):
                    ctx.value_read_touched.add(module)
        if module not in ctx.value_read_touched:
            warnings.warn(
                f"{_where(ctx, module)} turns a tensor computed from the input into a Python value "
                f"('{ctx.value_reads[module]}'), but no prunable channel reaches it: if the model branches on it, "
                "check that the pruned model runs on inputs that take every branch",
                stacklevel=3,
            )


def branch_reason(ctx: TraceContext, module: str) -> str:
    """The frozen reason of the layers a data-dependent read affects."""
    where = _where(ctx, module)
    return (
        f"data-dependent control flow: {where} turns a tensor computed from the input into a Python value "
        f"('{ctx.value_reads[module]}', as in `if x.sum() > 0:`); other inputs may take another branch, so the "
        f"layers in {'the model' if not module else repr(module)} and its inputs and outputs keep every channel "
        "(branch on shapes or parameters to let them be pruned)"
    )


def _where(ctx: TraceContext, module: str) -> str:
    if not module:
        return f"the model's forward() ({ctx.kinds.get('', '?')})"
    return f"module '{module}' ({ctx.kinds.get(module, '?')})"
