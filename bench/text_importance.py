"""Channel order alone on the text task: the same uniform subnets kept by each importance, no search, no refit.

Per baseline seed (trained as in bench/text.py), every hparam (heads, MLP width) keeps the largest choice at most
RATIO of its width, with the channels ordered by `magnitude`, `consumer` or `activation` (measured on the 8 batches
bench/text.py gives the search); test accuracy of that subnet, before any fine-tune. Writes
bench/results/text_importance.json (quoted in bench/notes.md, not a BENCHMARKS.md table).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import text  # noqa: E402
import text_task as task  # noqa: E402
from common import log, quiet, set_threads, write_result  # noqa: E402

IMPORTANCES = ("magnitude", "consumer", "activation")
RATIOS = (0.75, 0.5, 0.25)


def uniform(space: Any, ratio: float) -> dict[str, int]:
    """Every hparam at its largest choice of at most `ratio` of its width (its narrowest when none is)."""
    config = {}
    for name, hp in space.hparams.items():
        fits = [c for c in hp.choices if c <= ratio * hp.original]
        config[name] = fits[-1] if fits else hp.choices[0]
    return config


def run_seed(seed: int, args: argparse.Namespace, splits: dict[str, task.Split]) -> list[dict[str, Any]]:
    """Accuracy of the uniform subnets under every importance, for one baseline."""
    from nasprune_cli import convert

    baseline = task.train(task.build_model(seed), splits["train"], args.train_steps, args.lr, seed)
    calib = [ids for ids, _ in splits["train"].batches(args.batch_size, args.calib_batches)]
    with quiet("text_importance"):
        space = convert(task.clone(baseline), text.nasprune_recipe(), calib[0][:1])
    rows = []
    for importance in IMPORTANCES:
        space.sort_parameters(importance, calib)
        for ratio in RATIOS:
            space.select(uniform(space, ratio))
            rows.append(
                {
                    "seed": seed,
                    "importance": importance,
                    "ratio": ratio,
                    "params_ratio": space.cost().params / space.original_cost.params,
                    "test": task.accuracy(space.model, splits["test"]),
                }
            )
            log(f"seed {seed} {importance} {ratio}: {100 * rows[-1]['test']:.1f}%")
        space.select(space.max())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--name", default="text_importance", help="writes bench/results/<name>.json")
    args = parser.parse_args(argv)
    set_threads(1)
    splits = {"train": task.make_split(20000, 100), "test": task.make_split(2000, 102)}
    rows = [row for seed in args.seeds for row in run_seed(seed, args, splits)]
    log(f"wrote {write_result(args.name, {'args': vars(args), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
