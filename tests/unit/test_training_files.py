"""Files of training: a trained space keeps its weights and channel order; a fine-tuned pruned file restores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasprune_cli.checkpoint import load_pruned, restore, save_finetuned, save_pruned
from nasprune_cli.conversion import convert
from nasprune_cli.errors import CheckpointError
from nasprune_cli.recipe.load import recipe_from_dict
from nasprune_cli.searching.api import search
from nasprune_cli.space_file import load_space, restore_space, save_space
from tests.toys import Residual

RECIPE = recipe_from_dict(
    {
        "rules": {"nn.Conv2d": {"channel_divisor": 16}, "nn.BatchNorm2d": {}, "nn.Linear": {}},
        "input": {"shape": [2, 3, 16, 16]},
    }
)
SPEC = {"entry_point": "tests.toys:Residual", "kwargs": {}}

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:no --data given")]


def fresh() -> Residual:
    torch.manual_seed(0)
    return Residual()


def trained_space(tmp_path: Path) -> tuple[Path, dict[str, list[int]], dict[str, torch.Tensor]]:
    space = convert(fresh(), RECIPE, torch.randn(2, 3, 16, 16))
    orders = {name: list(reversed(order)) for name, order in space.channel_orders().items()}
    space.set_channel_orders(orders)
    with torch.no_grad():
        for p in space.model.parameters():
            p.add_(0.5)  # stands for training
    path = save_space(tmp_path / "space.pt", space, SPEC, RECIPE, training={"steps": 3})
    return path, orders, {k: v.clone() for k, v in space.model.state_dict().items()}


def test_a_trained_space_restores_its_weights_and_locked_channel_order(tmp_path: Path) -> None:
    path, orders, weights = trained_space(tmp_path)
    assert load_space(path)["training"]["summary"] == {"steps": 3}
    space = restore_space(path, fresh())
    assert space.channel_orders() == orders and space.order_locked
    assert all(torch.equal(space.model.state_dict()[k], v) for k, v in weights.items())


def test_search_keeps_the_order_of_a_trained_space(tmp_path: Path) -> None:
    path, orders, _ = trained_space(tmp_path)
    space = restore_space(path, fresh())
    search(space, {"flops": "60%"}, None, {"searcher": "random", "iterations": 2, "reconstruct": False})
    assert space.channel_orders() == orders
    unlocked = restore_space(path, fresh())
    unlocked.order_locked = False  # as an untrained space: sorted by importance, the stored order is not kept
    search(unlocked, {"flops": "60%"}, None, {"searcher": "random", "iterations": 2, "reconstruct": False})
    assert unlocked.channel_orders() != orders


def test_a_converted_space_without_training_restores_as_before(tmp_path: Path) -> None:
    space = convert(fresh(), RECIPE, torch.randn(2, 3, 16, 16))
    path = save_space(tmp_path / "space.pt", space, SPEC, RECIPE)
    assert load_space(path).get("training") is None
    assert not restore_space(path, fresh()).order_locked


def test_trained_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    path, _, _ = trained_space(tmp_path)
    data = torch.load(path, weights_only=True)
    data["training"]["orders"] = {name: [0] for name in data["training"]["orders"]}
    from nasprune_cli.fileio import add_checksum, atomic_save

    atomic_save(add_checksum({k: v for k, v in data.items() if k != "sha256"}), path)
    with pytest.raises(CheckpointError, match=r"space.pt: the trained weights do not fit the rebuilt model"):
        restore_space(path, fresh())


def test_a_finetuned_file_restores_with_its_new_weights(tmp_path: Path) -> None:
    result = search(
        fresh(), {"flops": "60%"}, torch.randn(2, 3, 16, 16),
        {"recipe": RECIPE, "model_spec": SPEC, "searcher": "random", "iterations": 2, "reconstruct": False},
    )  # fmt: skip
    pruned = save_pruned(tmp_path / "pruned.pt", result)
    model = restore(fresh(), pruned)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    out = save_finetuned(tmp_path / "ft.pt", load_pruned(pruned), model, {"score_after": 0.5})
    assert load_pruned(out)["metrics"]["finetune"] == {"score_after": 0.5}
    again = restore(fresh(), out)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    with pytest.raises(CheckpointError, match="exists"):
        save_finetuned(tmp_path / "ft.pt", load_pruned(pruned), model, {})
