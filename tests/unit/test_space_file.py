"""Search-space files (`nasprune convert --output`): what they store is enough to rebuild the converted model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nasprune_cli.conversion import convert
from nasprune_cli.errors import CheckpointError
from nasprune_cli.recipe.load import recipe_from_dict
from nasprune_cli.space_file import load_space, restore_space, save_space
from tests.toys import Residual

RECIPE = recipe_from_dict({"rules": {"nn.Conv2d": {"channel_divisor": 16}, "nn.BatchNorm2d": {}, "nn.Linear": {}}})
SHAPE = [2, 3, 16, 16]


def saved_space(tmp_path: Path) -> tuple[Path, dict[str, int], list[tuple[int, ...]]]:
    recipe = RECIPE.model_copy(update={"input": RECIPE.input.model_copy(update={"shape": SHAPE})})
    space = convert(Residual(), recipe, torch.randn(SHAPE))
    config = space.sample(random.Random(1))
    path = save_space(tmp_path / "space.pt", space, {"entry_point": "tests.toys:Residual", "kwargs": {}}, recipe)
    shapes = [tuple(p.shape) for p in space.export().parameters()]
    return path, config, shapes


def test_restore_space_rebuilds_the_converted_model_from_the_entry_point(tmp_path: Path) -> None:
    path, config, shapes = saved_space(tmp_path)
    assert load_space(path)["input"]["shape"] == SHAPE
    space = restore_space(path, trust_entry_point=True)  # the model comes from the stored entry point
    assert isinstance(space.model, Residual)
    assert space.config() == config
    assert {n: hp.choices for n, hp in space.hparams.items()} == {
        hp["name"]: tuple(hp["choices"]) for hp in load_space(path)["hparams"]
    }
    assert [tuple(p.shape) for p in space.export().parameters()] == shapes
    x = torch.randn(SHAPE)
    with torch.no_grad():  # the converted model runs the stored subnet
        torch.testing.assert_close(space.model.eval()(x), space.export().eval()(x))
    given = Residual()
    assert restore_space(path, given).model is given  # converted in place, like convert()


def test_restore_space_refuses_another_model(tmp_path: Path) -> None:
    path, _, _ = saved_space(tmp_path)
    other = Residual()
    other.b[0][0] = torch.nn.Conv2d(64, 48, 3, padding=1, bias=False)  # another width: other hparam choices
    other.b[0][1] = torch.nn.BatchNorm2d(48)
    other.b[1] = torch.nn.Conv2d(48, 64, 3, padding=1)
    with pytest.raises(CheckpointError, match=r"space\.pt: the model converts to other hparams .*tests\.toys:Residual"):
        restore_space(path, other)
