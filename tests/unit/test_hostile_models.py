"""Hostile models and user code (issue 16): bad data, exiting user functions, data-dependent control flow, shared
parameters and non-tensor outputs. The tracer freezes what it cannot prove safe; the search stops with a named
error instead of writing a wrong model."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nasprune_cli import search
from nasprune_cli.cli.app import app
from nasprune_cli.errors import SearchError
from nasprune_cli.metrics.score import Evaluator, load_batches
from tests.toys import Chain

SHAPE = (2, 3, 16, 16)


@pytest.fixture(autouse=True)
def _threads(one_thread: None) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no --data: the random-batches warning
        yield


def good_batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 16, 16, generator=gen), torch.zeros(4)) for _ in range(n)]


def small_search(data: object = None, **config: object) -> object:
    torch.manual_seed(0)
    settings = {"searcher": "random", "iterations": 2, "reconstruct": False, **config}
    if data is not None:
        settings["data"] = data
    return search(Chain(), {"flops": "80%"}, torch.randn(*SHAPE), settings)


# ---- case 3: non-finite data, outputs and scores ----------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_batch_names_the_data_and_the_batch(value: float) -> None:
    batches = good_batches(3)
    batches[1][0][0, 0, 0, 0] = value
    kind = "nan" if value != value else "inf"
    with pytest.raises(SearchError, match=rf"data 'pkg:data': batch 1 holds 1 non-finite value\(s\) \({kind}\)"):
        load_batches(lambda: iter(batches), 8, "pkg:data")


def test_a_search_on_nan_data_stops_instead_of_writing_nan_statistics() -> None:
    batches = good_batches(2)
    batches[1][0][0, 0, 0, 0] = float("nan")
    with pytest.raises(SearchError, match=r"data 'list': batch 1 holds .*\(nan\)"):
        small_search(batches)


class NanAfterBN(nn.Module):
    """Finite data, non-finite outputs: log of a negative number."""

    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.bn(self.conv(x)) - 1e6)


def test_non_finite_outputs_stop_recalibration_and_the_default_score() -> None:
    with pytest.raises(SearchError, match=r"BatchNorm recalibration: the model's output on data batch 0 holds"):
        Evaluator(NanAfterBN(bn=True), good_batches()).prepare()
    with pytest.raises(SearchError, match=r"default score: the original model's output on data batch 0 holds"):
        Evaluator(NanAfterBN(bn=False), good_batches()).prepare()


def test_a_nan_score_stops_the_search() -> None:
    with pytest.raises(SearchError, match=r"score function '.*nan_score' returned nan"):
        small_search(good_batches(), score=nan_score)


def nan_score(model: nn.Module) -> float:
    return float("nan")


# ---- case 6: sys.exit() and Ctrl-C inside user code -------------------------------------------------------------
def exit_score(model: nn.Module) -> float:
    sys.exit(3)


def exit_collect(batch: object) -> torch.Tensor:
    sys.exit(0)


def exit_data() -> list:
    sys.exit()


def exit_while_iterating() -> Iterator[torch.Tensor]:
    yield torch.randn(4, 3, 16, 16)
    sys.exit("no more data")


def interrupted_score(model: nn.Module) -> float:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"score": exit_score}, r"score function '.*exit_score' called sys.exit\(3\)"),
        ({"collect": exit_collect}, r"collect function '.*exit_collect' called sys.exit\(0\)"),
        ({"data": exit_data}, r"data function '.*exit_data' called sys.exit\(\)"),
        ({"data": exit_while_iterating}, r"data '.*exit_while_iterating' \(iterating its batches\) called sys.exit"),
    ],
)
def test_sys_exit_in_user_code_is_a_search_error_naming_the_function(config: dict, message: str) -> None:
    config = {"data": good_batches(), **config}
    with pytest.raises(SearchError, match=message):
        small_search(**config)


def test_ctrl_c_in_user_code_still_stops_the_search() -> None:
    with pytest.raises(KeyboardInterrupt):
        small_search(good_batches(), score=interrupted_score)

    def interrupted_collect(batch: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Evaluator(Chain(), good_batches(), collect=interrupted_collect).prepare()


def test_cli_reports_a_user_sys_exit_as_one_error_line() -> None:
    args = ["search", "--model", "tests.toys:Chain", "--input-shape", "2,3,16,16", "--flops", "80%"]
    args += ["--score", "tests.unit.test_hostile_models:exit_score", "--searcher", "random", "--iterations", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Error: score function 'tests.unit.test_hostile_models:exit_score' called sys.exit(3)" in result.output


# ---- case 9: outputs that are not tensors -----------------------------------------------------------------------
class Returns(nn.Module):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> object:
        y = self.fc(self.conv(x).mean((2, 3)))
        return {
            "string": "done",
            "tuple_with_string": (y, "label"),
            "dict_with_int": {"logits": y, "count": 3},
            "none": None,
            "tuple_with_none": (y, None),  # allowed: an absent auxiliary output
        }[self.what]


@pytest.mark.parametrize(
    ("what", "found"),
    [
        ("string", "output str 'done'"),
        ("tuple_with_string", r"output\[1\] str 'label'"),
        ("dict_with_int", r"output\['count'\] int '3'"),
        ("none", "output None"),
    ],
)
def test_a_model_returning_a_non_tensor_is_a_trace_error(what: str, found: str) -> None:
    from nasprune_cli import convert, profile
    from nasprune_cli.errors import TraceError
    from nasprune_cli.recipe.load import recipe_from_dict

    with pytest.raises(TraceError, match=rf"model Returns returned {found}; nasprune needs its outputs as tensors"):
        convert(Returns(what), None, torch.randn(*SHAPE))
    with pytest.raises(TraceError, match="model Returns returned"):
        profile(Returns(what), recipe_from_dict({}), torch.randn(*SHAPE))
    with pytest.raises(TraceError, match=rf"model Returns returned {found}"):  # the plain model, without a recipe
        profile(Returns(what), None, torch.randn(*SHAPE))


def test_a_tuple_output_with_none_items_is_accepted() -> None:
    from nasprune_cli import convert

    space = convert(Returns("tuple_with_none"), None, torch.randn(*SHAPE))
    assert "conv.out_channels" in space.hparams


# ---- case 8: parameters shared between layers -------------------------------------------------------------------
def test_layers_sharing_a_weight_are_frozen_and_stay_tied_in_the_export() -> None:
    import random

    from nasprune_cli import convert
    from tests.toys import TiedConvs

    torch.manual_seed(0)
    model = TiedConvs().eval()
    x = torch.randn(*SHAPE)
    space = convert(model, None, x)
    frozen = {f.name: f.reason for f in space.frozen}
    assert "a" in frozen and "b" in frozen, frozen
    assert "shares its weight with" in frozen["a"] and "shares its weight with" in frozen["b"]
    assert "mid.0.out_channels" in space.hparams  # the rest of the model is still searched
    rng = random.Random(0)
    for config in (space.min(), space.max(), *(space.sample(rng) for _ in range(3))):
        space.select(config)
        exported = space.export().eval()
        with torch.no_grad():
            assert torch.allclose(exported(x), model(x), atol=1e-5)
        assert exported.a.weight is exported.b.weight  # one tensor, as in the original model
        assert exported.a.weight.shape == model.a.weight.shape


# ---- case 4: data-dependent control flow ------------------------------------------------------------------------
@pytest.mark.parametrize(("read", "op"), [("bool", "__bool__"), ("item", "item")])
def test_a_branch_on_input_values_freezes_the_module_that_reads_them(read: str, op: str) -> None:
    import random

    from nasprune_cli import convert
    from tests.toys import DataDependent

    torch.manual_seed(0)
    model = DataDependent(read).eval()
    x = torch.rand(*SHAPE) + 0.1  # the dummy input takes branch `a`
    other = -x  # ... and this one branch `b`, which the trace never ran
    space = convert(model, None, x)
    frozen = {f.name: f.reason for f in space.frozen}
    assert "gate.a.0" in frozen, frozen
    reason = frozen["gate.a.0"]
    assert "data-dependent control flow: module 'gate' (Gate)" in reason and f"'{op}'" in reason
    assert not any(name.startswith("gate.") for name in space.hparams)
    assert "mid.0.out_channels" in space.hparams  # the layers after the gate are still searched
    rng = random.Random(0)
    for config in (space.min(), space.sample(rng), space.sample(rng)):
        space.select(config)
        exported = space.export().eval()
        with torch.no_grad():
            for inputs in (x, other):
                torch.testing.assert_close(exported(inputs), space.model(inputs), rtol=1e-4, atol=1e-5)


class NormalizesItsInput(nn.Module):
    """Reads the input's maximum into Python in a module without channels: nothing to freeze, a warning."""

    def __init__(self) -> None:
        super().__init__()
        from tests.toys import Chain

        self.norm = Scale()
        self.net = Chain()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x.abs().max().item()
        return x / top if top > 1 else x


