"""SearchSpace: the hparams of a converted model (one per group of coupled channels), subnets and export."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.activations import activation_scores
from nasprune_cli.constraints import Cost
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.errors import NasPruneError
from nasprune_cli.graph.groups import ChannelGroup, Grouping
from nasprune_cli.hparams import Hparam, depth_gates
from nasprune_cli.importance import DEFAULT_IMPORTANCE, group_importance, needs_inputs
from nasprune_cli.metrics.flops import CostModel
from nasprune_cli.metrics.latency import LatencyModel


@dataclass(frozen=True)
class FrozenLayer:
    """A layer whose channels are kept whole, and why."""

    name: str
    reason: str


class SearchSpace:
    """A converted model plus its hparams; select a subnet, measure it, export it."""

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        hparams: dict[str, Hparam],
        frozen: list[FrozenLayer],
        grouping: Grouping,
        group_hparams: dict[str, int],
        sides: dict[tuple[str, str], torch.Tensor],
        cost_model: CostModel,
        original_cost: Cost,
        *,
        stages: dict[str, dict[str, float]] | None = None,
    ) -> None:
        self.model = model
        self.dummy_input = dummy_input
        self.hparams = hparams
        self.frozen = frozen
        self.grouping = grouping
        self.original_cost = original_cost
        self.original_stages = stages or {}  # stage -> {"flops", "params"} of the original (metrics/stages.py)
        self._group_hparams = group_hparams  # width hparam name -> group index
        self._sides = sides  # (module, side) -> labels
        self._cost_model = cost_model
        self._orders = {
            g: _group_order(grouping.groups[g], torch.zeros(grouping.groups[g].size)) for g in group_hparams.values()
        }
        for g, order in self._orders.items():
            cost_model.set_order(g, order)
        self._group_ids = {g: torch.nonzero(grouping.group_of == g).flatten() for g in group_hparams.values()}
        self._active = {name: hp.original for name, hp in hparams.items()}
        self._modules = dict(model.named_modules())
        self._skippable = self._skippable_children()
        self.latency_model: LatencyModel | None = None
        self.order_locked = False  # True once trained: the search keeps the channel order the training trained
        self.select(self._active)

    # ---- configs -------------------------------------------------------------------------------------------
    def config(self) -> dict[str, int]:
        """The active value of every configurable hparam."""
        return dict(self._active)

    def max(self) -> dict[str, int]:
        """The largest subnet (the original model)."""
        return {n: hp.choices[-1] for n, hp in self.hparams.items()}

    def min(self) -> dict[str, int]:
        """The smallest subnet."""
        return {n: hp.choices[0] for n, hp in self.hparams.items()}

    def centroid(self) -> dict[str, int]:
        """The middle choice of every hparam."""
        return {n: hp.choices[len(hp.choices) // 2] for n, hp in self.hparams.items()}

    def size(self) -> int:
        """Number of distinct subnets."""
        return math.prod(len(hp.choices) for hp in self.hparams.values())

    def sample(self, rng: random.Random | int | None = None) -> dict[str, int]:
        """Select a random subnet (seeded) and return its config."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        config = {n: rng.choice(self.hparams[n].choices) for n in sorted(self.hparams)}
        self.select(config)
        return config

    def complete_config(self, config: Mapping[str, int]) -> dict[str, int]:
        """Validate a (partial) config and complete it with the active values."""
        full = dict(self._active)
        for name, value in config.items():
            if name not in self.hparams:
                raise NasPruneError(
                    f"subnet config: unknown hparam '{name}' (the space has {len(self.hparams)} hparams; "
                    "list them with `nasprune convert`)"
                )
            if value not in self.hparams[name].choices:
                choices = list(self.hparams[name].choices)
                raise NasPruneError(f"subnet config: {name}={value!r} is not a choice (expected one of {choices})")
            full[name] = int(value)
        return full

    def select(self, config: Mapping[str, int]) -> None:
        """Make a subnet active: set the slicing index of every dynamic layer."""
        self._active = self.complete_config(config)
        keep_ids = torch.ones(len(self.grouping.group_of), dtype=torch.bool)
        for name, g in self._group_hparams.items():
            keep_pos = torch.zeros(self.grouping.groups[g].size, dtype=torch.bool)
            keep_pos[self._orders[g][: self._active[name]]] = True
            ids = self._group_ids[g]
            keep_ids[ids] = keep_pos[self.grouping.pos_of[ids]]
        for (module_name, side), vec in self._sides.items():
            module = self._modules.get(module_name)
            if not is_dynamic(module):
                continue
            kept = (vec < 0) | keep_ids[vec.clamp(min=0)]
            module.set_index(side, None if bool(kept.all()) else torch.nonzero(kept).flatten())
        skipped: dict[str, set[int]] = {seq: set() for seq, _, _, _ in self._skippable}
        for seq, position, hp_name, threshold in self._skippable:
            if self._active[hp_name] <= threshold:
                skipped[seq].add(position)
        for seq, positions in skipped.items():
            self._modules[seq].set_skipped(positions)
        for name, hp in self.hparams.items():
            if hp.kind == "kernel":
                module = self._modules[name.rsplit(".", 1)[0]]
                module.set_kernel_size(None if self._active[name] == hp.original else self._active[name])

    def _skippable_children(self) -> list[tuple[str, int, str, int]]:
        """Per skippable child: its Sequential's name, its position there, its depth hparam and threshold."""
        out = []
        for child, (hp_name, threshold) in depth_gates(self.hparams).items():
            seq, _, local = child.rpartition(".")
            out.append((seq, list(self._modules[seq]._modules).index(local), hp_name, threshold))
        return out

    # ---- cost ----------------------------------------------------------------------------------------------
    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        """FLOPs and params of a subnet from the fast cost model (equal to fvcore's count); with a latency table
        attached, also its predicted latency in ms."""
        full = self._active if config is None else self.complete_config(config)
        widths = {g: full[name] for name, g in self._group_hparams.items()}
        cost = self._cost_model.cost(widths, full)
        if self.latency_model is None:
            return cost
        latency = self.latency_model.predict(full, cost.flops / max(self.original_cost.flops, 1.0))
        return Cost(cost.flops, cost.params, latency)

    def attach_latency(self, model: LatencyModel | None) -> None:
        """Predict latency with a table measured for this space (None detaches it); sets the original latency."""
        self.latency_model = model
        latency = None if model is None else model.original_ms
        self.original_cost = Cost(self.original_cost.flops, self.original_cost.params, latency)

    # ---- importance ----------------------------------------------------------------------------------------
    def sort_parameters(self, importance: str = DEFAULT_IMPORTANCE, inputs: Sequence[Any] | None = None) -> None:
        """Order every group's channels by importance so that width k keeps the k most important.

        `importance` is one of IMPORTANCE_METHODS: "magnitude" (default), "consumer" or "activation" (see
        nasprune_cli.importance); "activation" runs the largest subnet on `inputs` (model inputs, one per batch).
        """
        activations, active = None, dict(self._active)
        if needs_inputs(importance):
            if inputs is None:
                raise NasPruneError(f"importance {importance!r}: sort_parameters needs input batches (`inputs`)")
            self.select(self.max())
            activations = activation_scores(self.model, self._modules, self._sides, inputs)
        groups = self._group_hparams.values()
        scores = group_importance(self._modules, self._sides, self.grouping, groups, importance, activations)
        for g, score in scores.items():
            self._orders[g] = _group_order(self.grouping.groups[g], score)
            self._cost_model.set_order(g, self._orders[g])
        self.select(active)

    def channel_orders(self) -> dict[str, list[int]]:
        """The channel order of every width hparam (its group's positions, most important first)."""
        return {name: self._orders[g].tolist() for name, g in self._group_hparams.items()}

    def set_channel_orders(self, orders: Mapping[str, list[int]], *, lock: bool = True) -> None:
        """Restore channel orders from `channel_orders()`; `lock` keeps a search from re-sorting them."""
        for name, order in orders.items():
            g = self._group_hparams.get(name)
            size = self.grouping.groups[g].size if g is not None else 0
            if g is None or sorted(order) != list(range(size)):
                raise NasPruneError(
                    f"channel order of '{name}': expected a permutation of the {size} positions of a width hparam "
                    "of this space; rebuild the space from the model the order was made for"
                )
            self._orders[g] = torch.tensor(order, dtype=torch.long)
            self._cost_model.set_order(g, self._orders[g])
        self.order_locked = lock
        self.select(self._active)

    # ---- export --------------------------------------------------------------------------------------------
    def export(self) -> nn.Module:
        """A plain copy of the active subnet: no nasprune classes, sliced weights."""
        model = copy.deepcopy(self.model)
        names = [n for n, m in model.named_modules() if is_dynamic(m)]
        for name in sorted(names, key=lambda n: -n.count(".") if n else 1):
            module = model.get_submodule(name)
            plain = module.export()
            if not name:
                model = plain
                continue
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, plain)
        _tie_shared(self.model, model)
        return model


