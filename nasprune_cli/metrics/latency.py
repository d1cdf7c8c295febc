"""Latency cost model: layer times measured on this machine, predicted for any width subnet without a model run.

How it is built (`measure_latency`):
1. Probe, on the dummy input: with every width hparam at its original value, then with one hparam at a time at its
   smallest choice, record the size of each leaf layer's input and output at each call. A layer's input and output
   sizes are linear in the kept widths (channels pass through, or are concatenated), so one probe per hparam gives
   the share of the layer's input / output that one channel of that hparam holds.
2. Time the exported subnet at a few uniform width ratios (1.0, 0.8, 0.6, 0.4, 0.2) on an input of the latency
   batch size: forward hooks give every leaf call's fastest time, and the rest of the forward (elementwise adds,
   reshapes, attention maths outside leaf layers) is the remainder.
3. A leaf's time is a piecewise-linear function of its work fraction, interpolated between those samples:
   (kept input share) x (kept output share) for layers with a weight matrix (convolutions, linear layers), the kept
   input share for the others (norms, activations, pooling). The remainder follows the subnet's FLOPs fraction.

The prediction of the original model is its measured time (layer times are scaled down when the hooks made them
add up to more than the forward without hooks); in between, the table captures what FLOPs miss: pooling and
normalisation time that shrinks only linearly with the width, and narrow convolutions that run at fewer FLOPs per
second. Depthwise convolutions count as unweighted (their time follows the channel count). Depth hparams gate the
layers inside the children they skip: a skipped child's layers take no time (the widths around it are whole, so the
other layers' shares do not change). Kernel-size hparams are rejected. A table is valid for one model, recipe, input
shape, batch size, thread count and machine.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)
from torch import nn

from nasprune_cli.allocator import current_mode
from nasprune_cli.devices import describe_device, model_device, synchronize
from nasprune_cli.errors import NasPruneError
from nasprune_cli.fileio import validate_schema
from nasprune_cli.hparams import depth_gates
from nasprune_cli.inputs import batched_input, call_model, input_tensors, move_to
from nasprune_cli.loading import short_json

LATENCY_KIND = "nasprune-latency-table"
LATENCY_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: width hparams only, no gates
SAMPLE_RATIOS = (1.0, 0.8, 0.6, 0.4, 0.2)
LATENCY_UNIT = "milliseconds per forward pass, predicted from a latency table measured on this machine"


# ---- what a table file may hold (checked on reading: the file is data anyone can edit) ----------------------
Time = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(allow_inf_nan=False)]
Sample = Annotated[list[Time], Field(min_length=2, max_length=2)]


def _ascending(samples: list[list[float]]) -> list[list[float]]:
    if any(b[0] <= a[0] for a, b in zip(samples, samples[1:], strict=False)):
        raise ValueError("the work fractions must be strictly ascending")
    return samples


Samples = Annotated[list[Sample], Field(min_length=1), AfterValidator(_ascending)]


class _TableSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TableMeta(_TableSchema):
    """What a table was measured for (`table_meta`)."""

    hparams: dict[str, Annotated[int, Field(ge=1)]]
    depth_hparams: list[str] = Field(default_factory=list)
    input_shape: list[list[Annotated[int, Field(ge=0)]]]
    batch: Annotated[int, Field(ge=1)]
    threads: Annotated[int, Field(ge=1)]
    machine: str
    torch: str
    device: str = "cpu"  # where it was measured: "cpu", "cuda:0 (NVIDIA H200)", "mps"; tables without one: the CPU
    malloc: Literal["caching", "system"] | None = None  # the allocator (nasprune_cli.allocator); older tables: None


class TableLeaf(_TableSchema):
    """One leaf call's shares and measured times."""

    key: Annotated[str, Field(min_length=1)]
    weighted: bool
    coef_in: dict[str, Share]
    coef_out: dict[str, Share]
    samples: Samples
    gates: list[Annotated[tuple[StrictStr, StrictInt], Field(strict=False)]] = Field(default_factory=list)


