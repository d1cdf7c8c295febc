"""Scoring subnets: the label-free default score and the checked evaluator the searchers call.

Default score (no --score): *output agreement*, the coefficient of determination (R^2) of the subnet's outputs
against the original model's outputs on the same batches:

    score = 1 - sum((y - y0)^2) / sum((y0 - mean(y0))^2)

summed over every floating-point output tensor (each centred on its own mean), where y0 are the outputs of the
original model after the same BN recalibration (so the score isolates the effect of pruning; the original scores
exactly 1.0). 1.0 means identical outputs, 0.0 means no better than predicting the original's mean output, and it
is unbounded below. Why this measure:
it needs no labels and no knowledge of the task (logits, regression values and feature maps alike), it is
continuous (top-1 agreement is a step function: many subnets tie and the FastNAS sensitivity map loses its
ranking), and, unlike cosine similarity, it also penalises outputs whose scale drifts.

A score function may say what it measures (`score_info`): attributes `name` (e.g. "val accuracy"; default its
`__name__`), `higher_is_better` (default True; when False the searchers maximise the negative and every reported
value is as measured) and `percent` (True: the value is a fraction shown as a percent, 0.992 -> 99.20%).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune_cli.distributed import World, one_line, raise_first
from nasprune_cli.errors import SearchError
from nasprune_cli.inputs import call_model, eval_mode, move_to, tensors_in
from nasprune_cli.metrics.recalibrate import check_finite, default_collect, recalibrate_bn

Collect = Callable[[Any], Any]
ScoreFn = Callable[[nn.Module], float]

DEFAULT_SCORE_NAME = "output agreement (R^2 against the original model's outputs)"
DEFAULT_SCORE_LABEL = "output agreement (R^2)"


def format_score(value: float | None, percent: bool = False) -> str:
    """A score for people: '-' when unknown, '99.20%' for a percent score (a fraction), else 4 decimals."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if percent else f"{value:.4f}"


@dataclass(frozen=True)
class ScoreInfo:
    """What a score measures: its label, its direction and how to show it; `source` is the function's spec."""

    label: str  # e.g. "val accuracy"
    source: str  # "pkg.module:fn", a built-in name ("top1") or DEFAULT_SCORE_NAME
    higher_is_better: bool = True
    percent: bool = False  # the value is a fraction, shown as a percent

    @property
    def direction(self) -> str:
        """'higher is better' or 'lower is better'."""
        return "higher is better" if self.higher_is_better else "lower is better"

    def objective(self, value: float) -> float:
        """The value the searchers maximise: the measured value, negated when lower is better."""
        return value if self.higher_is_better else -value

    def measured(self, objective: float | None) -> float | None:
        """The measured value of an objective (the inverse of `objective`)."""
        return None if objective is None else self.objective(objective)

    def format(self, value: float | None) -> str:
        """A measured value for people (see format_score)."""
        return format_score(value, self.percent)


def score_info(fn: Any, source: str) -> ScoreInfo:
    """The ScoreInfo of a score function (None: the default score) from its attributes; a SearchError when one
    has the wrong type."""
    if fn is None:
        return ScoreInfo(DEFAULT_SCORE_LABEL, DEFAULT_SCORE_NAME)
    label = getattr(fn, "name", None)
    if label is None:
        label = getattr(fn, "__name__", None)
        label = source if label in (None, "<lambda>") else label
    expected = {"name": (label, str), "higher_is_better": (getattr(fn, "higher_is_better", True), bool)}
    expected["percent"] = (getattr(fn, "percent", False), bool)
    for attr, (value, kind) in expected.items():
        if not isinstance(value, kind) or (kind is str and not value.strip()):
            wanted = "a non-empty string" if kind is str else "a bool"
            raise SearchError(
                f"score function '{source}': attribute '{attr}' must be {wanted} "
                f"(got {type(value).__name__} {str(value)[:40]!r}); see the named-score protocol in the README"
            )
    return ScoreInfo(
        label=str(label).strip(),
        source=source,
        higher_is_better=expected["higher_is_better"][0],
        percent=expected["percent"][0],
    )


def _exit_error(what: str, exc: SystemExit) -> SearchError:
    """The error a user function's sys.exit() becomes: a search never ends because user code asked to exit."""
    code = "" if exc.code is None else repr(exc.code)
    return SearchError(f"{what} called sys.exit({code}); it must return a value or raise an exception instead")


