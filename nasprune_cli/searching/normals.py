"""The normal equations of one layer's least-squares refit: accumulated per data batch, summed in one fixed tree
order (so the sums are the same bits whatever the number of ranks), and the held-out choice of the ridge, with the
batches and the ridge candidates shared out among the ranks of a World."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from nasprune_cli.distributed import World, one_line, raise_first

_CHUNK_ELEMENTS = 1 << 24  # unfolded conv inputs are multiplied at most this many elements at a time
Folds = tuple["Normal", "Normal"]


@dataclass
class Normal:
    """Accumulated X^T X, X^T Y and ||Y||^2 of one fold of the data rows."""

    xtx: torch.Tensor | None = None
    xty: torch.Tensor | None = None
    yty: float = 0.0
    rows: int = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Accumulate rows x (inputs) and y (targets)."""
        for xs, ys in _chunks(x, y):  # products in the data's precision, sums in float64
            xtx, xty = (xs.T @ xs).double(), (xs.T @ ys).double()
            self.xtx = xtx if self.xtx is None else self.xtx + xtx
            self.xty = xty if self.xty is None else self.xty + xty
            self.yty += float((ys.double() * ys.double()).sum())
        self.rows += x.shape[0]

    def absorb(self, other: Normal) -> None:
        """Add another batch's sums to these (nothing when it has no rows)."""
        if other.xtx is None or other.xty is None:
            return
        self.xtx = other.xtx if self.xtx is None else self.xtx + other.xtx
        self.xty = other.xty if self.xty is None else self.xty + other.xty
        self.yty += other.yty
        self.rows += other.rows

    def __add__(self, other: Normal) -> Normal:
        """Both folds' rows together."""
        assert self.xtx is not None and self.xty is not None and other.xtx is not None and other.xty is not None
        return Normal(self.xtx + other.xtx, self.xty + other.xty, self.yty + other.yty, self.rows + other.rows)

    def solve(self, kept: torch.Tensor, ridge: float) -> torch.Tensor:
        """The refitted rows: least squares pulled towards `kept` by ridge x the mean of diag(X^T X)."""
        assert self.xtx is not None and self.xty is not None
        reg = ridge * float(self.xtx.diagonal().mean()) + 1e-12
        eye = torch.eye(self.xtx.shape[0], dtype=self.xtx.dtype, device=self.xtx.device)
        system, rhs = self.xtx + reg * eye, self.xty + reg * kept.T
        factor, info = torch.linalg.cholesky_ex(system)  # positive definite: the ridge is added to X^T X
        if int(info) != 0:  # pragma: no cover - only when rounding breaks positive definiteness
            return torch.linalg.solve(system, rhs).T
        return torch.cholesky_solve(rhs, factor).T

    def error(self, w: torch.Tensor) -> float:
        """||X W^T - Y||^2 on these rows."""
        assert self.xtx is not None and self.xty is not None
        return max(float((w @ self.xtx * w).sum() - 2 * (w * self.xty.T).sum()) + self.yty, 0.0)


def summed_batches(world: World, count: int) -> range:
    """The batches whose sums this rank computes: those of its residue modulo the largest power of two that is at
    most the number of ranks (ranks beyond it compute none)."""
    ranks = _summing_ranks(world.size)
    return range(world.rank, count, ranks) if world.rank < ranks else range(0)


def summed_folds(
    world: World, count: int, batch_folds: Callable[[int], Folds], what: str, device: torch.device
) -> Folds:
    """Both folds summed over `count` batches in one fixed order whatever the number of ranks: a binary tree over
    the batch indices that adds the sums of the even and the odd indices, each split the same way in turn. With 2^k
    summing ranks, rank r computes the whole subtree of the indices r mod 2^k, so each rank sends one set of sums
    (one all_gather on `device`) and every rank adds the 2^k parts in the tree's top levels. A rank that fails
    stops every rank with a SearchError that names it."""
    ranks = _summing_ranks(world.size)
    mine: Folds | None = None
    error: str | None = None
    if world.rank < ranks:
        try:
            mine = _subtree(batch_folds, world.rank, ranks, count)
        except Exception as exc:  # noqa: BLE001 - every rank hears of it in the gather below
            if world.size == 1:
                raise
            error = one_line(exc)
    parts = _gathered(world, error, mine, what, device)
    total = _top(parts, 0, 1, ranks)
    return total if total is not None else (Normal(), Normal())


def _summing_ranks(size: int) -> int:
    return 1 << (max(size, 1).bit_length() - 1)


