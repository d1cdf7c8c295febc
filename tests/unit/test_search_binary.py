"""FastNAS binary searcher: the budget-driven sensitivity map, monotone drops and the cost-aware descent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from nasprune_cli.constraints import Cost, satisfies
from nasprune_cli.errors import RecipeError
from nasprune_cli.recipe.load import search_settings
from nasprune_cli.recipe.schema import SearchSettings
from nasprune_cli.searching.binary import BinarySearcher
from nasprune_cli.searching.floor import floor_choices, floored_hparams, uniform_config
from nasprune_cli.searching.sensitivity import SensitivityMap
from nasprune_cli.space import Hparam
from tests.unit.test_search_searchers import FakeEvaluator, FakeSpace, budget, run


def full_drop(state: dict, name: str, choice: int) -> float:
    return state["original_score"] - state["sensitivity_map"][name][choice]


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("fill", [True, False])
def test_budget_map_scores_fewer_choices_and_ends_like_the_complete_map(share: float, fill: bool) -> None:
    # FakeSpace's score falls monotonically with every width, so monotone drops equal the measured ones
    full, space, full_ev = run(BinarySearcher, budget(share), sensitivity="full", fill=fill)
    lazy, _, lazy_ev = run(BinarySearcher, budget(share), sensitivity="budget", fill=fill)
    for key in ("threshold", "threshold_config", "descent_config", "candidates", "best"):
        assert lazy[key] == full[key], key
    assert lazy_ev.calls < full_ev.calls
    assert lazy["evaluations"] == lazy_ev.calls
    # every choice the budget map left out drops more than the threshold the search ended at
    left_out = [
        (n, c) for n, hp in space.hparams.items() for c in hp.choices[:-1] if c not in lazy["sensitivity_map"][n]
    ]
    assert len(left_out) == full_ev.calls - lazy_ev.calls  # the only scores saved are the map's left-out choices
    assert all(full_drop(full, n, c) > lazy["threshold"] for n, c in left_out)


def test_budget_map_probes_widest_first_and_the_least_sensitive_hparam_next() -> None:
    space = FakeSpace()
    searcher = BinarySearcher(space, FakeEvaluator(space), budget(0.5), SearchSettings())
    searcher.state = searcher.default_state()
    searcher.state["original_score"] = 0.0
    smap = searcher.sensitivity_map
    names = list(space.hparams)
    for name in names:  # first the widest choice below the maximum of every hparam, in order
        probe = smap.next_probe(searcher.fits)
        assert probe == (name, space.hparams[name].choices[-2])
        searcher.probe(*probe)
    drops = {n: smap.drop(n, space.hparams[n].choices[-2]) for n in names}
    name, choice = smap.next_probe(searcher.fits)
    assert name == min(names, key=lambda n: drops[n])
    assert choice == space.hparams[name].choices[-3]


def hparam(choices: tuple[int, ...]) -> Hparam:
    return Hparam("h", "width", choices, choices[-1], ("layer.out",))


def test_budget_mode_makes_drops_monotone_so_a_lucky_narrow_choice_is_not_taken() -> None:
    hps = {"h": hparam((8, 16, 24, 32))}
    scores = {"h": {8: 0.9, 16: 0.5, 24: 0.95}}  # width 8 scored better than 16 by chance
    full = SensitivityMap(hps, scores, 1.0, "full")
    mono = SensitivityMap(hps, scores, 1.0, "budget")
    assert [full.drop("h", c) for c in (8, 16, 24, 32)] == pytest.approx([0.1, 0.5, 0.05, 0.0])
    assert [mono.drop("h", c) for c in (8, 16, 24, 32)] == pytest.approx([0.5, 0.5, 0.05, 0.0])
    assert full.config_at(0.2) == {"h": 8}
    assert mono.config_at(0.2) == {"h": 24}
    better = SensitivityMap(hps, {"h": {24: 1.1}}, 1.0, "budget")  # scoring above the original drops 0, not < 0
    assert better.drop("h", 24) == 0.0
    assert SensitivityMap(hps, {"h": {24: 1.1}}, 1.0, "full").drop("h", 24) == pytest.approx(-0.1)


def test_unscored_choices_bound_the_thresholds() -> None:
    hps = {"a": hparam((8, 16, 24, 32)), "b": hparam((8, 16))}
    smap = SensitivityMap(hps, {"a": {24: 0.8}, "b": {8: 0.6}}, 1.0, "budget")
    assert smap.limit() == pytest.approx(0.2)  # a's unscored 8 and 16 drop at least as much as its 24
    assert smap.thresholds() == [0.0]  # 0.2 is not below the limit, 0.4 (b at 8) neither
    assert SensitivityMap(hps, {"a": {8: 0.1, 16: 0.5, 24: 0.8}, "b": {8: 0.6}}, 1.0, "budget").limit() == float("inf")


class TwoLayers:
    """Width `a` costs 100 FLOPs per channel, width `b` 1: narrowing b saves next to nothing."""

    def __init__(self) -> None:
        choices = tuple(range(8, 65, 8))
        self.hparams = {n: Hparam(n, "width", choices, 64, (f"{n}.out",)) for n in ("a", "b")}
        self._active = self.max()
        self.original_cost = self.cost(self.max())

    def max(self) -> dict[str, int]:
        return {n: 64 for n in self.hparams}

    def min(self) -> dict[str, int]:
        return {n: 8 for n in self.hparams}

    def config(self) -> dict[str, int]:
        return dict(self._active)

    def select(self, config: Mapping[str, int]) -> None:
        self._active = {**self._active, **config}

    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        c = config or self._active
        return Cost(float(100 * c["a"] + c["b"]), float(c["a"] + c["b"]))

    def true_score(self, config: Mapping[str, int]) -> float:
        return -((1 - config["a"] / 64) ** 2) - 0.5 * (1 - config["b"] / 64) ** 2


def test_descent_keeps_what_saves_little_and_wins_over_the_threshold_subnet() -> None:
    space = TwoLayers()
    ev = FakeEvaluator(space)  # type: ignore[arg-type]
    bounds = {"flops": 0.6 * space.original_cost.flops}
    state = BinarySearcher(space, ev, bounds, SearchSettings(fill=False)).search()
    # the threshold cuts b (a small drop) although that saves almost nothing; the descent leaves b whole
    assert state["threshold_config"]["b"] < 64
    assert state["descent_config"] == {"a": 32, "b": 64}
    sources = [c["source"] for c in state["candidates"]]
    assert sources == ["threshold", "descent"]
    scores = {c["source"]: c["score"] for c in state["candidates"]}
    assert scores["descent"] > scores["threshold"]
    assert state["best"]["config"] == state["descent_config"]
    assert state["best"]["score"] == pytest.approx(space.true_score(state["descent_config"]))
    assert space.config() == state["best"]["config"]  # the winner is left active
    assert state["evaluations"] == ev.calls  # original + map + both candidates, nothing scored twice
    assert ev.recalibrations == 0  # the winner was scored last: its BN statistics are already in place


def test_without_descent_only_the_threshold_subnet_is_scored() -> None:
    space = TwoLayers()
    bounds = {"flops": 0.6 * space.original_cost.flops}
    ev = FakeEvaluator(space)  # type: ignore[arg-type]
    state = BinarySearcher(space, ev, bounds, SearchSettings(fill=False, descent=False)).search()
    assert state["descent_config"] is None
    assert [c["source"] for c in state["candidates"]] == ["threshold"]
    assert state["best"]["config"] == state["threshold_config"]
    mapped = sum(len(v) for v in state["sensitivity_map"].values())
    assert ev.calls == 1 + mapped + 1


def test_descent_and_threshold_agreeing_are_scored_once() -> None:
    space = TwoLayers()
    bounds = {"flops": 0.6 * space.original_cost.flops}
    ev = FakeEvaluator(space)  # type: ignore[arg-type]
    state = BinarySearcher(space, ev, bounds, SearchSettings()).search()  # the fill grows b back: same subnet
    assert [c["source"] for c in state["candidates"]] == ["threshold"]
    assert state["best"]["config"] == {"a": 32, "b": 64}
    mapped = sum(len(v) for v in state["sensitivity_map"].values())
    assert ev.calls == 1 + mapped + 1


@pytest.mark.parametrize(("key", "value"), [("sensitivity", "lazy"), ("importance", "l1")])
def test_unknown_modes_are_refused(key: str, value: str) -> None:
    with pytest.raises(RecipeError, match=rf"search\.{key}: expected one of .*\(got '{value}'\)"):
        search_settings(None, {key: value})


@pytest.mark.parametrize("late", [1, 2, 5])
def test_resume_during_the_descent_or_the_final_scoring(tmp_path: Path, late: int) -> None:
    bounds = {"flops": 0.6 * TwoLayers().original_cost.flops}
    settings = SearchSettings(fill=False)
    space = TwoLayers()
    ref_ev = FakeEvaluator(space)  # type: ignore[arg-type]
    reference = BinarySearcher(space, ref_ev, bounds, settings).search()
    ckpt = tmp_path / "state.pt"
    space = TwoLayers()
    failing = FakeEvaluator(space, fail_after=ref_ev.calls - late)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        BinarySearcher(space, failing, bounds, settings, checkpoint=ckpt).search()
    space = TwoLayers()
    ev = FakeEvaluator(space)  # type: ignore[arg-type]
    resumed = BinarySearcher(space, ev, bounds, settings, checkpoint=ckpt).search()
    for key in ("sensitivity_map", "descent_config", "candidates", "best", "evaluations"):
        assert resumed[key] == reference[key], key
    assert ev.calls == late  # nothing scored twice


# ---- width floor -------------------------------------------------------------------------------------------
OLD_30 = {"h0": 32, "h1": 56, "h2": 64, "h3": 24, "h4": 96}  # the search without a floor at 30% FLOPs


def larger_ratios_that_fit(space: FakeSpace, bounds: dict[str, float], ratio: float) -> list[float]:
    """Brute force over every choice ratio above `ratio`: those whose uniform subnet meets the budget."""
    ratios = {c / hp.choices[-1] for hp in space.hparams.values() for c in hp.choices}
    return [r for r in ratios if r > ratio and satisfies(space.cost(uniform_config(space.hparams, r)), bounds)]


def test_without_a_floor_the_search_is_the_old_one_and_cuts_a_layer_to_a_third() -> None:
    state, space, _ = run(BinarySearcher, budget(0.3), width_floor=0.0)
    assert state["best"]["config"] == OLD_30
    assert all(low == space.hparams[n].choices[0] for n, low in state["floor"]["lowest"].items())


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("floor", [0.5, 0.75, 1.0])
def test_no_width_below_the_floor_and_the_budget_is_met(share: float, floor: float) -> None:
    bounds = budget(share)
    state, space, ev = run(BinarySearcher, bounds, width_floor=floor)
    ratio = state["floor"]["uniform_ratio"]
    uniform = uniform_config(space.hparams, ratio)
    assert satisfies(space.cost(uniform), bounds)
    assert larger_ratios_that_fit(space, bounds, ratio) == []
    for name, width in state["best"]["config"].items():
        # at least f x r_u of the width, or the uniform subnet's width when that is narrower (f near 1)
        assert width >= min(floor * ratio * space.hparams[name].choices[-1], uniform[name]) - 1e-9, name
    assert state["best"]["flops"] <= bounds["flops"]
    scored = [c for n, s in state["sensitivity_map"].items() for c in s if c < state["floor"]["lowest"][n]]
    assert scored == []  # nothing below the floor is even probed
    assert state["evaluations"] == ev.calls


def test_the_floor_lifts_the_layer_the_old_search_cut_to_a_third() -> None:
    state, space, _ = run(BinarySearcher, budget(0.3), width_floor=0.5)
    assert state["floor"]["lowest"]["h3"] > OLD_30["h3"]
    assert state["best"]["config"]["h3"] >= state["floor"]["lowest"]["h3"]
    assert state["best"]["flops"] / space.original_cost.flops == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("floor", [0.5, 1.0])
def test_a_budget_only_the_smallest_subnet_meets_is_still_met(floor: float) -> None:
    space = FakeSpace()
    bounds = {"flops": space.cost(space.min()).flops, "params": space.cost(space.min()).params}
    state = BinarySearcher(space, FakeEvaluator(space), bounds, SearchSettings(width_floor=floor)).search()
    assert state["best"]["config"] == space.min()


def test_a_layer_that_cannot_shrink_much_does_not_block_a_tight_budget() -> None:
    # h0 cannot go below 24 of 32: the uniform ratio is set by what the others can give
    space = FakeSpace()
    space.hparams["h0"] = Hparam("h0", "width", (24, 32), 32, ("layer0.out",))
    bounds = budget(0.35)
    state = BinarySearcher(space, FakeEvaluator(space), bounds, SearchSettings(width_floor=1.0)).search()
    assert satisfies(space.cost(state["best"]["config"]), bounds)


def test_the_floor_leaves_depth_and_kernel_hparams_alone() -> None:
    hps = {
        "w": Hparam("w", "width", (8, 16, 24, 32), 32, ("a.out",)),
        "d": Hparam("d", "depth", (1, 2, 3), 3, ("seq",)),
    }
    assert uniform_config(hps, 0.5) == {"w": 16, "d": 1}
    assert floor_choices(hps, 0.5, 1.0) == {"w": 16, "d": 1}
    floored = floored_hparams(hps, {"w": 16, "d": 1})
    assert floored["w"].choices == (16, 24, 32)
    assert floored["d"] is hps["d"]


OUT_OF_RANGE = r"(must be [<>]= [01]\.0|expected a number)"


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_bad_width_floor_is_refused(value: object) -> None:
    with pytest.raises(
        RecipeError, match=rf"search\.width_floor: (must be [<>]= [01].0|expected a number) \(got {value!r}\)"
    ):
        search_settings(None, {"width_floor": value})


# ---- balanced rival ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
def test_without_the_rival_only_threshold_and_descent_are_candidates(share: float) -> None:
    state, _, _ = run(BinarySearcher, budget(share), rival_floor=0.0)
    assert state["rival_config"] is None and state["floor"]["rival_lowest"] is None
    assert {c["source"] for c in state["candidates"]} <= {"threshold", "descent"}


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("rival", [0.5, 1.0])
def test_the_balanced_rival_stays_above_its_floor_and_the_best_scored_candidate_wins(
    share: float, rival: float
) -> None:
    bounds = budget(share)
    state, space, ev = run(BinarySearcher, bounds, rival_floor=rival)
    lowest = state["floor"]["rival_lowest"]
    assert lowest == floor_choices(space.hparams, rival, state["floor"]["uniform_ratio"])
    assert all(state["rival_config"][n] >= low for n, low in lowest.items())
    balanced = [c for c in state["candidates"] if c["source"] == "balanced"]
    for cand in balanced:
        assert all(cand["config"][n] >= low for n, low in lowest.items())
    configs = [tuple(sorted(c["config"].items())) for c in state["candidates"]]
    assert len(configs) == len(set(configs))  # a subnet is a candidate once
    for cand in state["candidates"]:
        assert satisfies(space.cost(cand["config"]), bounds)
    if len(state["candidates"]) > 1:
        assert state["best"]["score"] == max(c["score"] for c in state["candidates"])
    assert state["evaluations"] == ev.calls


class BottleneckSpace(FakeSpace):
    """A score that punishes the narrowest layer beyond what single-layer probes show (bottlenecks compound)."""

    def true_score(self, config: Mapping[str, int]) -> float:
        ratios = [config[n] / hp.original for n, hp in self.hparams.items()]
        return super().true_score(config) - 4.0 * (1.0 - min(ratios)) ** 2 * sum(1 - r for r in ratios)


def test_the_balanced_rival_wins_when_bottlenecks_hurt() -> None:
    def search(rival: float) -> dict:
        space = BottleneckSpace()
        settings = SearchSettings(rival_floor=rival)
        return BinarySearcher(space, FakeEvaluator(space), budget(0.3), settings).search()

    without, with_rival = search(0.0), search(0.75)
    balanced = [c for c in with_rival["candidates"] if c["source"] == "balanced"]
    assert len(balanced) == 1
    assert with_rival["best"]["config"] == balanced[0]["config"]
    assert with_rival["best"]["score"] > without["best"]["score"]
    assert with_rival["evaluations"] > without["evaluations"]  # the rival costs evaluations: it is scored


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_bad_rival_floor_is_refused(value: object) -> None:
    with pytest.raises(
        RecipeError, match=rf"search\.rival_floor: (must be [<>]= [01].0|expected a number) \(got {value!r}\)"
    ):
        search_settings(None, {"rival_floor": value})
