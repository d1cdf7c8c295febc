"""Score evaluations shared out among the ranks of a World: each rank scores every size-th config of a list, the
scores are gathered, and every rank ends up with all of them. The configs left over when the list does not divide
into whole rounds (3 candidates on 2 ranks) are scored by all ranks together, each on its share of the batches, when
the evaluator can do that with the bits of one process (the default score); else round-robin as the rest.

The searchers ask for the evaluations they are sure to need (or likely to: the next sensitivity probes) ahead of
time; their state and decisions are those of one process, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nasprune_cli.distributed import World


@dataclass
class ShareStats:
    """What the shared evaluations cost: rounds, scores computed, used and computed together, and seconds evaluating /
    waiting."""

    rounds: int = 0
    evaluated: int = 0  # scores computed by all ranks together
    used: int = 0  # of them, scores a searcher used (the rest were guesses the search did not need)
    together: int = 0  # of them, scores all ranks computed together (each on a share of the batches)
    evaluating_s: float = 0.0  # this rank's time evaluating its share
    waiting_s: float = 0.0  # this rank's time in the gather: waiting for the slowest rank, and the transfer

    def to_dict(self) -> dict[str, float]:
        """Plain values (for a benchmark's JSON)."""
        return {
            "rounds": self.rounds,
            "evaluated": self.evaluated,
            "used": self.used,
            "together": self.together,
            "evaluating_s": round(self.evaluating_s, 4),
            "waiting_s": round(self.waiting_s, 4),
        }


def evaluate_shared(
    world: World,
    configs: Sequence[Mapping[str, int]],
    score: Callable[[Mapping[str, int]], float],
    stats: ShareStats,
    score_together: Callable[[Mapping[str, int]], float] | None = None,
) -> list[float]:
    """The score of every config, rank r scoring configs r, r + size, ... of the whole rounds, and every rank the
    leftover configs together with `score_together` (when given); a failing rank stops every rank with an error that
    names it."""
    start = time.perf_counter()
    split = len(configs) if score_together is None else len(configs) - len(configs) % world.size
    mine: list[tuple[int, float]] = []
    error: BaseException | None = None
    for index in range(world.rank, split, world.size):
        try:
            mine.append((index, float(score(configs[index]))))
        except Exception as exc:  # noqa: BLE001 - reported to every rank by `agree` below
            error = exc
            break
    evaluated = time.perf_counter()
    world.agree(error, "scoring a subnet")
    gathered = world.gather(mine)
    stats.rounds += 1
    stats.evaluated += len(configs)
    stats.evaluating_s += evaluated - start
    stats.waiting_s += time.perf_counter() - evaluated
    scores: dict[int, float] = {}
    for share in gathered:
        scores.update(share)
    if split < len(configs):
        assert score_together is not None
        together = time.perf_counter()
        for index in range(split, len(configs)):  # every rank, the same config: its errors reach every rank
            scores[index] = float(score_together(configs[index]))
        stats.together += len(configs) - split
        stats.evaluating_s += time.perf_counter() - together
    return [scores[i] for i in range(len(configs))]
