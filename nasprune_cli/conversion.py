"""convert(): trace a model, build the groups of coupled channels and turn it into a SearchSpace in place."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from nasprune_cli.constraints import Cost
from nasprune_cli.dynamic import make_dynamic
from nasprune_cli.dynamic.base import type_label
from nasprune_cli.dynamic.custom import layer_spec
from nasprune_cli.dynamic.probe import probe_problem
from nasprune_cli.dynamic.subclass import registered_parent
from nasprune_cli.errors import NasPruneError
from nasprune_cli.graph.context import CostTerm
from nasprune_cli.graph.groups import Grouping, apply_block_constraints, build_groups
from nasprune_cli.graph.hf_layers import EXTERNAL_LAYERS
from nasprune_cli.graph.layers import ATTENTION_TYPES
from nasprune_cli.graph.trace import Trace, trace_model
from nasprune_cli.hparams import Hparam, depth_gates
from nasprune_cli.inputs import dummy_input_for
from nasprune_cli.metrics.flops import CostModel, count_params, fvcore_flops
from nasprune_cli.metrics.stages import stage_costs, stage_names
from nasprune_cli.recipe.patterns import resolve_rules, width_choices
from nasprune_cli.space import FrozenLayer, SearchSpace


def convert(model: nn.Module, recipe: Any = None, dummy_input: Any = None) -> SearchSpace:
    """Convert a model in place into a search space following the recipe's rules (None: all defaults)."""
    if isinstance(model, SearchSpace):
        raise NasPruneError("convert: the model is already converted (got a SearchSpace)")
    load_extensions(model)
    if dummy_input is None:
        dummy_input = dummy_input_for(recipe, model)
    resolved = resolve_rules(recipe, model)
    _warn_unused(resolved.unused_patterns)
    rules = resolved.by_module
    converted = {name for name, rule in rules.items() if rule is not None}
    modules = dict(model.named_modules())
    attention = [n for n in converted if isinstance(modules[n], ATTENTION_TYPES) or type(modules[n]) in EXTERNAL_LAYERS]
    # an attention block slices its own projections: its inner layers are not converted on their own
    converted -= {n for n in converted if any(n.startswith(f"{a}.") for a in attention)}
    depth_seqs = [n for n in converted if isinstance(modules[n], (nn.Sequential, nn.ModuleList))]

    trace = trace_model(model, dummy_input, depth_seqs)  # first: its errors (e.g. a non-tensor output) are clearer
    checked = [n for n in sorted(converted) if _needs_probe(type(modules[n]))]
    original_flops = fvcore_flops(model, dummy_input, by_module=True)  # one fvcore pass: the total is [""]
    original = Cost(float(original_flops[""]), float(count_params(model)))
    stages = stage_costs(model, original_flops, stage_names(model))
    depth_hparams = _depth_hparams(trace, rules, modules)
    # a Sequential subclass (a stage of blocks) is converted only when it has something to skip
    with_depth = {hp.members[0].rpartition(".")[0] for hp in depth_hparams.values()}
    converted -= {n for n in depth_seqs if type(modules[n]) is not nn.Sequential and n not in with_depth}
    converted -= _check_layers(trace, modules, checked, original_flops)
    grouping = build_groups(trace)
    apply_block_constraints(trace, grouping)
    _freeze_unconverted(grouping, converted, modules)

    hparams: dict[str, Hparam] = {}
    group_hparams: dict[str, int] = {}
    for group in grouping.groups:
        if group.frozen_reason is not None:
            continue
        step = math.lcm(group.blocks, group.unit)
        choices = [c for c in _group_choices(group.size, group.sources, group.members, rules, trace) if c % step == 0]
        if len(choices) <= 1 and step > 1:
            # the divisor and the grouped conv's group count (or the head width) share no multiple below the width,
            # as in RegNet (104 channels in 13 groups): then the widths are multiples of the group count instead
            choices = _group_choices(group.size, group.sources, group.members, rules, trace, step)
        if len(choices) > 1:
            hparams[group.name] = Hparam(group.name, "width", tuple(choices), group.size, tuple(group.members))
            group_hparams[group.name] = group.index
    hparams.update(depth_hparams)
    hparams.update(_kernel_hparams(trace, rules, modules, converted))

    for name in converted:
        make_dynamic(modules[name], name=name)
    cost_model = _build_cost_model(trace, grouping, group_hparams, hparams, modules, original, original_flops)
    frozen = [
        FrozenLayer(src, g.frozen_reason) for g in grouping.groups if g.frozen_reason is not None for src in g.sources
    ]
    sides = {key: rec.vec for key, rec in trace.sides.items()}
    return SearchSpace(
        model, dummy_input, hparams, frozen, grouping, group_hparams, sides, cost_model, original, stages=stages
    )


def load_extensions(model: nn.Module) -> None:
    """Register the dynamic layers of the libraries a model uses (transformers' attention); imports nothing else."""
    if any(type(m).__module__.startswith("transformers.") for m in model.modules()):
        import nasprune_cli.dynamic.hf_attention  # noqa: F401 - registers on import
        import nasprune_cli.dynamic.hf_gpt2  # noqa: F401 - registers on import


