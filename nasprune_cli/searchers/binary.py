"""FastNAS: a sensitivity map per hparam choice, a binary search on the tolerated score drop, then a greedy fill.

1. Sensitivity map: for every hparam and every choice below its maximum, the score of the model with only that
   hparam reduced (all others at their maximum), BN recalibrated. drop(h, c) = original score - that score.
2. Threshold: at threshold t every hparam takes its smallest choice whose drop is <= t (its maximum always
   qualifies). Cost falls as t grows, so a binary search over the distinct drops finds the smallest t whose
   subnet meets the budgets; this takes log2(#drops) cost-model look-ups and no score evaluation.
3. Fill (`fill=True`, the default): the threshold subnet can sit well below the budget, because every hparam
   jumps between the choices the threshold allows. Hparams are then grown one choice at a time, taking the
   step with the largest estimated score gain (from the sensitivity map) per unit of budget used, while the
   subnet still fits; this lands the result just under the budget. `fill=False` keeps the plain threshold
   subnet, as modelopt's BinarySearcher does.
4. The chosen subnet is scored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasprune_cli.searchers.base import Searcher


class BinarySearcher(Searcher):
    """FastNAS binary search over a score-degradation threshold."""

    name = "binary"

    def default_state(self) -> dict[str, Any]:
        """Adds the sensitivity map and the binary-search interval."""
        state = super().default_state()
        state.update(
            {
                "sensitivity_map": {},  # hparam -> {choice: score}
                "thresholds": None,  # sorted distinct score drops
                "lo": None,  # index of a threshold known not to fit (None: none tested)
                "hi": None,  # index of the smallest threshold known to fit
                "threshold": None,
                "threshold_config": None,
            }
        )
        return state

    # ---- sensitivity map ---------------------------------------------------------------------------------
    def before_search(self) -> None:
        """Original score, then the sensitivity map (checkpointed after every evaluation)."""
        super().before_search()
        smap: dict[str, dict[int, float]] = self.state["sensitivity_map"]
        full = self.space.max()
        todo = [(name, c) for name, hp in self.space.hparams.items() for c in hp.choices[:-1]]
        done = sum(1 for name, c in todo if c in smap.get(name, {}))
        self.progress("sensitivity", done, len(todo))
        for name, choice in todo:
            if choice in smap.get(name, {}):
                continue
            score = self.evaluate({**full, name: choice})
            smap.setdefault(name, {})[choice] = score
            done += 1
            self.save_checkpoint()
            self.progress("sensitivity", done, len(todo))

    def drop(self, name: str, choice: int) -> float:
        """Score drop of one hparam at one choice (0 at its maximum)."""
        if choice == self.space.hparams[name].choices[-1]:
            return 0.0
        return self.state["original_score"] - self.state["sensitivity_map"][name][choice]

    def config_at(self, threshold: float) -> dict[str, int]:
        """Every hparam at its smallest choice whose drop is <= threshold (the maximum always qualifies)."""
        config = {}
        for name, hp in self.space.hparams.items():
            allowed = [c for c in hp.choices if c == hp.choices[-1] or self.drop(name, c) <= threshold]
            config[name] = min(allowed)
        return config

    # ---- threshold search --------------------------------------------------------------------------------
    def run_search(self) -> None:
        """Binary search on the distinct drops for the smallest threshold that fits, then the fill."""
        st = self.state
        if st["done"]:
            return
        if st["thresholds"] is None:
            drops = {0.0} | {self.drop(n, c) for n, hp in self.space.hparams.items() for c in hp.choices[:-1]}
            st["thresholds"] = sorted(drops)
            st["hi"] = len(st["thresholds"]) - 1  # the largest drop allows every choice: the smallest subnet fits
            st["lo"] = -1
            self.save_checkpoint()
        thresholds = st["thresholds"]
        total = max(1, (len(thresholds)).bit_length())
        while st["hi"] - st["lo"] > 1:
            mid = (st["lo"] + st["hi"]) // 2
            if self.fits(self.config_at(thresholds[mid])):
                st["hi"] = mid
            else:
                st["lo"] = mid
            st["iteration"] += 1
            self.save_checkpoint()
            self.progress("search", min(st["iteration"], total), total)
        self.progress("search", total, total)
        if st["threshold_config"] is None:
            st["threshold"] = thresholds[st["hi"]]
            st["threshold_config"] = self.config_at(st["threshold"])
            config = self.fill(st["threshold_config"]) if self.settings.fill else dict(st["threshold_config"])
            cost = self.cost(config)
            st["best"] = {"config": config, "score": None, "flops": cost.flops, "params": cost.params}
            self.save_checkpoint()

    # ---- greedy fill -------------------------------------------------------------------------------------
    def estimated_score(self, name: str, choice: int) -> float:
        """Sensitivity-map score of one hparam at one choice (the original score at its maximum)."""
        return self.state["original_score"] - self.drop(name, choice)

    def _budget_used(self, before: Any, after: Any) -> float:
        """Largest share of any budget that a step uses."""
        return max((after.get(k) - before.get(k)) / bound for k, bound in self.bounds.items())

    def fill(self, config: Mapping[str, int]) -> dict[str, int]:
        """Grow hparams one choice at a time (best estimated gain per budget used) while the subnet fits."""
        config = dict(config)
        names = sorted(self.space.hparams)
        while True:
            current = self.cost(config)
            best_key: tuple[float, float] | None = None
            best_step: tuple[str, int] | None = None
            for name in names:
                choices = self.space.hparams[name].choices
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