def _tie_shared(source: nn.Module, exported: nn.Module) -> None:
    """Parameters that layers of `source` share are shared in `exported` too (export() copies each layer's tensors).

    The tracer freezes layers sharing a parameter, so the copies are equal: the first one is given to every layer."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for module_name, module in source.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((module_name, param_name))
    for names in owners.values():
        if len(names) < 2:
            continue
        copies = [exported.get_submodule(m)._parameters.get(p) for m, p in names]
        first = copies[0]
        if first is None or any(c is None or c.shape != first.shape or not torch.equal(c, first) for c in copies):
            continue  # sliced apart: cannot happen, the tracer freezes every layer that shares a parameter
        for (module_name, param_name), copy_ in zip(names, copies, strict=True):
            if copy_ is not first:
                setattr(exported.get_submodule(module_name), param_name, first)


def _group_order(group: ChannelGroup, importance: torch.Tensor) -> torch.Tensor:
    """Importance order of a group's positions that respects its constraints (grouped-conv blocks, whole heads)."""
    if group.unit_of is not None:
        return _unit_order(group.unit_of, importance)
    return _block_order(group.block_of, importance)


def _unit_order(unit_of: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Whole units (heads) by their total importance, most important first; positions in order within a unit."""
    totals = torch.zeros(int(unit_of.max()) + 1, dtype=torch.float64).index_add_(0, unit_of, importance.double())
    unit_rank = torch.empty_like(totals, dtype=torch.long)
    unit_rank[torch.sort(-totals, stable=True).indices] = torch.arange(totals.numel())
    return torch.sort(unit_rank[unit_of] * unit_of.numel() + torch.arange(unit_of.numel()), stable=True).indices


def _block_order(block_of: torch.Tensor | None, importance: torch.Tensor) -> torch.Tensor:
    """Most important first (ties keep channel order); with blocks, interleave them so every prefix of
    `blocks * k` positions keeps the k most important positions of each block."""
    order = torch.sort(-importance, stable=True).indices
    if block_of is None:
        return order
    blocks = block_of[order]
    rank = torch.zeros_like(order)
    for b in torch.unique(blocks).tolist():
        mask = blocks == b
        rank[mask] = torch.arange(int(mask.sum()))
    key = rank * (int(block_of.max()) + 1) + blocks
    return order[torch.sort(key, stable=True).indices]