class TableFile(_TableSchema):
    """A latency table file; hparam names in the leaves must be the table's own."""

    kind: str
    version: int
    meta: TableMeta
    remainder: Samples
    leaves: list[TableLeaf]

    @model_validator(mode="after")
    def _known_hparams(self) -> TableFile:
        names, depth = set(self.meta.hparams), set(self.meta.depth_hparams)
        if depth - names:
            raise ValueError(f"meta.depth_hparams: unknown hparam {sorted(depth - names)[0]!r} (not in meta.hparams)")
        for i, leaf in enumerate(self.leaves):
            unknown = sorted((set(leaf.coef_in) | set(leaf.coef_out)) - (names - depth))
            unknown += sorted({h for h, _ in leaf.gates} - depth)
            if unknown:
                raise ValueError(
                    f"leaves[{i}] ({leaf.key}): unknown hparam {unknown[0]!r} (expected a width hparam of meta.hparams "
                    "in coef_in / coef_out, a depth hparam of meta.depth_hparams in gates)"
                )
        return self


def _validated_table(data: Any, source: str) -> TableFile:
    """The table checked against its schema; errors name the file and the field."""
    hint = "delete it to measure again"
    return validate_schema(
        TableFile, data, source, "latency table", hint, error=NasPruneError, problem="damaged", show=short_json
    )


@dataclass
class LeafTiming:
    """One call of a leaf layer: how its input / output shrink with each hparam, and its measured times."""

    key: str  # "<module name>#<call index>"
    weighted: bool  # time follows input share x output share (a weight matrix), else the input share
    coef_in: dict[str, float]  # hparam -> share of the input one of its channels holds
    coef_out: dict[str, float]
    samples: list[tuple[float, float]]  # (work fraction, ms), ascending in work
    gates: list[tuple[str, int]] = field(default_factory=list)  # (depth hparam, threshold): runs while value > it

    def runs(self, config: Mapping[str, int]) -> bool:
        """Whether this call runs in the subnet `config` (no enclosing child is skipped by a depth hparam)."""
        return all(config.get(h, threshold + 1) > threshold for h, threshold in self.gates)

    def work(self, removed: Mapping[str, int]) -> float:
        """Work fraction of this call when `removed[h]` channels of each hparam are pruned."""
        share_in = max(0.0, 1.0 - sum(c * removed.get(h, 0) for h, c in self.coef_in.items()))
        if not self.weighted:
            return share_in
        share_out = max(0.0, 1.0 - sum(c * removed.get(h, 0) for h, c in self.coef_out.items()))
        return share_in * share_out


