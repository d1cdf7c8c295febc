"""Entry points "pkg.module:attr": one clear LoadError line per failure; kwargs parsing."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from torch import nn

from nasprune_cli.errors import LoadError
from nasprune_cli.loading import build_model, load_entry_point, parse_kwargs

MODELS = """
import torch.nn as nn

NOT_CALLABLE = 3
INSTANCE = nn.Linear(2, 2)


def build(width: int = 8, bias: bool = True) -> nn.Module:
    return nn.Linear(width, 2, bias=bias)


def returns_int() -> int:
    return 3


def broken() -> nn.Module:
    raise ValueError("bad thing")


class Factory:
    @staticmethod
    def make() -> nn.Module:
        return nn.Conv2d(3, 4, 1)
"""


@pytest.fixture()
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "np_test_models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "np_imports_missing.py").write_text("import np_no_such_dependency\n")
    (tmp_path / "np_raises.py").write_text("raise RuntimeError('kaboom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_load_entry_point_dotted_attr(models_dir: Path) -> None:
    make = load_entry_point("np_test_models:Factory.make")
    assert isinstance(make(), nn.Conv2d)


def test_build_model_with_kwargs(models_dir: Path) -> None:
    model = build_model("np_test_models:build", {"width": 5, "bias": False})
    assert isinstance(model, nn.Linear) and model.in_features == 5 and model.bias is None


def test_build_model_accepts_an_instance(models_dir: Path) -> None:
    assert isinstance(build_model("np_test_models:INSTANCE", {}), nn.Linear)


def test_torchvision_builder() -> None:
    model = build_model("torchvision.models:resnet18", {"num_classes": 7})
    assert model.fc.out_features == 7


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("np_test_models", {}, "model 'np_test_models': expected 'pkg.module:attr', e.g. torchvision.models:resnet18"),
        ("np_test_models:", {}, "expected 'pkg.module:attr'"),
        ("np.no_such_module:build", {}, "model 'np.no_such_module:build': module 'np.no_such_module' not found"),
        (
            "np_imports_missing:build",
            {},
            "model 'np_imports_missing:build': importing module 'np_imports_missing' failed: "
            "No module named 'np_no_such_dependency'",
        ),
        ("np_raises:build", {}, "importing module 'np_raises' failed: RuntimeError: kaboom"),
        (
            "np_test_models:buidl",
            {},
            "model 'np_test_models:buidl': module 'np_test_models' has no attribute 'buidl' (did you mean 'build'?)",
        ),
        ("np_test_models:Factory.mk", {}, "'np_test_models:Factory' has no attribute 'mk'"),
        ("np_test_models:NOT_CALLABLE", {}, "model 'np_test_models:NOT_CALLABLE' is not callable (got int 3)"),
        (
            "np_test_models:build",
            {"depth": 3},
            "model 'np_test_models:build' rejected the keyword arguments {'depth': 3}: ",
        ),
        (
            "np_test_models:returns_int",
            {},
            "model 'np_test_models:returns_int' returned int 3, expected a torch.nn.Module",
        ),
        (
            "np_test_models:broken",
            {},
            "model 'np_test_models:broken' failed while building the model: ValueError: bad thing",
        ),
        ("np_test_models:INSTANCE", {"a": 1}, "is an nn.Module instance, it takes no --model-kwargs"),
        (
            "torchvision.models:resnet18",
            {"foo": 1},
            "model 'torchvision.models:resnet18' rejected the keyword arguments {'foo': 1}",
        ),
    ],
)
def test_build_model_errors_are_one_line(models_dir: Path, spec: str, kwargs: dict, message: str) -> None:
    with pytest.raises(LoadError, match=re.escape(message)) as info:
        build_model(spec, kwargs)
    assert "\n" not in str(info.value)


def test_rejected_kwargs_list_the_accepted_ones(models_dir: Path) -> None:
    with pytest.raises(LoadError, match=r"\(accepted: width, bias\)"):
        build_model("np_test_models:build", {"depth": 3})


def test_entry_point_errors_name_what_is_loaded() -> None:
    with pytest.raises(LoadError, match=r"^score 'nasprune_cli:no_such_fn': module 'nasprune_cli' has no attribute"):
        load_entry_point("nasprune_cli:no_such_fn", "score")


def test_parse_kwargs_yaml_scalars() -> None:
    parsed = parse_kwargs(["a=1", "b=2.5", "c=true", "d=hello", "e=1e5", "f=", "g=null", "h=-3", "i=a=b"])
    assert parsed == {"a": 1, "b": 2.5, "c": True, "d": "hello", "e": 100000.0, "f": "", "g": None, "h": -3, "i": "a=b"}
    assert isinstance(parsed["a"], int) and isinstance(parsed["e"], float)
    assert parse_kwargs(None) == {}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("width", "--model-kwargs 'width': expected key=value"),
        ("=3", "'' is not a valid keyword argument name"),
        ("1a=2", "'1a' is not a valid keyword argument name"),
    ],
)
def test_parse_kwargs_errors(item: str, message: str) -> None:
    with pytest.raises(LoadError, match=re.escape(message)):
        parse_kwargs([item])
