"""The least-squares refit of the kept weights (nasprune_cli.reconstruct) and its use at the end of search()."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from nasprune_cli.checkpoint import restore, save_pruned
from nasprune_cli.conversion import convert
from nasprune_cli.demo import build
from nasprune_cli.demo.digits import _split, data, score
from nasprune_cli.errors import RecipeError
from nasprune_cli.metrics.score import recalibrate_bn
from nasprune_cli.recipe.load import load_recipe, search_settings
from nasprune_cli.recipe.schema import SearchSettings
from nasprune_cli.searching import search
from nasprune_cli.searching.reconstruct import RIDGES, Normal, held_out_fit, reconstructed
from tests.toys import TOYS

ROOT = Path(__file__).resolve().parents[2]
DEMO = load_recipe(ROOT / "recipes" / "demo.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_space(name: str) -> tuple[nn.Module, object, list[tuple[torch.Tensor]]]:
    """The toy (eval mode, seeded), its converted space and four random batches of 8 inputs."""
    cls, shape = TOYS[name]
    torch.manual_seed(0)
    model = cls().eval()
    original = copy.deepcopy(model)
    space = convert(model, None, torch.zeros(shape))
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, *shape[1:], generator=gen),) for _ in range(4)]
    return original, space, batches


def half_config(space: object) -> dict[str, int]:
    """Every width hparam at its choice nearest half its width (an uneven prune of every group)."""
    return {
        n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) if hp.kind == "width" else hp.original
        for n, hp in space.hparams.items()
    }


def outputs(model: nn.Module, batches: list) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(b[0]) for b in batches])


@pytest.mark.parametrize("toy", ["chain", "residual"])
def test_refit_of_the_full_subnet_keeps_every_weight(toy: str) -> None:
    original, space, batches = toy_space(toy)
    space.select(space.max())
    with reconstructed(space, batches) as report:
        exported = space.export()
    assert not report.layers  # nothing to compensate: every layer already gives the original outputs
    assert set(report.skipped) == {n for n, m in original.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert all(why == "its output already matches the original model's" for why in report.skipped.values())
    refitted = dict(exported.named_parameters())
    for name, p in original.named_parameters():
        assert torch.equal(refitted[name], p), name


@pytest.mark.parametrize("toy", ["chain", "residual"])
def test_refit_lowers_every_layers_error_and_the_output_error(toy: str) -> None:
    original, space, batches = toy_space(toy)
    space.select(half_config(space))
    recalibrate_bn(space.model, batches)
    plain = space.export()
    recalibrate_bn(original, batches)  # the refit's targets: the original model, BN calibrated on the batches
    reference = outputs(original, batches)
    with reconstructed(space, batches) as report:
        refitted = space.export()
    for name in report.layers:
        assert report.error_after[name] <= report.error_before[name] + 1e-9, name
    assert sum(report.error_after.values()) < 0.8 * sum(report.error_before.values())
    before = (outputs(plain, batches) - reference).pow(2).mean()
    after = (outputs(refitted, batches) - reference).pow(2).mean()
    assert after < 0.8 * before


def test_inside_the_block_the_export_is_the_dynamic_subnet_and_leaving_it_restores_the_space() -> None:
    original, space, batches = toy_space("residual")
    config = half_config(space)
    space.select(config)
    recalibrate_bn(space.model, batches)
    state = {k: v.clone() for k, v in space.model.state_dict().items()}
    with reconstructed(space, batches):
        exported = space.export()
        assert torch.allclose(outputs(exported, batches), outputs(space.model, batches), atol=1e-5)
        assert space.config() == config
    assert space.config() == config
    for key, value in space.model.state_dict().items():  # weights and BN statistics as before
        assert torch.equal(value, state[key]), key
    space.select(space.max())  # the full subnet is the original model again (both BN-calibrated on the batches)
    recalibrate_bn(space.model, batches)
    recalibrate_bn(original, batches)
    assert torch.allclose(outputs(space.model, batches), outputs(original, batches), atol=1e-5)


def test_layers_it_cannot_refit_are_named_with_the_reason() -> None:
    _, space, batches = toy_space("depthwise")
    space.select(half_config(space))
    with reconstructed(space, batches) as report:
        pass
    assert report.skipped["dw.0"] == "grouped convolution (groups=96)"
    assert {"project.0", "fc"} <= set(report.layers)
    assert report.skipped["expand.0"] == "its output already matches the original model's"  # it reads the image
    _, space, batches = toy_space("shared")
    with reconstructed(space, batches) as report:
        pass
    assert any("times per forward pass" in why or "shared" in why for why in report.skipped.values())


def test_refit_recovers_held_out_accuracy_of_the_digits_model() -> None:
    """The refit sees training images only (no labels): the validation split is held out from it."""
    model = build()
    space = convert(model, DEMO, torch.zeros(1, 1, 8, 8))
    batches = data()[:4]
    space.select(half_config(space))
    recalibrate_bn(space.model, batches)
    plain = space.export()
    with reconstructed(space, batches):
        refitted = space.export()
    assert score(refitted) > score(plain) + 0.01


def test_search_refits_keeps_the_searched_model_on_request_and_restores_the_refit(tmp_path: Path) -> None:
    config = {"recipe": DEMO, "model_spec": {"entry_point": "nasprune_cli.demo:build", "kwargs": {}}}
    result = search(build(), {"flops": "50%"}, None, config)
    pruned = result.model
    plain_result = search(build(), {"flops": "50%"}, None, {**config, "reconstruct": False})
    plain = plain_result.model
    info, off = result.summary()["reconstruction"], plain_result.summary()["reconstruction"]
    assert info["applied"] and info["layers"] > 0 and info["mean_error_after"] < info["mean_error_before"]
    assert result.summary()["config"] == plain_result.summary()["config"]  # the refit does not change the search
    assert info["score_before"] == plain_result.summary()["metrics"]["pruned"]["score"]
    assert result.summary()["metrics"]["pruned"]["score"] == pytest.approx(score(pruned)) == info["score_after"]
    assert info["score_after"] >= info["score_before"]
    assert not off["applied"] and off["reason"].startswith("off")
    assert pruned.state_dict().keys() == plain.state_dict().keys()
    assert any(not torch.equal(a, plain.state_dict()[k]) for k, a in pruned.state_dict().items())
    path = save_pruned(tmp_path / "pruned.pt", result)
    rebuilt = restore(build(), path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), pruned.eval()(x))


def test_a_refit_that_lowers_the_score_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import nasprune_cli.searching.reconstruct as rec

    write = rec._write

    def noisy(module: nn.Module, tensors: list, solved: torch.Tensor, rows: object, cols: object) -> None:
        write(module, tensors, torch.randn(solved.shape, dtype=solved.dtype), rows, cols)  # a refit gone wrong

    monkeypatch.setattr(rec, "_write", noisy)
    config = {"recipe": DEMO, "reconstruct": True}
    result = search(build(), {"flops": "50%"}, None, config)
    pruned = result.model
    info = result.summary()["reconstruction"]
    assert not info["applied"] and info["score_after"] < info["score_before"]
    assert result.summary()["metrics"]["pruned"]["score"] == info["score_before"] == pytest.approx(score(pruned))


def test_without_data_nothing_is_refitted_and_the_reason_is_given() -> None:
    _, space, _ = toy_space("chain")
    with pytest.warns(UserWarning, match="no --data"):
        result = search(space, {"flops": "70%"}, None, {"max_batches": 1})
    info = result.summary()["reconstruction"]
    assert not info["applied"] and "no data" in info["reason"]


def test_reconstruct_setting_must_be_a_bool() -> None:
    with pytest.raises(RecipeError, match=r"search.reconstruct: expected true or false \(got 'yes'\)"):
        search_settings(None, {"reconstruct": "yes"})
    assert SearchSettings().reconstruct is True


def test_the_digits_split_keeps_validation_out_of_the_refit_data() -> None:
    x_train, _, x_val, _ = _split()
    train_images = torch.cat([b[0] for b in data()])
    assert len(train_images) <= len(x_train)
    assert not any(torch.equal(v, t) for v in x_val[:20] for t in train_images[:200])


def test_a_checkpoint_resumes_across_the_reconstruct_setting(tmp_path: Path) -> None:
    checkpoint = tmp_path / "state.pt"
    config = {"recipe": DEMO, "checkpoint": str(checkpoint)}
    first_result = search(build(), {"flops": "50%"}, None, config)
    first = first_result.state
    again_result = search(build(), {"flops": "50%"}, None, {**config, "reconstruct": False})  # not refused
    again = again_result.state
    assert again_result.summary()["config"] == first_result.summary()["config"]
    assert again["evaluations"] == first["evaluations"]  # finished state: nothing scored again
    assert not again_result.summary()["reconstruction"]["applied"]


def folds_of(x: torch.Tensor, y: torch.Tensor) -> tuple[Normal, Normal]:
    first, second = Normal(), Normal()
    half = len(x) // 2
    first.add(x[:half], y[:half])
    second.add(x[half:], y[half:])
    return first, second


def test_held_out_check_fits_a_layer_the_data_determines_and_refuses_one_it_would_memorize() -> None:
    gen = torch.Generator().manual_seed(0)
    kept = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    true = kept + 0.5 * torch.randn(3, 20, generator=gen, dtype=torch.float64)
    x = torch.randn(400, 20, generator=gen, dtype=torch.float64)
    fit = held_out_fit(folds_of(x, x @ true.T), kept, RIDGES)  # 400 rows for 20 weights, targets from the inputs
    assert fit is not None
    assert torch.allclose(fit[0], true, atol=0.05) and fit[1] in RIDGES
    # 8 rows for 20 weights, 64 outputs unrelated to the inputs (best predicted by zero weights): a fit memorizes
    few, noise = x[:8], torch.randn(8, 64, generator=gen, dtype=torch.float64)
    assert held_out_fit(folds_of(few, noise), torch.zeros(64, 20, dtype=torch.float64), RIDGES) is None


def test_batch_sums_added_in_batch_order_are_the_running_sum_to_the_bit() -> None:
    from nasprune_cli.distributed import World
    from nasprune_cli.searching.normals import summed_folds

    gen = torch.Generator().manual_seed(0)
    rows = [(torch.randn(50, 7, generator=gen), torch.randn(50, 3, generator=gen)) for _ in range(5)]
    running = Normal()
    for x, y in rows:
        running.add(x, y)

    def batch(i: int) -> tuple[Normal, Normal]:
        first = Normal()
        first.add(*rows[i])
        return first, Normal()

    summed, empty = summed_folds(World(), len(rows), batch, "test", torch.device("cpu"))
    assert torch.equal(summed.xtx, running.xtx) and torch.equal(summed.xty, running.xty)
    assert summed.yty == running.yty and summed.rows == running.rows == 250 and empty.xtx is None
