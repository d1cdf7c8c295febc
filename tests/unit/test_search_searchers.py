"""Binary (FastNAS), evolve (AutoNAS) and random searchers on a synthetic space with known cost and score."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from nasprune_cli.constraints import Cost
from nasprune_cli.errors import CheckpointError, NasPruneError, SearchError
from nasprune_cli.recipe.schema import SearchSettings
from nasprune_cli.searching.base import config_key
from nasprune_cli.searching.binary import BinarySearcher
from nasprune_cli.searching.evolve import EvolveSearcher
from nasprune_cli.searching.random import RandomSearcher
from nasprune_cli.searching.registry import searcher_class
from nasprune_cli.space import Hparam


class FakeSpace:
    """A chain of widths: flops = sum c_i * c_{i+1} * w_i (+ first layer), params additive; no model run."""

    def __init__(self, sizes: tuple[int, ...] = (32, 64, 64, 128, 96), step: int = 8) -> None:
        self.hparams = {
            f"h{i}": Hparam(f"h{i}", "width", tuple(range(step, n + 1, step)), n, (f"layer{i}.out",))
            for i, n in enumerate(sizes)
        }
        self.weights = [1.0 + 0.5 * i for i in range(len(sizes))]
        self.importance = [3.0, 1.0, 2.0, 0.5, 1.5][: len(sizes)]
        self._active = self.max()
        self.original_cost = self.cost(self.max())
        self.selects = 0

    def max(self) -> dict[str, int]:
        return {n: hp.choices[-1] for n, hp in self.hparams.items()}

    def min(self) -> dict[str, int]:
        return {n: hp.choices[0] for n, hp in self.hparams.items()}

    def config(self) -> dict[str, int]:
        return dict(self._active)

    def select(self, config: Mapping[str, int]) -> None:
        for name, value in config.items():
            if name not in self.hparams or value not in self.hparams[name].choices:
                raise NasPruneError(f"bad {name}={value}")
        self._active = {**self._active, **config}
        self.selects += 1

    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        c = [(config or self._active)[f"h{i}"] for i in range(len(self.hparams))]
        flops = 3 * 9 * c[0] + sum(c[i] * c[i + 1] * 9 * self.weights[i] for i in range(len(c) - 1))
        params = sum(ci * 10 for ci in c)
        return Cost(float(flops), float(params))

    def true_score(self, config: Mapping[str, int]) -> float:
        """Known score: a weighted loss of the share of each width removed (0 at the max, higher is better)."""
        return -sum(
            imp * (1 - config[n] / hp.original) ** 2
            for imp, (n, hp) in zip(self.importance, self.hparams.items(), strict=True)
        )


class FakeEvaluator:
    """Scores the active config of a FakeSpace; can raise after a given number of calls (an interruption)."""

    def __init__(self, space: FakeSpace, fail_after: int | None = None) -> None:
        self.space = space
        self.calls = 0
        self.fail_after = fail_after
        self.recalibrations = 0

    def recalibrate(self) -> None:
        self.recalibrations += 1

    def __call__(self) -> float:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.space.true_score(self.space.config())


def run(
    cls: type,
    bounds: dict[str, float],
    checkpoint: Path | None = None,
    fail_after: int | None = None,
    **settings: object,
) -> tuple[dict, FakeSpace, FakeEvaluator]:
    space = FakeSpace()
    evaluator = FakeEvaluator(space, fail_after)
    conf = SearchSettings(searcher=cls.name, **settings)  # type: ignore[arg-type]
    searcher = cls(space, evaluator, bounds, conf, checkpoint=checkpoint, fingerprint={"test": 1})
    return searcher.search(), space, evaluator


def budget(share: float, name: str = "flops") -> dict[str, float]:
    return {name: FakeSpace().original_cost.get(name) * share}


# ---- binary ------------------------------------------------------------------------------------------------
def test_binary_full_sensitivity_map_covers_every_choice_and_counts_evaluations() -> None:
    state, space, ev = run(BinarySearcher, budget(0.5), sensitivity="full", descent=False)
    smap = state["sensitivity_map"]
    assert set(smap) == set(space.hparams)
    for name, hp in space.hparams.items():
        assert sorted(smap[name]) == list(hp.choices[:-1])
        for choice, score in smap[name].items():
            assert score == pytest.approx(space.true_score({**space.max(), name: choice}))
    n_sens = sum(len(hp.choices) - 1 for hp in space.hparams.values())
    assert state["evaluations"] == 1 + n_sens + 1 == ev.calls  # original + map + the chosen subnet
    assert state["original_score"] == 0.0
    assert state["done"] is True


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("name", ["flops", "params"])
def test_binary_with_fill_lands_just_under_the_budget(share: float, name: str) -> None:
    bounds = budget(share, name)
    state, space, _ = run(BinarySearcher, bounds)
    best = state["best"]["config"]
    used = space.cost(best).get(name)
    assert used <= bounds[name]
    # no single step up of any hparam still fits: the fill used the budget
    for n, hp in space.hparams.items():
        idx = hp.choices.index(best[n])
        if idx + 1 < len(hp.choices):
            assert space.cost({**best, n: hp.choices[idx + 1]}).get(name) > bounds[name]
    assert state["best"]["score"] == pytest.approx(space.true_score(best))
    assert space.config() == best  # the best subnet is left active


def test_binary_without_fill_is_the_smallest_threshold_that_fits() -> None:
    bounds = budget(0.5)
    state, space, _ = run(BinarySearcher, bounds, fill=False, descent=False)
    searcher = BinarySearcher(space, FakeEvaluator(space), bounds, SearchSettings(descent=False))
    searcher.state = state
    thresholds = state["thresholds"]
    hi = thresholds.index(state["threshold"])
    assert state["best"]["config"] == searcher.config_at(state["threshold"])
    assert searcher.fits(searcher.config_at(thresholds[hi]))
    assert hi == 0 or not searcher.fits(searcher.config_at(thresholds[hi - 1]))
    filled, _, _ = run(BinarySearcher, bounds, fill=True, descent=False)
    assert space.cost(filled["best"]["config"]).flops >= space.cost(state["best"]["config"]).flops


def test_binary_prefers_less_sensitive_hparams() -> None:
    state, space, _ = run(BinarySearcher, budget(0.6))
    best = state["best"]["config"]
    share = {n: best[n] / hp.original for n, hp in space.hparams.items()}
    assert share["h0"] >= share["h3"]  # h0 is six times as important as h3


def test_threshold_config_is_monotone() -> None:
    state, space, _ = run(BinarySearcher, budget(0.5), sensitivity="full")
    searcher = BinarySearcher(space, FakeEvaluator(space), budget(0.5), SearchSettings(sensitivity="full"))
    searcher.state = state
    costs = [space.cost(searcher.config_at(t)).flops for t in state["thresholds"]]
    assert costs == sorted(costs, reverse=True)
    assert searcher.config_at(state["thresholds"][-1]) == space.min()


# ---- evolve / random ---------------------------------------------------------------------------------------
EVOLVE = {"iterations": 30, "population_size": 6, "candidate_size": 3, "mutation_size": 3, "crossover_size": 2}


@pytest.mark.parametrize(("cls", "settings"), [(EvolveSearcher, EVOLVE), (RandomSearcher, {"iterations": 20})])
def test_population_searchers_stay_in_the_budget_window(cls: type, settings: dict) -> None:
    bounds = budget(0.5)
    state, space, _ = run(cls, bounds, **settings)
    assert state["iteration"] == settings["iterations"]
    assert len(state["history"]) == settings["iterations"]
    for entry in state["history"]:
        assert 0.85 * bounds["flops"] <= space.cost(entry["config"]).flops <= bounds["flops"]
    scores = [e["score"] for e in state["history"]]
    assert state["best"]["score"] == max(scores)
    assert state["original_score"] == 0.0


@pytest.mark.parametrize(("cls", "settings"), [(EvolveSearcher, EVOLVE), (RandomSearcher, {"iterations": 20})])
def test_population_searchers_meet_two_budgets(cls: type, settings: dict) -> None:
    bounds = {**budget(0.5), **budget(0.7, "params")}
    state, space, _ = run(cls, bounds, **settings)
    for entry in state["history"]:
        cost = space.cost(entry["config"])
        assert cost.flops <= bounds["flops"] and cost.params <= bounds["params"]
        assert max(cost.get(k) / v for k, v in bounds.items()) >= 0.85  # the binding budget is nearly used


def test_evolve_is_deterministic_per_seed_and_improves_on_its_first_generation() -> None:
    a, _, _ = run(EvolveSearcher, budget(0.5), seed=3, **EVOLVE)
    b, _, _ = run(EvolveSearcher, budget(0.5), seed=3, **EVOLVE)
    c, _, _ = run(EvolveSearcher, budget(0.5), seed=4, **EVOLVE)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]
    first = max(e["score"] for e in a["history"][: EVOLVE["population_size"]])
    assert a["best"]["score"] >= first
    assert a["generation"] == EVOLVE["iterations"] // EVOLVE["population_size"]


def test_repeated_subnets_are_scored_once() -> None:
    state, _, ev = run(RandomSearcher, budget(0.5), iterations=40)
    distinct = {config_key(e["config"]) for e in state["history"]}
    assert ev.calls == 1 + len(distinct)  # original + each distinct subnet
    assert state["evaluations"] == ev.calls


# ---- template: checks, resume, refusal ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [BinarySearcher, EvolveSearcher, RandomSearcher])
def test_unsatisfiable_budget_fails_before_any_evaluation(cls: type) -> None:
    space = FakeSpace()
    ev = FakeEvaluator(space)
    smallest = space.cost(space.min()).flops
    searcher = cls(space, ev, {"flops": smallest * 0.9}, SearchSettings(searcher=cls.name))
    with pytest.raises(SearchError, match=r"constraints cannot be met: flops <= .* smallest subnet has"):
        searcher.search()
    assert ev.calls == 0


def test_no_constraints_is_an_error() -> None:
    space = FakeSpace()
    with pytest.raises(SearchError, match="no constraints"):
        BinarySearcher(space, FakeEvaluator(space), {}, SearchSettings()).search()


@pytest.mark.parametrize(
    ("cls", "settings", "fail_after"),
    [
        (BinarySearcher, {}, 1),
        (BinarySearcher, {}, 7),
        (EvolveSearcher, EVOLVE, 4),
        (EvolveSearcher, EVOLVE, 17),
        (RandomSearcher, {"iterations": 12}, 5),
    ],
)
def test_resume_after_interruption_ends_like_an_uninterrupted_run(
    tmp_path: Path, cls: type, settings: dict, fail_after: int
) -> None:
    bounds = budget(0.5)
    reference, _, ref_ev = run(cls, bounds, seed=1, **settings)
    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(cls, bounds, checkpoint=ckpt, fail_after=fail_after, seed=1, **settings)
    assert ckpt.exists() and not list(tmp_path.glob(".*.tmp"))
    stored = torch.load(ckpt, weights_only=True)["state"]
    assert stored["done"] is False
    resumed, _, ev = run(cls, bounds, checkpoint=ckpt, seed=1, **settings)
    assert resumed["best"] == reference["best"]
    assert resumed["history"] == reference["history"]
    assert resumed["evaluations"] == reference["evaluations"]
    assert ev.calls == ref_ev.calls - fail_after  # nothing scored twice
    # a finished checkpoint: re-running scores nothing and gives the same result
    again, _, ev2 = run(cls, bounds, checkpoint=ckpt, seed=1, **settings)
    assert ev2.calls == 0 and ev2.recalibrations == 1
    assert again["best"] == reference["best"]


def test_checkpoint_of_another_search_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "state.pt"
    run(BinarySearcher, budget(0.5), checkpoint=ckpt)
    space = FakeSpace()
    other = BinarySearcher(
        space, FakeEvaluator(space), budget(0.5), SearchSettings(), checkpoint=ckpt, fingerprint={"test": 2}
    )
    with pytest.raises(CheckpointError, match=r"state\.pt: this checkpoint belongs to a different search \(test "):
        other.search()


def test_checkpoint_in_a_missing_directory_fails_before_any_evaluation(tmp_path: Path) -> None:
    space = FakeSpace()
    evaluator = FakeEvaluator(space)
    ckpt = tmp_path / "no_dir" / "state.pt"
    searcher = BinarySearcher(space, evaluator, budget(0.5), SearchSettings(), checkpoint=ckpt)
    with pytest.raises(CheckpointError, match=r"state\.pt: directory '.*no_dir' does not exist"):
        searcher.search()
    assert evaluator.calls == 0


@pytest.mark.parametrize("mode", ["budget", "full"])
def test_progress_callback_reports_stages(mode: str) -> None:
    space = FakeSpace()
    seen: list[tuple[str, int, int]] = []
    settings = SearchSettings(sensitivity=mode)
    searcher = BinarySearcher(space, FakeEvaluator(space), budget(0.5), settings, on_progress=lambda *a: seen.append(a))
    state = searcher.search()
    stages = {s for s, _, _ in seen}
    assert stages == {"sensitivity", "search"}
    sens = [(d, t) for s, d, t in seen if s == "sensitivity"]
    every_choice = sum(len(hp.choices) - 1 for hp in space.hparams.values())
    assert sens[0][1] == every_choice  # the bar starts at the size of the complete map
    assert sens[-1][0] == sens[-1][1]  # and ends full, at the number of choices scored
    scored = sum(len(v) for v in state["sensitivity_map"].values())
    assert sens[-1][0] <= scored  # (the descent may score a few more afterwards)
    if mode == "full":
        assert sens[-1][0] == every_choice


def test_searcher_registry() -> None:
    assert searcher_class("binary") is BinarySearcher
    assert searcher_class("evolve") is EvolveSearcher
    assert searcher_class("random") is RandomSearcher
    with pytest.raises(SearchError, match="unknown searcher 'grid'"):
        searcher_class("grid")


def test_repair_always_fits() -> None:
    space = FakeSpace()
    bounds = budget(0.3)
    searcher = RandomSearcher(space, FakeEvaluator(space), bounds, SearchSettings(searcher="random"))
    searcher.lower = {k: 0.85 * v for k, v in bounds.items()}
    rng = random.Random(0)
    for _ in range(50):
        config = searcher.repair(searcher.random_config(rng), rng)
        assert searcher.fits(config)
    assert math.isfinite(space.cost(config).flops)


@pytest.mark.parametrize(("population", "parents"), [(12, 10), (4, 4)])
def test_evolve_keeps_min_10_population_parents_by_default(population: int, parents: int) -> None:
    state, _, _ = run(EvolveSearcher, budget(0.6), population_size=population, iterations=2 * population)
    assert state["generation"] == 2
    assert len(state["candidates"]) == parents  # the best of the pool, not all of it
    scores = [c["score"] for c in state["candidates"]]
    assert scores == sorted(scores, reverse=True)