class LatencyModel:
    """Predicted latency (ms) of any width subnet of one search space, from a measured table."""

    def __init__(self, leaves: list[LeafTiming], remainder: list[tuple[float, float]], meta: dict[str, Any]) -> None:
        self.leaves = leaves
        self.remainder = remainder  # (FLOPs fraction, ms), ascending
        self.meta = meta
        self.originals: dict[str, int] = {h: int(v) for h, v in meta["hparams"].items()}
        depth = set(meta.get("depth_hparams", ()))
        self.width_originals = {h: v for h, v in self.originals.items() if h not in depth}
        self.original_ms = self.predict(self.originals, 1.0)

    def predict(self, config: Mapping[str, int], flops_fraction: float) -> float:
        """Latency in ms of the subnet `config` (width hparam -> kept channels, depth hparam -> value) whose FLOPs
        fraction is given."""
        removed = {h: orig - int(config.get(h, orig)) for h, orig in self.width_originals.items()}
        total = sum(interpolate(leaf.samples, leaf.work(removed)) for leaf in self.leaves if leaf.runs(config))
        return total + interpolate(self.remainder, flops_fraction)

    def to_dict(self) -> dict[str, Any]:
        """The table as plain JSON values."""
        return {
            "kind": LATENCY_KIND,
            "version": LATENCY_VERSION,
            "meta": self.meta,
            "remainder": [list(s) for s in self.remainder],
            "leaves": [
                {
                    "key": leaf.key,
                    "weighted": leaf.weighted,
                    "coef_in": leaf.coef_in,
                    "coef_out": leaf.coef_out,
                    "samples": [list(s) for s in leaf.samples],
                    "gates": [list(g) for g in leaf.gates],
                }
                for leaf in self.leaves
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> LatencyModel:
        """Rebuild a table written by to_dict; `source` names the file in errors."""
        if not isinstance(data, Mapping) or data.get("kind") != LATENCY_KIND:
            raise NasPruneError(f'{source}: not a nasprune latency table (expected "kind": "{LATENCY_KIND}")')
        if data.get("version") not in READABLE_VERSIONS:
            raise NasPruneError(
                f"{source}: latency table version {data.get('version')!r}, this nasprune reads version "
                f"{LATENCY_VERSION}; delete the file to measure again"
            )
        table = _validated_table(data, source)
        leaves = [
            LeafTiming(
                e.key,
                e.weighted,
                dict(e.coef_in),
                dict(e.coef_out),
                [(w, t) for w, t in e.samples],
                [(h, t) for h, t in e.gates],
            )
            for e in table.leaves
        ]
        return cls(leaves, [(w, t) for w, t in table.remainder], dict(data["meta"]))

    def check(self, space: Any, batch: int, source: str) -> None:
        """Raise when this table was measured for another space, input shape, batch size or thread count."""
        expected = table_meta(space, batch)
        measured_on, now_on = str(self.meta.get("device", "cpu")), expected["device"]
        if _device_type(measured_on) != _device_type(now_on):
            raise NasPruneError(
                f"{source}: the latency table was measured on {measured_on}, this search runs on {now_on}; layer "
                "times on one kind of device say nothing about another: pass --device to match the table, another "
                "--latency-table path to measure a new one, or delete this file"
            )
        measured_with = self.meta.get("malloc")  # absent from tables written before it was recorded
        if measured_with is not None and measured_with != expected["malloc"]:
            raise NasPruneError(
                f"{source}: the latency table was measured with the {measured_with!r} memory allocator, this process "
                f"runs the {expected['malloc']!r} one; page faults change layer times: set NASPRUNE_MALLOC (in Python: "
                "nasprune_cli.keep_freed_memory()) to match it, pass another --latency-table path, or delete this file"
            )
        for key in ("hparams", "input_shape", "batch", "threads"):
            if self.meta.get(key) != expected[key]:
                raise NasPruneError(
                    f"{source}: the latency table was measured for another {key.replace('_', ' ')} "
                    f"({short_json(self.meta.get(key))} in the table vs {short_json(expected[key])} now); pass another "
                    "--latency-table path to measure a new one, or delete this file"
                )


def _device_type(described: str) -> str:
    """'cuda' of 'cuda:0 (NVIDIA H200)'."""
    return described.split(" ")[0].split(":")[0]


def interpolate(samples: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear interpolation through ascending (x, y) samples; proportional below the first one."""
    if not samples:
        return 0.0
    x0, y0 = samples[0]
    if x <= x0:
        return y0 * x / x0 if x0 > 0 else y0
    for (xa, ya), (xb, yb) in zip(samples, samples[1:], strict=False):
        if x <= xb:
            return ya + (yb - ya) * (x - xa) / (xb - xa)
    return samples[-1][1]


def table_meta(space: Any, batch: int) -> dict[str, Any]:
    """What a latency table is valid for: the hparams, the input shape, batch size, threads and machine."""
    shapes = [list(t.shape[1:]) for t in input_tensors(space.dummy_input)]
    return {
        "hparams": {n: hp.original for n, hp in sorted(space.hparams.items())},
        "depth_hparams": sorted(n for n, hp in space.hparams.items() if hp.kind == "depth"),
        "input_shape": shapes,
        "batch": int(batch),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or platform.node()}".strip(),
        "torch": torch.__version__,
        "device": describe_device(model_device(space.model)),
        "malloc": current_mode(),
    }


def measure_latency(
    space: Any,
    batch: int = 1,
    repeats: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> LatencyModel:
    """Measure a latency table for a search space on this machine (restores the active subnet)."""
    _check_measurable(space, batch)
    active = space.config()
    repeats = repeats if repeats is not None else (10 if batch == 1 else 3)
    widths = sorted(n for n, hp in space.hparams.items() if hp.kind == "width")
    gates_by_child = depth_gates(space.hparams)
    total_steps = 1 + len(widths) + len(SAMPLE_RATIOS)
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if on_progress is not None:
            on_progress("latency table", step, total_steps)

    try:
        leaves = _probe_leaves(space, widths, gates_by_child, tick)
        remainder = _time_samples(space, leaves, widths, sorted(gates_by_child), batch, repeats, tick)
    finally:
        space.select(active)
    for leaf in leaves.values():
        leaf.samples = _merge(leaf.samples)
    timed = [leaf for leaf in leaves.values() if leaf.samples]
    return LatencyModel(timed, _merge(remainder), table_meta(space, batch))


def _check_measurable(space: Any, batch: int) -> None:
    """Raise when no latency table can be measured for this space and batch size."""
    if batch < 1:
        raise NasPruneError(f"latency batch size: expected an integer >= 1 (got {batch})")
    kernels = sorted(n for n, hp in space.hparams.items() if hp.kind == "kernel")
    if kernels:
        raise NasPruneError(
            f"latency constraint: the latency table models width and depth hparams, and this space also has "
            f"{len(kernels)} kernel-size hparam(s) ({', '.join(kernels[:3])}); use flops / params constraints, or a "
            "recipe without kernel_size choices"
        )
    if not space.hparams:
        raise NasPruneError("latency constraint: the space has no hparams, so nothing can make it faster")


def _probe_leaves(
    space: Any, widths: list[str], gates_by_child: Mapping[str, tuple[str, int]], tick: Callable[[], None]
) -> dict[str, LeafTiming]:
    """Step 1: every leaf call (and skippable block call) with the shares of its input / output each width hparam's
    channels hold; no times yet. Leaves the space at its last probe."""
    blocks = sorted(gates_by_child)  # skippable children: their own time outside their layers goes with them
    space.select(space.max())
    base = _probe(space.model, space.dummy_input, blocks)
    tick()
    coef_in: dict[str, dict[str, float]] = {k: {} for k in base}
    coef_out: dict[str, dict[str, float]] = {k: {} for k in base}
    for name in widths:
        hp = space.hparams[name]
        space.select({**space.max(), name: hp.choices[0]})
        probe = _probe(space.model, space.dummy_input, blocks)
        removed = hp.original - hp.choices[0]
        for key, (n_in, n_out) in base.items():
            if key not in probe or removed <= 0:
                continue
            p_in, p_out = probe[key]
            if n_in and p_in != n_in:
                coef_in[key][name] = (n_in - p_in) / n_in / removed
            if n_out and p_out != n_out:
                coef_out[key][name] = (n_out - p_out) / n_out / removed
        tick()
    weighted = _weighted_leaves(space.model, base, blocks)
    return {k: LeafTiming(k, weighted[k], coef_in[k], coef_out[k], [], _leaf_gates(k, gates_by_child)) for k in base}


def _time_samples(
    space: Any,
    leaves: Mapping[str, LeafTiming],
    widths: list[str],
    blocks: list[str],
    batch: int,
    repeats: int,
    tick: Callable[[], None],
) -> list[tuple[float, float]]:
    """Step 2: time the subnet at every uniform width ratio, add each leaf's sample; returns the remainder samples
    (FLOPs fraction, ms). Leaves the space at the last ratio."""
    x = move_to(batched_input(move_to(space.dummy_input, "cpu"), batch), model_device(space.model))
    remainder: list[tuple[float, float]] = []
    original_flops = max(space.original_cost.flops, 1.0)
    for ratio in SAMPLE_RATIOS:
        config = {**space.max(), **_uniform_widths(space, ratio)}
        space.select(config)
        flops_fraction = space.cost(config).flops / original_flops
        removed = {h: space.hparams[h].original - config[h] for h in widths}
        warmup = 3 if ratio == SAMPLE_RATIOS[0] else 1
        exported = space.export().eval()
        times, total = _time_leaves(exported, x, repeats, warmup)
        hooked = sum(times.values())
        if hooked > total:  # hooks cost time too: scale the layer times so that they add up to the forward
            times = {k: t * total / hooked for k, t in times.items()}
        if blocks:
            times.update(_block_rest(_time_leaves(exported, x, repeats, 0, blocks, whole=False)[0], times))
        for key, leaf in leaves.items():
            if key in times:
                leaf.samples.append((leaf.work(removed), times[key]))
        remainder.append((flops_fraction, max(0.0, total - sum(times.values()))))
        tick()
    return remainder


def latency_model_for(
    space: Any,
    table: str | Path | None,
    batch: int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[LatencyModel, bool]:
    """The latency table of a space: read from `table` when that file exists (checked against the space), else
    measured now and, with a path, written there. Returns (table, whether it was measured now)."""
    if table is not None and Path(table).exists():
        model = load_latency_table(table)
        model.check(space, batch, str(table))
        return model, False
    model = measure_latency(space, batch, on_progress=on_progress)
    if table is not None:
        save_latency_table(model, table)
    return model, True


def _block_rest(block_times: Mapping[str, float], leaf_times: Mapping[str, float]) -> dict[str, float]:
    """Per skippable block call: its time outside its layers and its inner blocks (the adds, concatenations,
    reshapes of the block), which a skipped block saves too. Innermost blocks first."""
    rest: dict[str, float] = {}
    for key in sorted(block_times, key=lambda k: -k.count(".")):
        prefix = key.rsplit("#", 1)[0] + "."
        inside = sum(t for k, t in leaf_times.items() if k.startswith(prefix))
        inside += sum(t for k, t in rest.items() if k.startswith(prefix))
        rest[key] = max(0.0, block_times[key] - inside)
    return rest


def _leaf_gates(key: str, gates_by_child: Mapping[str, tuple[str, int]]) -> list[tuple[str, int]]:
    """The depth gates of a leaf call: those of every enclosing module (the leaf's name and its prefixes)."""
    parts = key.rsplit("#", 1)[0].split(".")
    prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [gates_by_child[p] for p in prefixes if p in gates_by_child]


def _uniform_widths(space: Any, ratio: float) -> dict[str, int]:
    """Every width hparam at its smallest choice >= ratio x its original width."""
    config = {}
    for name, hp in space.hparams.items():
        if hp.kind != "width":
            continue
        target = ratio * hp.original - 1e-9
        config[name] = min((c for c in hp.choices if c >= target), default=hp.choices[-1])
    return config


def save_latency_table(model: LatencyModel, path: str | Path) -> Path:
    """Write a latency table as JSON atomically (temporary file, then rename)."""
    from nasprune_cli.fileio import atomic_write

    payload = json.dumps(model.to_dict(), indent=1).encode()
    return atomic_write(path, lambda f: f.write(payload))


def load_latency_table(path: str | Path) -> LatencyModel:
    """Read a latency table written by save_latency_table."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NasPruneError(f"{path}: latency table not found") from exc
    except (OSError, ValueError) as exc:
        raise NasPruneError(f"{path}: cannot read the latency table ({exc}); delete it to measure again") from exc
    return LatencyModel.from_dict(data, str(path))


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def _named(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    return [(n, modules[n]) for n in names if n in modules]


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            found = _first_tensor(v)
            if found is not None:
                return found
    return None


def _probe(model: nn.Module, x: Any, blocks: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """Input / output element count of every leaf call (and of the named blocks) on one forward (eval, no grad)."""
    sizes: dict[str, tuple[int, int]] = {}
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple, out: Any) -> None:
            index = calls.get(name, 0)
            calls[name] = index + 1
            t_in, t_out = _first_tensor(args), _first_tensor(out)
            sizes[f"{name}#{index}"] = (
                t_in.numel() if t_in is not None else 0,
                t_out.numel() if t_out is not None else 0,
            )

        return record

    training = model.training
    model.eval()
    try:
        for name, module in [*_leaves(model), *_named(model, blocks)]:
            handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return sizes


def _weighted_leaves(model: nn.Module, keys: Mapping[str, Any], blocks: Iterable[str] = ()) -> dict[str, bool]:
    """Per leaf call key: whether the layer has a weight matrix (its time follows input x output); blocks never."""
    modules = dict(model.named_modules())
    skip = set(blocks)
    out = {}
    for key in keys:
        if key.rsplit("#", 1)[0] in skip:
            out[key] = False
            continue
        module = modules.get(key.rsplit("#", 1)[0])
        weight = getattr(module, "weight", None)
        out[key] = isinstance(weight, torch.Tensor) and weight.dim() >= 2 and not _depthwise(module)
    return out


def _depthwise(module: Any) -> bool:
    """A convolution with one group per channel: its time follows the channel count, not its square."""
    groups = getattr(module, "groups", 1)
    return groups > 1 and groups == getattr(module, "in_channels", -1)


@torch.inference_mode()
def _time_leaves(
    model: nn.Module, x: Any, repeats: int, warmup: int = 1, names: Iterable[str] | None = None, whole: bool = True
) -> tuple[dict[str, float], float]:
    """Fastest ms per leaf call (or per call of the named modules; forward hooks) and the fastest ms of a whole
    forward without hooks (0 when not `whole`).

    The minimum over repeats is the least noisy estimate on a shared machine (noise only adds time). The whole
    forwards are timed after the hooked ones. The first forwards of a process run slower (the allocator is still
    growing its heap, so big tensors fault in fresh pages): the first model timed gets more warm-up runs."""
    runs: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    starts: dict[str, float] = {}
    handles = []

    device = model_device(model)  # on a GPU, the clock is read after the queued work is done

    def pre(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple) -> None:
            synchronize(device)
            starts[name] = time.perf_counter()

        return record

    def post(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple, out: Any) -> None:
            synchronize(device)
            elapsed = time.perf_counter() - starts[name]
            index = calls.get(name, 0)
            calls[name] = index + 1
            runs.setdefault(f"{name}#{index}", []).append(elapsed)

        return record

    for _ in range(warmup if device.type == "cpu" else max(warmup, 10)):  # GPU: kernel selection, caches
        call_model(model, x)
    synchronize(device)
    try:
        for name, module in _leaves(model) if names is None else _named(model, names):
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
        for _ in range(repeats):
            calls.clear()
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    totals = []
    for _ in range(repeats if whole else 0):
        synchronize(device)
        start = time.perf_counter()
        call_model(model, x)
        synchronize(device)
        totals.append(time.perf_counter() - start)
    return {k: min(v) * 1e3 for k, v in runs.items()}, min(totals, default=0.0) * 1e3


def _merge(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Ascending samples with one (mean) time per distinct work fraction, made non-decreasing (timing noise must
    not make a narrower layer look slower: the searchers rely on cost falling with width)."""
    by_x: dict[float, list[float]] = {}
    for x, y in samples:
        by_x.setdefault(round(x, 9), []).append(y)
    merged: list[tuple[float, float]] = []
    for x, ys in sorted(by_x.items()):
        merged.append((x, sum(ys) / len(ys)))
    for i in range(len(merged) - 2, -1, -1):  # a smaller work fraction never takes longer than a larger one
        merged[i] = (merged[i][0], min(merged[i][1], merged[i + 1][1]))
    return merged
