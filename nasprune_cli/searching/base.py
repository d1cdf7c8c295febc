"""The searcher template: `search()` = sanitize, load checkpoint, before, run, after; the whole state is one dict.

Every score evaluation is a pure function of (weights, subnet config, data): BatchNorm statistics are recomputed
from a reset before each one. With the state written after every step, a resumed search therefore ends with the
same result as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from nasprune_cli.checkpoint import load_search_state, save_search_state
from nasprune_cli.constraints import Cost, satisfies
from nasprune_cli.distributed import World, current_world
from nasprune_cli.errors import CheckpointError, NasPruneError, SearchError
from nasprune_cli.fileio import exclusive_lock
from nasprune_cli.recipe.schema import SearchSettings
from nasprune_cli.searching.parallel import ShareStats, evaluate_shared

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def check_bounds(bounds: Mapping[str, float], space: Any) -> None:
    """Raise a SearchError when there is no budget, or when even the smallest subnet breaks one."""
    if not bounds:
        raise SearchError("no constraints: pass --flops, --params and/or --latency (e.g. --flops 60%)")
    smallest, original = space.cost(space.min()), space.original_cost
    failed = [name for name, bound in bounds.items() if smallest.get(name) > bound]
    if not failed:
        return
    unit = {"latency": " ms (predicted)"}
    parts = [
        f"{name} <= {bounds[name]:.4g}{unit.get(name, '')} ({bounds[name] / max(original.get(name), 1e-12):.1%} of "
        f"the original) but the smallest subnet has {smallest.get(name):.4g} "
        f"({smallest.get(name) / max(original.get(name), 1e-12):.1%})"
        for name in failed
    ]
    raise SearchError(f"constraints cannot be met: {'; '.join(parts)}; {unsatisfiable_hint(space, failed)}")


def unsatisfiable_hint(space: Any, failed: list[str]) -> str:
    """What to do when even the smallest subnet breaks a budget: say plainly when nothing (or little) is prunable."""
    frozen = list(getattr(space, "frozen", []))
    example = f" (e.g. '{frozen[0].name}': {frozen[0].reason})" if frozen else ""
    explain = "`nasprune profile --explain LAYER` says why a layer is frozen"
    if not any(hp.kind == "width" for hp in space.hparams.values()):
        return (
            f"nothing in this model is prunable: no layer has a width to search, {len(frozen)} layer(s) are frozen"
            f"{example}; `nasprune profile` lists them and {explain}"
        )
    hint = (
        "raise the budget, or widen the search space in the recipe (smaller channels_ratio / channel_divisor); "
        f"`nasprune profile` shows the achievable range and the frozen layers, and {explain}"
    )
    if "latency" in failed:
        hint += "; layers that are frozen, and time spent outside prunable layers, do not shrink with the width"
    return hint


class Searcher(ABC):
    """Base searcher: subclasses fill in `before_search`, `run_search` and `after_search` steps."""

    name: ClassVar[str] = "base"

    def __init__(
        self,
        space: Any,
        evaluate: Callable[[], float],
        bounds: Mapping[str, float],
        settings: SearchSettings,
        *,
        checkpoint: str | Path | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        on_progress: Progress | None = None,
        world: World | None = None,
    ) -> None:
        self.space = space
        self.world = world if world is not None else current_world()  # ranks share the evaluations; rank 0 writes
        self.shared = ShareStats()
        self._prefetched: dict[str, float] = {}  # scores computed ahead (by all ranks), used once each
        self._evaluate = evaluate
        self.bounds = dict(bounds)
        self.settings = settings.resolved()  # candidate_size filled in when the caller left it to the default
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.fingerprint = dict(fingerprint or {})
        self.on_progress = on_progress
        self.rng = random.Random(settings.seed)
        self.state: dict[str, Any] = {}
        self._calibrated: dict[str, int] | None = None  # the subnet whose BN statistics the model holds now

    # ---- the template ------------------------------------------------------------------------------------
    def search(self) -> dict[str, Any]:
        """Run the whole search (resuming from the checkpoint when it exists) and return the state dict. The
        checkpoint is locked for the whole search: a second search on it is refused. Under several ranks, rank 0
        locks, reads and writes the checkpoint and the others follow its state."""
        self.sanitize()
        with contextlib.ExitStack() as stack:
            error = None
            if self.world.is_main:
                try:
                    stack.enter_context(self.checkpoint_lock())
                except NasPruneError as exc:
                    error = exc
            self.state = self.default_state()
            self.load_checkpoint(error)
            self.before_search()
            self.run_search()
            self.after_search()
        return self.state

    def checkpoint_lock(self) -> AbstractContextManager[Any]:
        """An exclusive lock on `<checkpoint>.lock` while the search runs (nothing without a checkpoint)."""
        if self.checkpoint is None:
            return contextlib.nullcontext()
        hint = "another search is running on this checkpoint: wait for it to end, or pass another --checkpoint"
        return exclusive_lock(self.checkpoint, hint)

    def sanitize(self) -> None:
        """Check the checkpoint directory and the budgets: fail before any score evaluation when none can be met."""
        if self.checkpoint is not None and not self.checkpoint.parent.is_dir():
            raise CheckpointError(f"{self.checkpoint}: directory '{self.checkpoint.parent}' does not exist")
        check_bounds(self.bounds, self.space)

    def default_state(self) -> dict[str, Any]:
        """The state of a fresh search; subclasses add their keys."""
        return {
            "searcher": self.name,
            "iteration": 0,
            "evaluations": 0,
            "original_score": None,
            "best": None,  # {"config", "score", "flops", "params"}
            "history": [],
            "rng": rng_state(self.rng),
            "done": False,
        }

    def load_checkpoint(self, error: NasPruneError | None = None) -> bool:
        """Merge a stored state into the fresh one (rank 0 reads it, every rank gets it); False when there is no
        checkpoint to resume. `error`: rank 0 could not lock the checkpoint (raised on every rank)."""
        if self.checkpoint is None:
            return False
        stored = None
        if self.world.is_main and error is None:
            try:
                stored = load_search_state(self.checkpoint, self.fingerprint)
            except NasPruneError as exc:
                error = exc
        self.world.agree(error if self.world.is_main else None, "reading the checkpoint")
        stored = self.world.broadcast(stored)
        if stored is None:
            return False
        self.state.update(stored)
        set_rng_state(self.rng, self.state["rng"])
        return True

    def save_checkpoint(self) -> None:
        """Write the state (with the RNG state) atomically, when a checkpoint path is set."""
        self.state["rng"] = rng_state(self.rng)
        if self.checkpoint is None:
            return
        error = None
        if self.world.is_main:
            try:
                save_search_state(self.checkpoint, self.state, self.fingerprint)
            except NasPruneError as exc:
                error = exc
        if self.world.size > 1:
            self.world.agree(error, "writing the checkpoint")
        elif error is not None:
            raise error

    def before_search(self) -> None:
        """Score the original (largest) subnet once (unless the evaluator already knows its score)."""
        if self.state["original_score"] is None:
            known = getattr(self._evaluate, "original_score", None)
            score = known() if callable(known) else None
            self.state["original_score"] = self.evaluate(self.space.max()) if score is None else float(score)
            self.save_checkpoint()

    @abstractmethod
    def run_search(self) -> None:
        """The search loop; writes the checkpoint after every step."""

    def after_search(self) -> None:
        """Make the best subnet active, score it if needed and leave its BN statistics recalibrated."""
        best = self.state["best"]
        if best is None:  # pragma: no cover - every searcher records at least one feasible subnet
            raise SearchError(f"{self.name} search found no subnet within the constraints")
        if best.get("score") is None:
            best["score"] = self.evaluate(best["config"])  # also recalibrates BN for this subnet
        else:
            self.space.select(best["config"])
            recalibrate = getattr(self._evaluate, "recalibrate", None)
            if recalibrate is not None and self._calibrated != self.space.config():
                if self._shares_batches():
                    recalibrate(self.world)  # the ranks share the batches out: the same statistics, to the bit
                else:
                    recalibrate()
        self.state["done"] = True
        self.save_checkpoint()

    # ---- helpers -----------------------------------------------------------------------------------------
    def evaluate(self, config: Mapping[str, int]) -> float:
        """Select a subnet and score it (BN recalibrated first), or take its score computed ahead by `prefetch`;
        counts the evaluation."""
        key = config_key(config)
        if key in self._prefetched:
            self.space.select(config)
            self._calibrated = None  # the model holds the statistics of whatever this rank scored last
            self.shared.used += 1
            self.state["evaluations"] += 1
            return self._prefetched.pop(key)
        together = self._score_together()  # every rank asks for the same subnet here: they score it together
        score = together(config) if together is not None else self._score(config)
        self.state["evaluations"] += 1
        return score

    def _score(self, config: Mapping[str, int], world: World | None = None) -> float:
        """Select a subnet and score it (BN recalibrated first): on this rank, or with the ranks of `world` together."""
        self.space.select(config)
        self._calibrated = None
        score = float(self._evaluate() if world is None else self._evaluate(world=world))
        self._calibrated = self.space.config()
        return score

    def _shares_batches(self) -> bool:
        """Several ranks and an evaluator that scores one subnet with all of them, each on a share of the batches, to
        the bits of one process (the default score)."""
        shares = getattr(self._evaluate, "shares_batches", None)
        return self.world.size > 1 and callable(shares) and bool(shares())

    def _score_together(self) -> Callable[[Mapping[str, int]], float] | None:
        """A function that scores a subnet with all ranks together when they can share the batches; else None."""
        return functools.partial(self._score, world=self.world) if self._shares_batches() else None

    def prefetch(self, configs: list[dict[str, int]]) -> None:
        """Several ranks: score these subnets now, shared out among the ranks, for `evaluate` to take later (each
        score once). One process: nothing (`evaluate` scores when asked). Every rank must pass the same list."""
        if self.world.size == 1:
            return
        todo: dict[str, dict[str, int]] = {}
        for config in configs:
            todo.setdefault(config_key(config), dict(config))
        todo = {k: c for k, c in todo.items() if k not in self._prefetched}
        if not todo:
            return
        configs = list(todo.values())
        scores = evaluate_shared(self.world, configs, self._score, self.shared, self._score_together())
        self._prefetched.update(zip(todo, scores, strict=True))

    def is_prefetched(self, config: Mapping[str, int]) -> bool:
        """Whether a subnet's score was computed ahead and not used yet."""
        return config_key(config) in self._prefetched

    def cost(self, config: Mapping[str, int]) -> Cost:
        """Fast-cost-model figures of a subnet (no model run)."""
        return self.space.cost(config)

    def fits(self, config: Mapping[str, int]) -> bool:
        """Whether a subnet meets every budget."""
        return satisfies(self.cost(config), self.bounds)

    def record(self, config: Mapping[str, int], score: float) -> dict[str, Any]:
        """Append a scored subnet to the history and keep the best (ties: the earlier one)."""
        cost = self.cost(config)
        entry = {"config": dict(config), "score": float(score), "flops": cost.flops, "params": cost.params}
        self.state["history"].append(entry)
        best = self.state["best"]
        if best is None or entry["score"] > best["score"]:
            self.state["best"] = dict(entry)
        return entry

    def progress(self, stage: str, done: int, total: int) -> None:
        """Report progress to the caller's callback (the library never prints)."""
        if self.on_progress is not None:
            self.on_progress(stage, done, total)


def rng_state(rng: random.Random) -> list[Any]:
    """random.Random state as nested lists (weights_only-safe)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Restore a state written by rng_state."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def config_key(config: Mapping[str, int]) -> str:
    """A hashable, stable key of a subnet config."""
    return ",".join(f"{k}={config[k]}" for k in sorted(config))
