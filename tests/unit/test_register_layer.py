"""register_layer and the recipe's `plugins:` / qualified-name rules: a user's layer converted, searched and exported
as its own class; errors that name the argument, the file and the key; the budget error when nothing is prunable."""

from __future__ import annotations

import random
import re
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import nasprune_cli
from nasprune_cli import convert, load_recipe
from nasprune_cli.dynamic import is_dynamic
from nasprune_cli.errors import NasPruneError, RecipeError, SearchError
from nasprune_cli.metrics.flops import fvcore_flops
from nasprune_cli.searching.base import check_bounds

PLUGIN = '''
import torch
from torch import nn
import nasprune_cli


class TLinear(nn.Module):
    """A linear layer whose weight is [in, out] (like HF's Conv1D)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.w = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.b = nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return x @ self.w + self.b


nasprune_cli.register_layer(
    TLinear, kind="linear", tensors={"w": {"in": 0, "out": 1}, "b": {"out": 0}},
    sizes={"in": ["n_in"], "out": ["n_out"]}, channel_dim=-1,
)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh plugin module (registration is global: a new name per test), importable from tmp_path."""
    name = f"nasprune_test_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _mlp(module: object) -> nn.Sequential:
    return nn.Sequential(module.TLinear(8, 64), nn.ReLU(), module.TLinear(64, 64), nn.GELU(), module.TLinear(64, 3))


def test_plugin_layer_converts_searches_and_exports_as_its_own_class(plugin: str, tmp_path: Path) -> None:
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(
        f"plugins: [{plugin}]\nrules:\n  {plugin}.TLinear:\n    features_ratio: [0.25, 0.5]\n    feature_divisor: 16\n"
    )
    recipe = load_recipe(recipe_path)
    module = sys.modules[plugin]
    torch.manual_seed(0)
    model = _mlp(module).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        original = model(x)
    space = convert(model, recipe, x)
    assert sorted(hp.choices for hp in space.hparams.values()) == [(16, 32, 64), (16, 32, 64)]
    with torch.no_grad():
        assert_close(space.model(x), original, rtol=0, atol=0)
    rng = random.Random(0)
    for _ in range(3):
        config = space.sample(rng)
        exported = space.export()
        assert not any(is_dynamic(m) for m in exported.modules())
        assert type(exported[2]) is module.TLinear and exported[2].n_out == exported[2].w.shape[1]
        with torch.no_grad():
            assert_close(exported(x), space.model(x), rtol=1e-5, atol=1e-5)
        assert fvcore_flops(exported, x) == pytest.approx(space.cost(config).flops)


def test_rule_null_for_a_qualified_name_leaves_the_layer_whole(plugin: str, tmp_path: Path) -> None:
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"plugins: [{plugin}]\nrules:\n  {plugin}.TLinear: null\n")
    recipe = load_recipe(recipe_path)  # imports the plugin
    space = convert(_mlp(sys.modules[plugin]), recipe, torch.randn(2, 8))
    assert not space.hparams and {f.name for f in space.frozen} >= {"0", "2"}
    assert "not converted by the recipe" in next(f.reason for f in space.frozen if f.name == "0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  mypkg_missing.Layer: {}\n", "r.yaml: rules.mypkg_missing.Layer: unknown module type"),
        ("rules:\n  torch.nn.ReLU: {}\n", "r.yaml: rules.torch.nn.ReLU: unknown module type"),
        ("plugins: [mypkg_missing_plugin]\n", "r.yaml: plugins[0]: importing plugin 'mypkg_missing_plugin' failed"),
        ("plugins: ['not a module']\n", "r.yaml: plugins[0]: expected a module's import path"),
    ],
)
def test_recipe_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=re.escape(f"{tmp_path}/{message}")):
        load_recipe(path)


class _Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.g


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "norm", "tensors": {"g": {"features": 0}}}, r"kind must be 'linear' or 'channelwise' \(got 'norm'\)"),
        ({"kind": "linear", "tensors": {"g": {"out": 0}}}, r".*needs a tensor that holds it \(missing: in\)"),
        ({"kind": "channelwise", "tensors": {"g": {"features": "0"}}}, r"tensors\['g'\] maps sides .* to dims"),
        ({"kind": "channelwise", "tensors": {"g": {"features": 0}}, "channel_dim": 1.5}, "channel_dim must be"),
    ],
)
def test_register_layer_rejects_a_bad_spec(kwargs: dict, message: str) -> None:
    with pytest.raises(NasPruneError, match=r"register_layer\('_Gate'\): " + message):
        nasprune_cli.register_layer(_Gate, **kwargs)


def test_register_layer_rejects_a_second_registration_and_a_builtin_type() -> None:
    with pytest.raises(NasPruneError, match=r"nn.Conv2d is already registered"):
        nasprune_cli.register_layer(nn.Conv2d, kind="linear", tensors={"weight": {"in": 1, "out": 0}})


def test_unsatisfiable_budget_says_when_nothing_is_prunable() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(1, 3, 8, 8)
    space = convert(model, None, x)
    assert not space.hparams  # 8 channels: no width below the divisor of 32
    with pytest.raises(SearchError, match=r"nothing in this model is prunable: .*nasprune profile --explain LAYER"):
        check_bounds({"flops": 0.5 * space.original_cost.flops}, space)