def _subtree(batch_folds: Callable[[int], Folds], first: int, step: int, count: int) -> Folds | None:
    """The sums of batches first, first + step, ... (< count), added as the tree prescribes."""
    if first >= count:
        return None
    if first + step >= count:
        return batch_folds(first)
    return _plus(_subtree(batch_folds, first, 2 * step, count), _subtree(batch_folds, first + step, 2 * step, count))


def _top(parts: list[Folds | None], first: int, step: int, ranks: int) -> Folds | None:
    """The tree's top levels over the ranks' subtrees (rank r holds the subtree of indices r mod `ranks`)."""
    if step == ranks:
        return parts[first]
    return _plus(_top(parts, first, 2 * step, ranks), _top(parts, first + step, 2 * step, ranks))


def _plus(a: Folds | None, b: Folds | None) -> Folds | None:
    if a is None or b is None:
        return a if b is None else b
    a[0].absorb(b[0])
    a[1].absorb(b[1])
    return a


def _gathered(
    world: World, error: str | None, mine: Folds | None, what: str, device: torch.device
) -> list[Folds | None]:
    """Every rank's sums, in rank order (one process: its own; None: a rank with no rows). The tensors travel as
    one flat float64 tensor per rank through an all_gather on `device` (zeros from a rank without sums), the rest as
    small objects."""
    if world.size == 1:
        return [mine]
    meta = None if mine is None else [(f.yty, f.rows, _shapes(f)) for f in mine]
    metas = world.gather((error, meta))
    raise_first(world, [e for e, _ in metas], what)
    shapes = next((s for _, m in metas if m is not None for _, _, s in m if s is not None), None)
    if shapes is None:
        return [None] * world.size
    sizes = [shapes[0].numel(), shapes[1].numel()] * 2
    flat = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    if mine is not None:
        parts = flat.split(sizes)
        for k, fold in enumerate(mine):
            if fold.xtx is not None and fold.xty is not None:
                parts[2 * k].copy_(fold.xtx.reshape(-1))
                parts[2 * k + 1].copy_(fold.xty.reshape(-1))
    out: list[Folds | None] = []
    for (_, theirs), tensor in zip(metas, world.gather_tensor(flat), strict=True):
        if theirs is None:
            out.append(None)
            continue
        parts = tensor.split(sizes)
        folds = [
            Normal(parts[2 * k].view(shapes[0]), parts[2 * k + 1].view(shapes[1]), yty, rows) if s else Normal()
            for k, (yty, rows, s) in enumerate(theirs)
        ]
        out.append((folds[0], folds[1]))
    return out


def _shapes(fold: Normal) -> tuple[torch.Size, torch.Size] | None:
    return None if fold.xtx is None or fold.xty is None else (fold.xtx.shape, fold.xty.shape)


def held_out_fit(
    folds: Folds, kept: torch.Tensor, ridges: Sequence[float], world: World | None = None
) -> tuple[torch.Tensor, float] | None:
    """(weights fitted on both folds, their ridge) with the ridge whose fit on one fold predicts the other best
    (both ways); None when no ridge predicts the held-out fold better than the kept weights do. The fits are shared
    out among the ranks; every rank gets rank 0's weights."""
    world = world if world is not None else World()
    whole = folds[0] + folds[1]
    tasks = [(r, k) for r in ridges for k in (0, 1)]  # fit on fold k, score on the other
    mine: dict[int, float] = {}
    error: str | None = None
    for t in range(world.rank, len(tasks), world.size):
        ridge, k = tasks[t]
        try:
            mine[t] = folds[1 - k].error(folds[k].solve(kept, ridge))
        except RuntimeError as exc:
            if world.size == 1:
                raise
            error = one_line(exc)
            break
    shared: dict[int, float] = {}
    gathered = world.gather((error, mine))
    if any(e is not None for e, _ in gathered):
        raise RuntimeError(next(e for e, _ in gathered if e is not None))
    for _, errors in gathered:
        shared.update(errors)
    held_out = {r: shared[2 * i] + shared[2 * i + 1] for i, r in enumerate(ridges)}
    best = min(held_out, key=lambda r: held_out[r])
    if held_out[best] >= whole.error(kept):
        return None
    if world.size == 1:
        return whole.solve(kept, best), best
    solved = whole.solve(kept, best) if world.is_main else torch.empty_like(kept)
    return world.broadcast_tensor(solved), best


def _chunks(x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[1], 1))
    for i in range(0, x.shape[0], step):
        yield x[i : i + step], y[i : i + step]