def _needs_probe(module_type: type[nn.Module]) -> bool:
    """A subclass of a registered type or a user-registered layer: its own forward runs on the sliced tensors."""
    return registered_parent(module_type) is not None or layer_spec(module_type) is not None


def _check_layers(
    trace: Trace, modules: dict[str, nn.Module], names: list[str], flops_by_module: float | dict[str, float]
) -> set[str]:
    """Probe every subclass / registered layer (dynamic/probe.py): one that fails is frozen with the reason and left
    unconverted. The FLOPs fvcore counts in one that runs once and the tracer's terms do not (a weight standardization,
    a registered layer's ops) become a term scaled like the layer's own."""
    failed: set[str] = set()
    for name in names:
        info = trace.layer_info.get(name, {})
        if info.get("channel_dim") is None:
            continue  # not run, or no prunable channels: nothing to slice
        reason = probe_problem(modules[name], name, info["input_shape"], info["channel_dim"])
        if reason is not None:
            for (layer, _side), record in trace.sides.items():
                if layer == name:
                    trace.book.freeze(record.vec, reason)
            failed.add(name)
        elif info.get("calls") == 1 and isinstance(flops_by_module, dict):
            own = [t for t in trace.flops if t.scope and t.scope[-1] == name]
            counted = sum(t.factor * math.prod(v.numel() for v in t.vecs) for t in own)
            missing = flops_by_module.get(name, 0.0) - counted
            if own and abs(missing) > 0.5:
                main = own[0]
                factor = missing / math.prod(v.numel() for v in main.vecs)
                trace.flops.append(CostTerm(factor, main.vecs, main.scope, None))
    return failed


def _freeze_unconverted(grouping: Grouping, converted: set[str], modules: dict[str, nn.Module]) -> None:
    for group in grouping.groups:
        if group.frozen_reason is not None:
            continue
        for member in group.members:
            layer = member.rsplit(".", 1)[0]
            if layer not in converted:
                kind = type_label(type(modules[layer])) if layer in modules else "?"
                group.frozen_reason = f"layer {layer} ({kind}) reads these channels but is not converted by the recipe"
                break


def _group_choices(
    size: int, sources: list[str], members: list[str], rules: dict, trace: Trace, step: int | None = None
) -> list[int]:
    """Width choices of a group: every source's ratios at its divisor (or at `step`, multiples of which are kept)."""
    choices: set[int] | None = None
    for src in sources:
        rule = rules.get(src)
        if rule is None:
            return [size]
        mine = set(width_choices(size, rule.ratios, step or rule.divisor))
        choices = mine if choices is None else choices & mine
    result = sorted(choices or {size})
    for member in members:
        layer = member.rsplit(".", 1)[0]
        info = trace.layer_info.get(layer, {})
        if info.get("num_groups"):
            result = [c for c in result if c % info["num_groups"] == 0]
        if info.get("head_width") and rules.get(layer) is not None:
            least = info["head_width"] * getattr(rules[layer], "min_heads", 1)
            result = [c for c in result if c >= least]
    return result or [size]


def _warn_unused(patterns: list[str], shown: int = 3) -> None:
    """One warning for the recipe rules that match no layer (a recipe may have thousands), naming the first few."""
    if len(patterns) == 1:
        warnings.warn(f"recipe rule '{patterns[0]}' matches no layer of the model", stacklevel=3)
    elif patterns:
        names = ", ".join(f"'{p[:80]}'" for p in patterns[:shown])
        more = f" and {len(patterns) - shown} more" if len(patterns) > shown else ""
        warnings.warn(f"{len(patterns)} recipe rules match no layer of the model: {names}{more}", stacklevel=3)


def _depth_hparams(trace: Trace, rules: dict, modules: dict[str, nn.Module]) -> dict[str, Hparam]:
    """Depth choices of Sequentials: the trailing children that keep the shape may be skipped (with `skippable:
    blocks`, every run of blocks whose output channels are their input channels instead); their in/out channels are
    united so that a skipped child leaves the widths around it whole."""
    hparams: dict[str, Hparam] = {}
    for name, seq in trace.sequentials.items():
        n_children = len(modules[name])
        calls = seq.children
        if len(calls) != n_children or len({c[0] for c in calls}) != n_children:
            continue  # not every child ran exactly once: depth is not safe to change
        min_depth = int(getattr(rules[name], "min_depth", 0) or 0)
        keeps_shape = [calls[i][1] == calls[i][3] for i in range(n_children)]
        if getattr(rules[name], "skippable", "trailing") == "blocks":
            frozen_roots = trace.book.frozen_roots()
            blocks = [
                k and any(True for _ in modules[c[0]].children()) and trace.book.same_channels(c[2], c[4], frozen_roots)
                for k, c in zip(keeps_shape, calls, strict=True)
            ]
            runs = _skippable_runs(blocks, min_depth)
        else:
            runs = [r for r in _skippable_runs(keeps_shape, min_depth) if r[1] == n_children]
        for start, stop in runs:
            for child, _, in_lab, _, out_lab in calls[start:stop]:
                trace.book.couple(in_lab, out_lab, f"{child} may be skipped (depth search)")
            members = tuple(c[0] for c in calls[start:stop])
            if stop == n_children:  # the trailing run: the number of children that run
                hp = Hparam(f"{name}.depth", "depth", tuple(range(start, n_children + 1)), n_children, members)
            else:  # an inner run: how many of its children run
                size = stop - start
                hp = Hparam(f"{name}.depth[{start}:{stop}]", "depth", tuple(range(size + 1)), size, members)
            hparams[hp.name] = hp
    return hparams


