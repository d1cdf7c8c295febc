"""Channel importance of every width hparam's group: the order in which `SearchSpace.sort_parameters` keeps channels.

Methods (the `importance` search setting):

- ``magnitude`` (default): the L1 magnitude of every side of the group (producer rows, norm scales, consumer
  columns), each side divided by its mean, summed.
- ``consumer``: what removing a channel takes from the layers that read it. For every consumer (a convolution or
  linear layer reading the group's channels), channel j is weighted by ``||W[:, j]||^2``, the squared L2 norm of
  the weights that read it; each consumer's weights are divided by their sum, so a channel's importance is its
  share of every consumer's input weights, summed over the consumers. At fixed widths it keeps more accuracy right
  after pruning than ``magnitude`` (ResNet20 on digits), but once the search picks the widths it is not better, and
  after a short fine-tune it is worse at tight budgets (bench/notes.md), hence not the default.

- ``activation`` (Minitron-style): what the layers reading the group take in on the search's batches (``--data``,
  else the random batches). Channel j of a consumer side scores the mean |activation| of input position j over the
  batches and every token / spatial position (`nasprune_cli.activations`): an MLP neuron by its mean |activation|, a
  head by the summed mean |output| of its features. Each side is divided by its mean and the sides are summed. A
  neuron that is never active ranks last whatever its weights. On a small BERT text task (bench/text.py,
  bench/text_importance.py) it was neither clearly better nor worse than ``magnitude`` (ahead on some baselines and
  budgets, behind on others; the refit erases the difference), hence not the default (bench/notes.md, table 6).

A group with no consumer that has weights (it only feeds a norm layer, for example), or no measured activation,
falls back to ``magnitude``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from nasprune_cli.dynamic import DynamicModule, is_dynamic
from nasprune_cli.errors import NasPruneError
from nasprune_cli.graph.groups import Grouping

IMPORTANCE_METHODS = ("magnitude", "consumer", "activation")
DATA_METHODS = ("activation",)  # need input batches: SearchSpace.sort_parameters(method, inputs)
DEFAULT_IMPORTANCE = "magnitude"
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, *_TRANSPOSED)

Sides = Mapping[tuple[str, str], torch.Tensor]


def check_method(method: str) -> str:
    """The method name, or a NasPruneError listing the valid ones."""
    if method not in IMPORTANCE_METHODS:
        raise NasPruneError(f"importance: unknown method {method!r} (expected one of {', '.join(IMPORTANCE_METHODS)})")
    return method


def needs_inputs(method: str) -> bool:
    """Whether a method measures activations (SearchSpace.sort_parameters then needs input batches)."""
    return check_method(method) in DATA_METHODS


def group_importance(
    modules: Mapping[str, nn.Module],
    sides: Sides,
    grouping: Grouping,
    groups: Iterable[int],
    method: str = DEFAULT_IMPORTANCE,
    activations: Sides | None = None,
) -> dict[int, torch.Tensor]:
    """Importance of every position of each group (higher = kept longer), float64; `activations` (method
    "activation"): per (module, side) the mean |input| of every position, from `activation_scores`."""
    check_method(method)
    if method in DATA_METHODS and activations is None:
        raise NasPruneError(f"importance {method!r}: needs the activations measured on input batches")
    wanted = set(groups)
    magnitude = {g: torch.zeros(grouping.groups[g].size, dtype=torch.float64) for g in wanted}
    consumer = {g: torch.zeros(grouping.groups[g].size, dtype=torch.float64) for g in wanted}
    has_consumer: set[int] = set()
    activations = activations or {}
    for (module_name, side), vec in sides.items():
        module = modules.get(module_name)
        if not is_dynamic(module):
            continue
        ids = vec.clamp(min=0)
        groups_of = torch.where(vec >= 0, grouping.group_of[ids], torch.full_like(vec, -1))
        touched = [g for g in torch.unique(groups_of).tolist() if g in wanted]
        if not touched:
            continue
        scores = _side_magnitude(module, side)
        if scores is not None and scores.numel() == vec.numel():
            scores = scores.double()
            _scatter(magnitude, scores / scores.mean().clamp(min=1e-12), groups_of, ids, touched, grouping)
        if method == "activation":
            measured = activations.get((module_name, side))
            if measured is not None and measured.numel() == vec.numel() and bool(measured.sum() > 0):
                measured = measured.double()
                _scatter(consumer, measured / measured.mean(), groups_of, ids, touched, grouping)
                has_consumer.update(touched)
            continue
        if method == "magnitude" or side != "in":
            continue
        energy = _column_energy(module)
        if energy is None or energy.numel() != vec.numel():
            continue
        total = energy.sum()
        if not bool(total > 0):
            continue
        _scatter(consumer, energy / total, groups_of, ids, touched, grouping)
        has_consumer.update(touched)
    return {g: consumer[g] if g in has_consumer else magnitude[g] for g in wanted}


def _scatter(
    into: dict[int, torch.Tensor],
    scores: torch.Tensor,
    groups_of: torch.Tensor,
    ids: torch.Tensor,
    touched: list[int],
    grouping: Grouping,
) -> None:
    """Add a side's per-position scores to the positions of the groups they belong to."""
    scores = scores.double()
    for g in touched:
        mask = groups_of == g
        into[g].index_add_(0, grouping.pos_of[ids[mask]], scores[mask])


def _column_energy(module: nn.Module) -> torch.Tensor | None:
    """Squared L2 norm of the weights that read each input position of a convolution or linear layer."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(module, (*CONV_TYPES, nn.Linear)):
        return None
    w = weight.detach().double().pow(2)
    if isinstance(module, _TRANSPOSED):  # [in, out/groups, *k]: rows are the inputs
        return w.flatten(1).sum(1)
    groups = getattr(module, "groups", 1)
    if groups > 1:  # [out, in/groups, *k]: fold every group's rows onto its columns
        return _fold_groups(w, groups)
    return w.transpose(0, 1).flatten(1).sum(1)


def _side_magnitude(module: nn.Module | None, side: str) -> torch.Tensor | None:
    """Per-position weight magnitude of a layer side (L1 of the slice that touches it)."""
    if not isinstance(module, DynamicModule):
        return None
    own = getattr(module, "side_magnitude", None)  # a layer made of several (transformers attention)
    if callable(own):
        return own(side)
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    w = weight.detach().abs()
    if side in ("features", "channels"):
        return w.flatten() if w.dim() == 1 else None
    transposed = isinstance(module, _TRANSPOSED)
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    groups = getattr(module, "groups", 1)
    if groups > 1 and (side == "out") != transposed:  # weight rows are this side's positions
        return w.flatten(1).sum(1)
    if groups > 1:  # columns are local to each group: fold the group's rows onto its columns
        return _fold_groups(w, groups)
    dim = out_dim if side == "out" else in_dim
    return w.transpose(0, dim).flatten(1).sum(1)


def _fold_groups(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-input-position sums of a grouped weight [out, in/groups, *k]: each group's rows folded onto its columns."""
    per_row = w.shape[0] // groups
    return w.view(groups, per_row, w.shape[1], -1).sum((1, 3)).flatten()
