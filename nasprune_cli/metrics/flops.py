"""FLOPs and params: fvcore is the ground truth; CostModel is the fast estimator built once per space.

FLOPs follow fvcore's convention: one FLOP per multiply-add, counted on the dummy input with the model in
eval mode; ops fvcore does not count (elementwise add, activations, max-pooling) are not included.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune_cli.constraints import Cost
from nasprune_cli.errors import TraceError
from nasprune_cli.inputs import eval_mode, input_tensors, keyword_inputs, positional_model

FLOPS_UNIT = "fvcore FLOPs: one per multiply-add, on the dummy input, eval mode"


def _as_tuple(dummy_input: Any) -> tuple:
    """fvcore wants a tuple of positional inputs."""
    if isinstance(dummy_input, tuple):
        if dummy_input and isinstance(dummy_input[-1], dict):
            return dummy_input[:-1]
        return dummy_input
    return (dummy_input,)


def _counted(model: nn.Module, dummy_input: Any) -> tuple[nn.Module, tuple, str]:
    """(module, positional inputs, prefix of its module names) that fvcore counts for a model and dummy input."""
    if not keyword_inputs(dummy_input) and not _returns_model_output(model):
        return model, _as_tuple(dummy_input), ""
    wrapper, args = positional_model(model, dummy_input)
    return wrapper, args, "model."


def _returns_model_output(model: nn.Module) -> bool:
    """Whether a model is a transformers PreTrainedModel (a ModelOutput); transformers is not imported for this."""
    import sys

    module = sys.modules.get("transformers")
    return module is not None and isinstance(model, module.PreTrainedModel)


def fvcore_flops(model: nn.Module, dummy_input: Any, by_module: bool = False) -> float | dict[str, float]:
    """FLOPs of a model on the dummy input as fvcore counts them (eval mode; training flags restored)."""
    with warnings.catch_warnings():  # fvcore.nn's import decorates a loss with torch.jit.script (deprecated)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with eval_mode(model), torch.no_grad():
            counted, args, prefix = _counted(model, dummy_input)
            analysis = FlopCountAnalysis(counted, args)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            if by_module:
                by_name = {k: float(v) for k, v in analysis.by_module().items()}
                if prefix:  # the wrapper's names: "" and "model" are the model, "model.x" is x
                    by_name = {k[len(prefix) :]: v for k, v in by_name.items() if k.startswith(prefix)} | {
                        "": by_name[""]
                    }
                return by_name
            return float(analysis.total())
    except Exception as exc:  # noqa: BLE001 - fvcore's jit trace fails in many ways; report one line
        raise TraceError(
            f"fvcore could not count the model's FLOPs on the dummy input of shape {_shapes(dummy_input)}: "
            f"{type(exc).__name__}: {exc} (does the model run on that input? set it with --input-shape or the "
            "recipe's input.shape)"
        ) from exc


def _shapes(dummy_input: Any) -> str:
    """Shapes of the tensors of a dummy input, e.g. '[1, 3, 224, 224]' or '[1, 3, 8, 8]; [1, 10]'."""
    return "; ".join(str(list(t.shape)) for t in input_tensors(dummy_input)) or "?"


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class _Term:
    factor: float
    const: list[float]  # per vec: positions always kept
    parts: list[list[tuple[int, torch.Tensor]]]  # per vec: (group, counts per group position)
    gates: list[tuple[str, int]] = field(default_factory=list)  # (depth hparam, child index) that must be active
    kernel: tuple[str, int, int] | None = None  # (kernel hparam, original k, spatial dims)
    cums: list[list[tuple[int, list[int]]]] = field(default_factory=list)  # per vec: (group, kept count by width)
    einsum: bool = False  # round like fvcore's einsum count: floor(2 * value to 4 significant digits / 2)


class CostModel:
    """FLOPs and params of any subnet from per-op formulas; exact w.r.t. fvcore, no model run needed."""

    def __init__(self, flop_terms: list[_Term], param_terms: list[_Term], group_sizes: Mapping[int, int]) -> None:
        self.flop_terms = flop_terms
        self.param_terms = param_terms
        self.orders: dict[int, torch.Tensor] = {g: torch.arange(n) for g, n in group_sizes.items()}
        self.refresh()

    @staticmethod
    def make_term(
        factor: float,
        vecs: Sequence[torch.Tensor],
        group_of: torch.Tensor,
        pos_of: torch.Tensor,
        group_sizes: Mapping[int, int],
        gates: list[tuple[str, int]] | None = None,
        kernel: tuple[str, int, int] | None = None,
        einsum: bool = False,
    ) -> _Term:
        """Precompute, for a factor * prod(kept(vec)) term, the counts per configurable group position."""
        consts, parts = [], []
        for vec in vecs:
            ids = vec[vec >= 0]
            groups = group_of[ids] if ids.numel() else ids
            configurable = torch.tensor([int(g) in group_sizes for g in groups.tolist()], dtype=torch.bool)
            consts.append(float(vec.numel() - int(configurable.sum())))
            vec_parts = []
            for g in torch.unique(groups[configurable]).tolist() if configurable.any() else []:
                pos = pos_of[ids[configurable & (groups == g)]]
                vec_parts.append((g, torch.bincount(pos, minlength=group_sizes[g])))
            parts.append(vec_parts)
        return _Term(float(factor), consts, parts, gates or [], kernel, einsum=einsum)

    def set_order(self, group: int, order: torch.Tensor) -> None:
        """Importance order of a group's positions (kept first)."""
        self.orders[group] = order
        self.refresh()

    def refresh(self) -> None:
        """Recompute cumulative kept counts after an order change."""
        for term in (*self.flop_terms, *self.param_terms):
            term.cums = [
                [(g, torch.cumsum(c[self.orders[g]], 0).tolist()) for g, c in vec_parts] for vec_parts in term.parts
            ]

    @staticmethod
    def _eval(terms: list[_Term], widths: Mapping[int, int], hparams: Mapping[str, int]) -> float:
        total = 0.0
        for term in terms:
            if any(hparams.get(h, math.inf) <= idx for h, idx in term.gates):
                continue
            value = term.factor
            if term.kernel is not None and term.kernel[0] in hparams:
                name, k0, nd = term.kernel
                value *= (hparams[name] / k0) ** nd
            for const, cums in zip(term.const, term.cums, strict=True):
                kept = const
                for g, cum in cums:
                    kept += cum[widths.get(g, len(cum)) - 1]
                value *= kept
            if term.einsum:
                value = math.floor(float(f"{2 * value:.3e}") / 2)
            total += value
        return total

    def cost(self, widths: Mapping[int, int], hparams: Mapping[str, int]) -> Cost:
        """Cost of a subnet given each configurable group's width and the other hparams (depth, kernel)."""
        return Cost(self._eval(self.flop_terms, widths, hparams), self._eval(self.param_terms, widths, hparams))