def test_a_value_read_without_prunable_channels_warns() -> None:
    from nasprune_cli import convert

    with pytest.warns(UserWarning, match=r"module 'norm' \(Scale\) turns a tensor computed from the input .*'item'"):
        space = convert(NormalizesItsInput(), None, torch.randn(*SHAPE))
    assert "net.body.0.0.out_channels" in space.hparams


def test_values_read_from_parameters_buffers_and_shapes_are_not_control_flow() -> None:
    from nasprune_cli import convert
    from tests.toys import ValueReadsWithoutInput

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = convert(ValueReadsWithoutInput(), None, torch.randn(*SHAPE))
    assert [f.name for f in space.frozen] == ["fc"]
    assert {"body.0.0.out_channels", "body.1.0.out_channels"} <= set(space.hparams)


class BranchOnValues(nn.Module):
    """Branches on the mean of the model input (`of="input"`) or of the stem's output (`of="features"`); every
    layer runs in both branches."""

    def __init__(self, of: str) -> None:
        super().__init__()
        from tests.toys import cbr

        self.of = of
        self.stem = cbr(3, 64)
        self.head = cbr(64, 96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        if (x if self.of == "input" else y).mean() > 0:
            y = y * 2
        return self.fc(self.head(y).mean((2, 3)))


def test_a_branch_on_values_of_prunable_channels_still_freezes() -> None:
    from nasprune_cli import convert

    space = convert(BranchOnValues("features"), None, torch.rand(*SHAPE))
    assert not space.hparams
    reasons = {f.name: f.reason for f in space.frozen}
    assert "data-dependent control flow: the model's forward() (BranchOnValues)" in reasons["stem.0"]


def test_a_branch_on_input_values_no_channel_reaches_keeps_the_layers_prunable() -> None:
    import random

    from nasprune_cli import convert

    x = torch.rand(*SHAPE)
    with pytest.warns(UserWarning, match=r"\('__bool__' at test_hostile_models.py:\d+ \(forward\)\), but no prunable"):
        space = convert(BranchOnValues("input"), None, x)
    assert {"stem.0.out_channels", "head.0.out_channels"} <= set(space.hparams)
    space.sample(random.Random(0))
    with torch.no_grad():  # both branches run the same layers
        for inputs in (x, -x):
            torch.testing.assert_close(space.export()(inputs), space.model(inputs), rtol=1e-4, atol=1e-5)