def _skippable_runs(skippable: list[bool], min_depth: int) -> list[tuple[int, int]]:
    """(start, stop) of every run of consecutive skippable children at or after `min_depth`."""
    runs: list[tuple[int, int]] = []
    i = min_depth
    while i < len(skippable):
        j = i
        while j < len(skippable) and skippable[j]:
            j += 1
        if j > i:
            runs.append((i, j))
        i = j + 1
    return runs


def _kernel_hparams(trace: Trace, rules: dict, modules: dict[str, nn.Module], converted: set[str]) -> dict[str, Hparam]:
    hparams: dict[str, Hparam] = {}
    for name in sorted(converted):
        rule, info = rules[name], trace.layer_info.get(name, {})
        sizes = list(getattr(rule, "kernel_size", None) or [])
        if not sizes or info.get("transposed") or "kernel_size" not in info or _needs_probe(type(modules[name])):
            continue
        kernel = info["kernel_size"]
        padding = getattr(modules[name], "padding", 0)
        if len(set(kernel)) != 1 or kernel[0] % 2 == 0 or isinstance(padding, str):
            continue
        k0 = kernel[0]
        choices = sorted({k for k in sizes if k % 2 == 1 and k <= k0} | {k0})
        if len(choices) > 1:
            hparams[f"{name}.kernel_size"] = Hparam(f"{name}.kernel_size", "kernel", tuple(choices), k0, (name,))
    return hparams


def _build_cost_model(
    trace: Trace,
    grouping: Grouping,
    group_hparams: dict[str, int],
    hparams: dict[str, Hparam],
    modules: dict[str, nn.Module],
    original: Cost,
    original_flops: float | dict[str, float],
) -> CostModel:
    """The fast cost model: one term per traced op and parameter, plus constants for what they do not cover."""
    sizes = {g: grouping.groups[g].size for g in group_hparams.values()}
    gates_by_child = depth_gates(hparams)
    kernels = {hp.name[: -len(".kernel_size")]: hp for hp in hparams.values() if hp.kind == "kernel"}

    def term(
        factor: float, vecs: list[torch.Tensor], scope: tuple[str, ...], kernel_of: str | None, einsum: bool = False
    ):
        kernel = None
        if kernel_of in kernels:
            hp = kernels[kernel_of]
            kernel = (hp.name, hp.original, len(trace.layer_info[kernel_of]["kernel_size"]))
        gates = [gates_by_child[name] for name in scope if name in gates_by_child]  # enclosing skippable children
        return CostModel.make_term(factor, vecs, grouping.group_of, grouping.pos_of, sizes, gates, kernel, einsum)

    flop_terms = [term(t.factor, t.vecs, t.scope, t.kernel_of, t.einsum) for t in trace.flops]
    param_terms = [term(t.factor, t.vecs, t.scope, t.kernel_of) for t in trace.params]
    model_cost = CostModel(flop_terms, param_terms, sizes)
    at_max = model_cost.cost({}, {hp.name: hp.original for hp in hparams.values()})
    # everything the per-op terms do not cover (frozen / uncounted parts) is a constant, split per skippable child
    by_module = original_flops if isinstance(original_flops, dict) else {}
    flops_rest = original.flops - at_max.flops
    params_rest = original.params - at_max.params
    for hp in hparams.values():
        if hp.kind != "depth":
            continue
        for child in hp.members:
            inside = (
                CostModel(
                    [term(t.factor, t.vecs, t.scope, t.kernel_of, t.einsum) for t in trace.flops if child in t.scope],
                    [],
                    sizes,
                )
                .cost({}, {})
                .flops
            )
            child_rest = by_module.get(child, 0.0) - inside
            child_params = sum(p.numel() for p in modules[child].parameters())
            inside_params = (
                CostModel(
                    [], [term(t.factor, t.vecs, (), t.kernel_of) for t in trace.params if child in t.scope], sizes
                )
                .cost({}, {})
                .params
            )
            if child_rest:
                flop_terms.append(term(child_rest, [], (child,), None))
                flops_rest -= child_rest
            if child_params - inside_params:
                param_terms.append(term(child_params - inside_params, [], (child,), None))
                params_rest -= child_params - inside_params
    flop_terms.append(term(flops_rest, [], (), None))
    param_terms.append(term(params_rest, [], (), None))
    return CostModel(flop_terms, param_terms, sizes)
