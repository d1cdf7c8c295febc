"""FastNAS: a sensitivity map, a binary search on the tolerated score drop, a greedy fill, and a cost-aware rival.

0. Width floor (`width_floor`, nasprune_cli.searching.floor): from the cost model alone, the largest uniform width
   ratio r_u that meets the budgets; every width hparam then keeps only its choices >= width_floor x r_u x its
   maximum, in every step below: a guard against bottlenecks (layers cut far below the uniform width).
   width_floor=0, the default, keeps every choice.
1. Sensitivity map (nasprune_cli.searching.sensitivity): the score of the model with one hparam reduced to one
   choice (all others at their maximum), BN recalibrated; drop(h, c) = original score - that score. By default
   (`sensitivity="budget"`) drops are monotone in the width and only the choices the budget can reach are scored;
   `sensitivity="full"` scores every choice and keeps the measured drops (the first version).
2. Threshold: at threshold t every hparam takes its smallest choice whose drop is <= t (its maximum always
   qualifies). Cost falls as t grows, so a binary search over the distinct drops finds the smallest t whose
   subnet meets the budgets; this takes log2(#drops) cost-model look-ups and no score evaluation.
3. Fill (`fill=True`, the default): the threshold subnet can sit well below the budget, because every hparam
   jumps between the choices the threshold allows. Hparams are then grown one choice at a time, taking the
   step with the largest estimated score gain (from the sensitivity map) per unit of budget used, while the
   subnet still fits; this lands the result just under the budget. `fill=False` keeps the plain threshold
   subnet, as modelopt's BinarySearcher does.
4. Descent (`descent=True`, the default): the threshold ignores what a reduction saves, so it can cut an hparam
   that saves little while a cheaper-to-lose one stays whole. A second subnet is built from the same map by
   greedy descent from the largest subnet: each step narrows the hparam with the smallest drop increase per share
   of the budget it saves, until the subnet fits (then the fill). Its map entries are scored when first needed.
   Balanced rival (`rival_floor`, default 0.5, needs the descent): the same descent and fill once more, with no
   width hparam below rival_floor x r_u x its maximum. The descent alone can leave a layer far narrower than the
   rest (a bottleneck); this rival keeps every layer near the uniform prune, and it is only kept if it scores higher.
5. The candidates (threshold, descent, balanced; a duplicate subnet is scored once) are scored; the highest score
   wins, ties go to the earlier candidate. With `descent=False` only the threshold subnet is scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasprune_cli.searching.base import Searcher
from nasprune_cli.searching.floor import floor_choices, floored_hparams, uniform_ratio
from nasprune_cli.searching.sensitivity import SensitivityMap


class BinarySearcher(Searcher):
    """FastNAS binary search over a score-degradation threshold, with a cost-aware descent as a rival."""

    name = "binary"
    _floored: tuple[Any, dict[str, Any]] | None = None  # (the state's floor, the hparams it leaves)

    def default_state(self) -> dict[str, Any]:
        """Adds the sensitivity map, the binary-search interval and the candidate subnets."""
        state = super().default_state()
        state.update(
            {
                "floor": None,  # {"uniform_ratio", "lowest": {hparam: narrowest allowed choice}}
                "sensitivity_map": {},  # hparam -> {choice: score}
                "thresholds": None,  # sorted distinct score drops
                "lo": None,  # index of a threshold known not to fit (None: none tested)
                "hi": None,  # index of the smallest threshold known to fit
                "threshold": None,
                "threshold_config": None,
                "descent_config": None,
                "rival_config": None,  # the descent within the rival floor (rival_floor > width_floor)
                "candidates": [],  # [{"source", "config", "score"}]: the subnets scored at the end
            }
        )
        return state

    @property
    def hparams(self) -> dict[str, Any]:
        """The space's hparams with only the choices the width floor allows (all of them before it is set)."""
        floor = self.state.get("floor")
        if self._floored is None or self._floored[0] is not floor:
            hparams = floored_hparams(self.space.hparams, floor["lowest"]) if floor else dict(self.space.hparams)
            self._floored = (floor, hparams)
        return self._floored[1]

    @property
    def sensitivity_map(self) -> SensitivityMap:
        """The sensitivity map over the state's scores."""
        state = self.state
        return SensitivityMap(
            self.hparams, state["sensitivity_map"], state["original_score"], self.settings.sensitivity
        )

    def set_floor(self) -> None:
        """Compute the width floor from the uniform ratio that meets the budgets (cost model only)."""
        if self.state["floor"] is None:
            ratio = uniform_ratio(self.space.hparams, self.fits)
            lowest = floor_choices(self.space.hparams, float(self.settings.width_floor), ratio)
            rival = float(self.settings.rival_floor)
            rival_lowest = None
            if rival > self.settings.width_floor:  # a rival floor at or under the width floor adds nothing
                rival_lowest = floor_choices(self.space.hparams, rival, ratio)
            self.state["floor"] = {"uniform_ratio": ratio, "lowest": lowest, "rival_lowest": rival_lowest}

    @property
    def rival_hparams(self) -> dict[str, Any] | None:
        """The hparams with only the choices the rival floor allows; None when there is no rival."""
        floor = self.state.get("floor") or {}
        lowest = floor.get("rival_lowest")
        return floored_hparams(self.hparams, lowest) if lowest else None

    # ---- sensitivity map ---------------------------------------------------------------------------------
    def before_search(self) -> None:
        """Original score, then the sensitivity map (checkpointed after every evaluation)."""
        super().before_search()
        self.set_floor()
        sensitivity = self.sensitivity_map
        total = sensitivity.total()
        self.progress("sensitivity", sensitivity.done(), total)
        while (probe := sensitivity.next_probe(self.fits)) is not None:
            self.prefetch_probes(probe)
            self.probe(*probe)
            self.progress("sensitivity", sensitivity.done(), total)
        self.progress("sensitivity", sensitivity.done(), sensitivity.done())

    def probe(self, name: str, choice: int) -> None:
        """Score one hparam at one choice (all others at their maximum) into the map, unless already scored."""
        sensitivity = self.sensitivity_map
        if not sensitivity.is_scored(name, choice):
            sensitivity.record(name, choice, self.evaluate(self.probe_config(name, choice)))
            self.save_checkpoint()

    def probe_config(self, name: str, choice: int) -> dict[str, int]:
        """The subnet a probe scores: one hparam at one choice, every other at its maximum."""
        return {**self.space.max(), name: choice}

    def prefetch_probes(self, first: tuple[str, int]) -> None:
        """Several ranks: score the next probe with the probes most likely to follow, one per rank ("full": every
        unscored choice at once). Which probes the map takes, and in which order, does not change."""
        if self.world.size == 1 or self.is_prefetched(self.probe_config(*first)):
            return
        sensitivity = self.sensitivity_map
        if not sensitivity.monotone:
            hparams = self.hparams.items()
            wanted = [(n, c) for n, hp in hparams for c in hp.choices[:-1] if not sensitivity.is_scored(n, c)]
        else:
            wanted = self.likely_probes(first, self.world.size)
        self.prefetch([self.probe_config(n, c) for n, c in wanted])

    def likely_probes(self, first: tuple[str, int], count: int) -> list[tuple[str, int]]:
        """`first` and the next unscored choices of the hparams whose narrowest scored choice drops least (the
        order the budget map probes them in), one level at a time, `count` in all."""
        sensitivity = self.sensitivity_map
        below: dict[str, list[int]] = {}
        for name, hp in self.hparams.items():
            lower = hp.choices[: hp.choices.index(sensitivity.narrowest(name))]
            below[name] = [c for c in reversed(lower) if not self.is_prefetched(self.probe_config(name, c))]
        order = sorted(below, key=lambda n: (n != first[0], sensitivity.drop(n, sensitivity.narrowest(n))))
        picks = [first]
        level = 0
        while len(picks) < count and any(len(v) > level for v in below.values()):
            for name in order:
                if len(below[name]) > level and (name, below[name][level]) not in picks and len(picks) < count:
                    picks.append((name, below[name][level]))
            level += 1
        return picks

    def drop(self, name: str, choice: int) -> float:
        """Score drop of one hparam at one scored choice (0 at its maximum)."""
        return self.sensitivity_map.drop(name, choice)

    def config_at(self, threshold: float) -> dict[str, int]:
        """Every hparam at its smallest scored choice whose drop is <= threshold (the maximum always qualifies)."""
        return self.sensitivity_map.config_at(threshold)

    # ---- threshold search, descent, final choice ---------------------------------------------------------
    def run_search(self) -> None:
        """Binary search on the distinct drops for the smallest threshold that fits, the fill, the descent."""
        state = self.state
        if state["done"]:
            return
        if state["thresholds"] is None:
            state["thresholds"] = self.sensitivity_map.thresholds()
            # the largest threshold fits: it allows every choice (the smallest subnet fits), or the map stopped there
            state["hi"] = len(state["thresholds"]) - 1
            state["lo"] = -1
            self.save_checkpoint()
        thresholds = state["thresholds"]
        total = max(1, (len(thresholds)).bit_length())
        while state["hi"] - state["lo"] > 1:
            mid = (state["lo"] + state["hi"]) // 2
            if self.fits(self.config_at(thresholds[mid])):
                state["hi"] = mid
            else:
                state["lo"] = mid
            state["iteration"] += 1
            self.save_checkpoint()
            self.progress("search", min(state["iteration"], total), total)
        self.progress("search", total, total)
        if state["threshold_config"] is None:
            state["threshold"] = thresholds[state["hi"]]
            state["threshold_config"] = self.config_at(state["threshold"])
            self.save_checkpoint()
        if self.settings.descent and state["descent_config"] is None:
            state["descent_config"] = self.descend()
            self.save_checkpoint()
        rival = self.rival_hparams
        if self.settings.descent and rival is not None and state["rival_config"] is None:
            state["rival_config"] = self.descend(rival)
            self.save_checkpoint()
        self.choose()

    def filled(self, config: Mapping[str, int], hparams: Mapping[str, Any] | None = None) -> dict[str, int]:
        """The fill of a subnet (within `hparams`' choices) when `fill` is on, else the subnet itself."""
        return self.fill(config, hparams) if self.settings.fill else dict(config)

    def choose(self) -> None:
        """Score the candidate subnets (threshold, then descent when it differs) and keep the best."""
        state = self.state
        candidates = state["candidates"]
        if not candidates:
            candidates.append({"source": "threshold", "config": self.filled(state["threshold_config"]), "score": None})
            rivals = [
                ("descent", state["descent_config"], None),
                ("balanced", state["rival_config"], self.rival_hparams),
            ]
            for source, start, hparams in rivals:
                if start is None:
                    continue
                config = self.filled(start, hparams)
                if all(config != c["config"] for c in candidates):
                    candidates.append({"source": source, "config": config, "score": None})
            self.save_checkpoint()
        if len(candidates) == 1:  # nothing to compare: after_search scores it
            best = candidates[0]
        else:
            self.prefetch([c["config"] for c in candidates if c["score"] is None])
            for cand in candidates:
                if cand["score"] is None:
                    cand["score"] = self.evaluate(cand["config"])
                    self.save_checkpoint()
            best = max(candidates, key=lambda c: c["score"])  # ties: the first (threshold) candidate
        cost = self.cost(best["config"])
        state["best"] = {
            "config": dict(best["config"]),
            "score": best["score"],
            "flops": cost.flops,
            "params": cost.params,
        }
        self.save_checkpoint()

    def descend(self, hparams: Mapping[str, Any] | None = None) -> dict[str, int]:
        """From the largest subnet, narrow the hparam with the least drop per share of budget saved until it fits
        (within `hparams`' choices; default: every choice the width floor allows)."""
        hparams = self.hparams if hparams is None else hparams
        config = self.space.max()
        while not self.fits(config):
            steps = self.descent_steps(config, hparams)
            scored = self.sensitivity_map.is_scored
            self.prefetch([self.probe_config(n, c) for n, c, _ in steps if not scored(n, c)])
            best_key: float | None = None
            best_step: tuple[str, int] | None = None
            for name, below, saved in steps:
                self.probe(name, below)
                key = (self.drop(name, below) - self.drop(name, config[name])) / saved
                if best_key is None or key < best_key:  # ties: the first hparam
                    best_key, best_step = key, (name, below)
            if best_step is None:  # pragma: no cover - sanitize checked that the smallest subnet fits
                return {n: hp.choices[0] for n, hp in hparams.items()}
            config[best_step[0]] = best_step[1]
        return config

    def descent_steps(self, config: Mapping[str, int], hparams: Mapping[str, Any]) -> list[tuple[str, int, float]]:
        """(hparam, its next narrower choice, the largest share of an exceeded budget that step saves) for every
        hparam whose step saves something."""
        current = self.cost(config)
        steps = []
        for name, hp in hparams.items():
            idx = hp.choices.index(config[name])
            if idx == 0:
                continue
            below = hp.choices[idx - 1]
            after = self.cost({**config, name: below})
            saved = max(
                (current.get(k) - after.get(k)) / bound for k, bound in self.bounds.items() if current.get(k) > bound
            )
            if saved > 0:
                steps.append((name, below, saved))
        return steps

    # ---- greedy fill -------------------------------------------------------------------------------------
    def estimated_score(self, name: str, choice: int) -> float:
        """Sensitivity-map score of one hparam at one choice (the original score at its maximum)."""
        return self.state["original_score"] - self.drop(name, choice)

    def _budget_used(self, before: Any, after: Any) -> float:
        """Largest share of any budget that a step uses."""
        return max((after.get(k) - before.get(k)) / bound for k, bound in self.bounds.items())

    def fill(self, config: Mapping[str, int], hparams: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Grow hparams one choice at a time (best estimated gain per budget used) while the subnet fits."""
        config = dict(config)
        hparams = self.hparams if hparams is None else hparams
        names = sorted(hparams)
        while True:
            current = self.cost(config)
            best_key: tuple[float, float] | None = None
            best_step: tuple[str, int] | None = None
            for name in names:
                choices = hparams[name].choices
                idx = choices.index(config[name])
                if idx == len(choices) - 1:
                    continue
                step = {**config, name: choices[idx + 1]}
                after = self.cost(step)
                if not all(after.get(k) <= bound for k, bound in self.bounds.items()):
                    continue
                used = self._budget_used(current, after)
                gain = self.estimated_score(name, choices[idx + 1]) - self.estimated_score(name, choices[idx])
                # free steps first, then the best gain per budget used; ties: the first name in sorted order
                key = (1.0, gain) if used <= 0 else (0.0, gain / used)
                if best_key is None or key > best_key:
                    best_key, best_step = key, (name, choices[idx + 1])
            if best_step is None:
                return config
            config[best_step[0]] = best_step[1]
