"""How many score evaluations the budget sensitivity map cuts, and whether the searched subnet stays the same.

FastNAS's default map (`sensitivity: budget`) scores, per hparam, only the width choices the budget can reach and
stops once the threshold search is decided; the complete map scores every choice of every hparam (the same monotone
drops, no stopping rule). Both run the same searcher on resnet18 (random init, seeded) at 112x112 with 4 data
batches of 8 random images, FLOPs 50%, the weight refit off (it runs after the subnet is chosen), one thread, for
several channel divisors (a finer divisor: more choices per hparam). Recorded: hparams, choices, evaluations, seconds,
and whether the chosen subnet is the same.

Run: python bench/map_cut.py [--divisors 64 32 16]    (about 10 minutes on one core)
Writes bench/results/map_cut.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import log, machine_info, write_result  # noqa: E402


def complete_next_probe(self: Any, fits: Any) -> tuple[str, int] | None:
    """The next unscored choice of any hparam, widest first: the map ends only when every choice is scored."""
    for name, hp in self.hparams.items():
        narrowest = self.narrowest(name)
        if narrowest != hp.choices[0]:
            return name, hp.choices[hp.choices.index(narrowest) - 1]
    return None


def run(divisor: int, complete: bool) -> dict[str, Any]:
    """One search; its subnet, evaluations and time."""
    import torchvision

    from nasprune_cli.recipe.load import load_recipe
    from nasprune_cli.searching import search
    from nasprune_cli.searching.sensitivity import SensitivityMap

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 112, 112, generator=gen),) for _ in range(4)]
    recipe = load_recipe("fastnas", None, "bench/map_cut.py", sets=[f"defaults.divisor={divisor}"])
    config = {"recipe": recipe, "device": "cpu", "data": data, "max_batches": 4, "seed": 0, "reconstruct": False}
    budget_next = SensitivityMap.next_probe
    if complete:
        SensitivityMap.next_probe = complete_next_probe  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = search(model, {"flops": "50%"}, torch.randn(1, 3, 112, 112), config)
    finally:
        SensitivityMap.next_probe = budget_next  # type: ignore[method-assign]
    seconds = time.perf_counter() - start
    scored = sum(len(v) for v in result.state["sensitivity_map"].values())
    return {
        "divisor": divisor,
        "map": "complete" if complete else "budget",
        "hparams": len(result.config),
        "choices_scored": scored,
        "evaluations": result.evaluations,
        "seconds": round(seconds, 1),
        "config": result.config,
        "score": result.pruned.score,
        "flops_ratio": result.pruned.flops / result.original.flops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--divisors", type=int, nargs="+", default=[64, 32, 16])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for divisor in args.divisors:
        budget, complete = run(divisor, False), run(divisor, True)
        budget["same_subnet_as_complete"] = budget["config"] == complete["config"]
        budget["evaluations_cut"] = complete["evaluations"] - budget["evaluations"]
        rows += [budget, complete]
        log(
            f"divisor {divisor}: budget map {budget['evaluations']} evaluations ({budget['seconds']} s), complete "
            f"{complete['evaluations']} ({complete['seconds']} s); same subnet: {budget['same_subnet_as_complete']}"
        )
    write_result("map_cut", {"machine": machine_info(), "runs": rows})


if __name__ == "__main__":
    main()