def _float_tensors(obj: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in a (nested) model output, in a fixed order (dict keys sorted), as float64."""
    return [t.detach().double() for t in tensors_in(obj, sort_keys=True) if t.is_floating_point()]


def output_agreement(outputs: Sequence[Any], reference: Sequence[Any]) -> float:
    """R^2 of outputs against reference outputs (1.0 = identical); see the module docstring."""
    err = 0.0
    spread = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        outs, refs = _float_tensors(out), _float_tensors(ref)
        if len(outs) != len(refs) or any(a.shape != b.shape for a, b in zip(outs, refs, strict=True)):
            raise SearchError(
                "default score: the subnet's outputs do not have the shapes of the original model's outputs; "
                "pass --score with a task metric"
            )
        for a, b in zip(outs, refs, strict=True):
            err += float(((a - b) ** 2).sum())
            spread += float(((b - b.mean()) ** 2).sum())
    if spread == 0.0:
        return 1.0 if err == 0.0 else -err
    return 1.0 - err / spread


def callable_name(fn: Any) -> str:
    """'module:qualname' of a callable, for messages and fingerprints."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}"


def load_batches(data: Any, max_batches: int, name: str) -> list[Any]:
    """The first `max_batches` batches of `data` (an iterable, or a function returning one), kept in a list."""
    source = data
    if callable(data) and not isinstance(data, Iterable):
        try:
            source = data()
        except SystemExit as exc:
            raise _exit_error(f"data function '{name}'", exc) from exc
        except Exception as exc:  # noqa: BLE001 - the user's function can fail in any way
            raise SearchError(f"data function '{name}' raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(source, Iterable) or isinstance(source, (str, bytes, torch.Tensor)):
        raise SearchError(
            f"data '{name}' returned {type(source).__name__}, expected an iterable of batches (a list or a DataLoader)"
        )
    batches = []
    try:
        for batch in source:
            check_finite(batch, f"data '{name}': batch {len(batches)}")
            batches.append(batch)
            if len(batches) >= max_batches:
                break
    except SearchError:
        raise
    except SystemExit as exc:
        raise _exit_error(f"data '{name}' (iterating its batches)", exc) from exc
    except Exception as exc:  # noqa: BLE001
        raise SearchError(f"data '{name}': iterating the batches raised {type(exc).__name__}: {exc}") from exc
    if not batches:
        raise SearchError(f"data '{name}' yielded no batches (expected at least one)")
    return batches


class Evaluator:
    """Scores the active subnet of a model: BN recalibration on fixed batches, then the score function.

    With `score_fn` None the default label-free score is used; `prepare()` must then run first, on the
    original (largest) model, to record the reference outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Any],
        collect: Collect | None = None,
        score_fn: ScoreFn | None = None,
        score_name: str | None = None,
        collect_name: str | None = None,
        on_score: Callable[[float], None] | None = None,
    ) -> None:
        self.model = model
        self.batches = list(batches)
        self.collect = collect or default_collect
        self.collect_name = collect_name or ("default (first element of a tuple batch)" if collect is None else "?")
        self.on_score = on_score  # gets every measured score (a progress display)
        self.reference: list[Any] | None = None
        self._given_name = score_name
        self.set_score(score_fn)

    def set_score(self, score_fn: ScoreFn | None) -> None:
        """Score with `score_fn` (None: the default score); its name and ScoreInfo follow."""
        self.score_fn = score_fn
        self.score_name = self._given_name or (DEFAULT_SCORE_NAME if score_fn is None else callable_name(score_fn))
        self.info = score_info(score_fn, self.score_name)

    def inputs(self, batch: Any) -> Any:
        """The model inputs of a batch (the collect function, its errors named)."""
        try:
            return self.collect(batch)
        except SystemExit as exc:
            raise _exit_error(f"collect function '{self.collect_name}'", exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise SearchError(f"collect function '{self.collect_name}' raised {type(exc).__name__}: {exc}") from exc

    def _outputs(self, whose: str, world: World | None = None) -> list[Any]:
        """The model's outputs on every batch; the ranks of `world` (all on the same subnet) share the batches out
        and gather the outputs, which are the same bits as one process's."""
        world = world if world is not None else World()
        mine: dict[int, Any] = {}
        error: str | None = None
        with eval_mode(self.model), torch.no_grad():
            for i in range(world.rank, len(self.batches), world.size):
                try:
                    mine[i] = self._run(self.inputs(self.batches[i]))
                    check_finite(mine[i], f"default score: {whose} output on data batch {i}")
                except Exception as exc:  # noqa: BLE001 - every rank hears of it in the gather
                    if world.size == 1:
                        raise
                    error = one_line(exc)
                    break
        if world.size == 1:
            return [mine[i] for i in range(len(self.batches))]
        gathered = world.gather((error, {i: move_to(out, "cpu") for i, out in mine.items()}))
        raise_first(world, [text for text, _ in gathered], f"computing {whose} outputs")
        device = _device(self.model)
        outputs = {i: out for _, theirs in gathered for i, out in theirs.items()}
        return [move_to(outputs[i], device) for i in range(len(self.batches))]

    def _run(self, inputs: Any) -> Any:
        try:
            return call_model(self.model, inputs)
        except Exception as exc:  # noqa: BLE001
            raise SearchError(
                f"running the model on a data batch failed ({type(exc).__name__}: {exc}); check that --collect "
                "turns a batch into the model's inputs"
            ) from exc

    def prepare(self, world: World | None = None) -> None:
        """Record the original model's outputs (default score); call on the largest subnet. Under torchrun every
        rank calls it with the World, and the ranks share the batches out.

        BN is recalibrated first, so the reference and every subnet share the calibration data and the score
        measures the effect of pruning alone (the original model scores exactly 1.0).
        """
        if self.score_fn is None and self.reference is None:
            self.recalibrate(world)
            self.reference = self._outputs("the original model's", world)
            if self.on_score is not None:
                self.on_score(1.0)

    def shares_batches(self) -> bool:
        """Whether the ranks of a World can score one subnet together, each on a share of the batches, with the bits
        of one process: the default score (a score function sees the whole model and runs on every rank)."""
        return self.score_fn is None

    def original_score(self) -> float | None:
        """The original model's score when it is known without a run: 1.0 for the default score after prepare()."""
        return 1.0 if self.score_fn is None and self.reference is not None else None

    def recalibrate(self, world: World | None = None) -> None:
        """Recalibrate BatchNorm statistics of the active subnet on the batches (shared out among the ranks of
        `world`, all on the same subnet)."""
        try:
            recalibrate_bn(self.model, self.batches, self.inputs, world)
        except SearchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SearchError(
                f"BatchNorm recalibration failed on a data batch ({type(exc).__name__}: {exc}); check --data and "
                "--collect"
            ) from exc

    def __call__(self, recalibrate: bool = True, world: World | None = None) -> float:
        """Recalibrate BN, then score the active subnet: a finite float the searchers maximise (the measured value,
        negated when the score's lower is better; `info.measured` turns it back). `recalibrate` False: the
        statistics are already right for these weights; `world`: every rank scores this same subnet together."""
        value = self.measure(recalibrate, world)
        if self.on_score is not None:
            self.on_score(value)
        return self.info.objective(value)

    def measure(self, recalibrate: bool = True, world: World | None = None) -> float:
        """Recalibrate BN (unless told not to), then the score of the active subnet as the score function
        measures it (the default score's batches shared out among the ranks of `world`)."""
        if recalibrate:
            self.recalibrate(world)
        if self.score_fn is None:
            if self.reference is None:
                raise SearchError("default score: Evaluator.prepare() must run on the original model first")
            return output_agreement(self._outputs("the subnet's", world), self.reference)
        try:
            with eval_mode(self.model), torch.no_grad():
                value = self.score_fn(self.model)
        except SearchError:
            raise
        except SystemExit as exc:
            raise _exit_error(f"score function '{self.score_name}'", exc) from exc
        except Exception as exc:  # noqa: BLE001 - the user's score function can fail in any way
            raise SearchError(f"score function '{self.score_name}' raised {type(exc).__name__}: {exc}") from exc
        return check_score(value, self.score_name, self.info.direction)


def _device(model: nn.Module) -> torch.device:
    """Where the model's tensors are (the CPU for a model without any)."""
    return next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))


def check_score(value: Any, name: str, direction: str = "higher is better") -> float:
    """A score as a finite float, or a SearchError naming the function."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SearchError(
            f"score function '{name}' returned {type(value).__name__} {str(value)[:40]!r}, expected a float "
            f"({direction})"
        )
    value = float(value)
    if not math.isfinite(value):
        raise SearchError(f"score function '{name}' returned {value}, expected a finite float ({direction})")
    return value
