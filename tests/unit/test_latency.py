"""Latency table: layer shares follow the subnet exactly, predictions are monotone, files round-trip and are checked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from nasprune_cli.allocator import current_mode
from nasprune_cli.constraints import Cost, parse_constraint
from nasprune_cli.conversion import convert
from nasprune_cli.errors import NasPruneError
from nasprune_cli.metrics import latency as lat
from nasprune_cli.recipe.load import load_recipe, recipe_from_dict
from tests.toys import Chain, Concat, Residual, cbr

ROOT = Path(__file__).resolve().parents[2]


def space_of(model: nn.Module, size: int = 16):
    torch.manual_seed(0)
    return convert(model.eval(), None, torch.randn(1, 3, size, size))


@pytest.fixture(scope="module")
def concat_table():
    space = space_of(Concat())
    return space, lat.measure_latency(space, batch=1, repeats=1)


@pytest.mark.parametrize("toy", [Chain, Residual, Concat])
def test_layer_shares_from_one_probe_per_hparam_match_any_subnet(toy: type[nn.Module]) -> None:
    space = space_of(toy())
    table = lat.measure_latency(space, batch=1, repeats=1)
    full = lat._probe(space.model, space.dummy_input)
    rng = random.Random(0)
    for _ in range(5):
        config = space.sample(rng)
        sizes = lat._probe(space.model, space.dummy_input)
        removed = {h: hp.original - config[h] for h, hp in space.hparams.items()}
        for leaf in table.leaves:
            n_in, n_out = full[leaf.key]
            share_in, share_out = sizes[leaf.key][0] / n_in, sizes[leaf.key][1] / n_out
            expected = share_in * share_out if leaf.weighted else share_in
            assert leaf.work(removed) == pytest.approx(expected, abs=1e-9), leaf.key


def test_prediction_falls_when_any_width_shrinks(concat_table) -> None:
    space, table = concat_table
    space.attach_latency(table)
    rng = random.Random(1)
    for _ in range(20):
        config = space.sample(rng)
        name = rng.choice(sorted(space.hparams))
        choices = space.hparams[name].choices
        idx = choices.index(config[name])
        if idx == 0:
            continue
        narrower = {**config, name: choices[idx - 1]}
        assert space.cost(narrower).latency <= space.cost(config).latency + 1e-12
    assert space.cost(space.max()).latency == pytest.approx(table.original_ms)
    assert space.original_cost.latency == pytest.approx(table.original_ms)
    space.attach_latency(None)
    assert space.cost().latency is None and space.original_cost.latency is None


def test_interpolation_is_exact_at_samples_linear_between_and_proportional_below() -> None:
    samples = [(0.25, 2.0), (0.5, 3.0), (1.0, 7.0)]
    assert [lat.interpolate(samples, x) for x, _ in samples] == [2.0, 3.0, 7.0]
    assert lat.interpolate(samples, 0.75) == pytest.approx(5.0)
    assert lat.interpolate(samples, 0.125) == pytest.approx(1.0)
    assert lat.interpolate(samples, 2.0) == 7.0


def test_noisy_samples_are_made_non_decreasing_and_keep_the_full_width_time() -> None:
    merged = lat._merge([(1.0, 5.0), (0.5, 6.0), (0.25, 1.0), (0.5, 4.0)])
    assert merged == [(0.25, 1.0), (0.5, 5.0), (1.0, 5.0)]


def test_table_round_trips_through_its_file(concat_table, tmp_path: Path) -> None:
    space, table = concat_table
    path = lat.save_latency_table(table, tmp_path / "t.json")
    assert not list(tmp_path.glob(".*.tmp"))
    loaded = lat.load_latency_table(path)
    loaded.check(space, 1, str(path))
    rng = random.Random(2)
    for _ in range(5):
        config = space.sample(rng)
        assert loaded.predict(config, 0.5) == pytest.approx(table.predict(config, 0.5))


def test_a_table_made_for_another_input_batch_or_file_kind_is_refused(concat_table, tmp_path: Path) -> None:
    space, table = concat_table
    with pytest.raises(NasPruneError, match="another batch.*1 in the table vs 8 now"):
        table.check(space, 8, "t.json")
    other = space_of(Concat(), size=24)
    with pytest.raises(NasPruneError, match=r"t.json: the latency table was measured for another input shape"):
        table.check(other, 1, "t.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(NasPruneError, match="bad.json: not a nasprune latency table"):
        lat.load_latency_table(bad)
    bad.write_text("{not json")
    with pytest.raises(NasPruneError, match="bad.json: cannot read the latency table"):
        lat.load_latency_table(bad)
    damaged = table.to_dict()
    del damaged["leaves"][0]["samples"]
    bad.write_text(json.dumps(damaged))
    with pytest.raises(NasPruneError, match="bad.json: damaged latency table"):
        lat.load_latency_table(bad)


def test_a_table_measured_with_another_allocator_is_refused(concat_table, tmp_path: Path) -> None:
    space, table = concat_table
    assert table.meta["malloc"] == current_mode()  # recorded when measured
    other = "system" if current_mode() == "caching" else "caching"
    data = table.to_dict()
    data["meta"]["malloc"] = other
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NasPruneError, match=rf"t.json: the latency table was measured with the '{other}' memory"):
        lat.load_latency_table(path).check(space, 1, str(path))
    del data["meta"]["malloc"]  # written before the allocator was recorded: accepted
    path.write_text(json.dumps(data))
    lat.load_latency_table(path).check(space, 1, str(path))


def test_latency_model_for_measures_once_then_reads_the_file(tmp_path: Path) -> None:
    space = space_of(Chain())
    path = tmp_path / "chain.latency.json"
    first, measured = lat.latency_model_for(space, path, 1)
    assert measured and path.exists()
    again, measured_again = lat.latency_model_for(space, path, 1)
    assert not measured_again
    assert again.to_dict() == json.loads(json.dumps(first.to_dict()))


def _deep_space(recipe_rules: dict | None = None):
    model = nn.Sequential(cbr(3, 32), nn.Sequential(cbr(32, 32), cbr(32, 32), cbr(32, 32)), nn.Conv2d(32, 10, 1))
    torch.manual_seed(0)
    recipe = load_recipe(ROOT / "recipes" / "autonas.yaml")
    if recipe_rules is not None:
        recipe = recipe_from_dict({"mode": "autonas", "rules": recipe_rules})
    return convert(model.eval(), recipe, torch.randn(1, 3, 16, 16))


def test_depth_hparams_gate_the_layers_of_the_children_they_skip() -> None:
    space = _deep_space({"nn.Conv2d": {}, "nn.BatchNorm2d": {}, "nn.Sequential": {"1": {"min_depth": 1}}})
    assert [n for n, hp in space.hparams.items() if hp.kind == "depth"] == ["1.depth"]
    assert space.hparams["1.depth"].choices == (1, 2, 3)
    table = lat.measure_latency(space, batch=1, repeats=1)
    gated = {leaf.key.rsplit("#", 1)[0]: leaf.gates for leaf in table.leaves}
    assert gated["1.1.0"] == [("1.depth", 1)] and gated["1.2.0"] == [("1.depth", 2)]
    assert gated["1.0.0"] == [] and gated["0.0"] == []
    # a skippable child's own time outside its layers is an entry of its own, gated like them
    assert gated["1.1"] == [("1.depth", 1)] and gated["1.2"] == [("1.depth", 2)] and "1.0" not in gated
    space.attach_latency(table)
    rng = random.Random(3)
    for _ in range(10):
        config = space.sample(rng)
        shallower = {**config, "1.depth": 1}
        flops_fraction = space.cost(shallower).flops / space.original_cost.flops
        # the skipped children's layers drop out; every other layer keeps its time at these widths
        removed = {h: hp.original - config[h] for h, hp in space.hparams.items() if hp.kind == "width"}
        kept = sum(
            lat.interpolate(leaf.samples, leaf.work(removed))
            for leaf in table.leaves
            if not leaf.key.startswith(("1.1.", "1.2.", "1.1#", "1.2#"))
        )
        expected = kept + lat.interpolate(table.remainder, flops_fraction)
        assert space.cost(shallower).latency == pytest.approx(expected)
        assert space.cost(shallower).latency <= space.cost(config).latency + 1e-12
    space.attach_latency(None)


def test_a_blocks_own_time_is_what_its_layers_and_inner_blocks_leave() -> None:
    block_times = {"s.1#0": 10.0, "s.1.se#0": 3.0, "s.2#0": 1.0}
    leaf_times = {"s.1.conv#0": 4.0, "s.1.se.fc#0": 2.0, "s.2.conv#0": 1.5, "s.10.conv#0": 100.0}
    assert lat._block_rest(block_times, leaf_times) == {"s.1.se#0": 1.0, "s.1#0": 3.0, "s.2#0": 0.0}


def test_a_depth_table_round_trips_with_its_gates(tmp_path: Path) -> None:
    space = _deep_space()
    table = lat.measure_latency(space, batch=1, repeats=1)
    loaded = lat.load_latency_table(lat.save_latency_table(table, tmp_path / "d.json"))
    assert [leaf.gates for leaf in loaded.leaves] == [leaf.gates for leaf in table.leaves]
    for depth in (1, 2, 3):
        config = {**space.max(), "1.depth": depth}
        assert loaded.predict(config, 0.5) == pytest.approx(table.predict(config, 0.5))


def test_a_version_1_table_is_still_read(concat_table, tmp_path: Path) -> None:
    space, table = concat_table
    old = table.to_dict()
    old["version"] = 1
    del old["meta"]["depth_hparams"]
    for leaf in old["leaves"]:
        del leaf["gates"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old))
    loaded = lat.load_latency_table(path)
    loaded.check(space, 1, str(path))
    config = space.sample(random.Random(4))
    assert loaded.predict(config, 0.5) == pytest.approx(table.predict(config, 0.5))


def test_kernel_hparams_are_refused_with_the_reason() -> None:
    space = _deep_space({"nn.Conv2d": {"kernel_size": [1, 3]}, "nn.BatchNorm2d": {}})
    assert any(hp.kind == "kernel" for hp in space.hparams.values())
    with pytest.raises(NasPruneError, match="width and depth hparams.*kernel-size hparam"):
        lat.measure_latency(space)


@pytest.mark.parametrize(
    ("value", "expected"), [("25ms", 25.0), ("2.5 ms", 2.5), (12, 12.0), ("12", 12.0), ("50%", 20.0)]
)
def test_latency_budgets_are_milliseconds_or_a_share(value: str | float, expected: float) -> None:
    assert parse_constraint("latency", value, 40.0) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["25M", "fast", "0ms"])
def test_bad_latency_budgets_say_what_is_expected(value: str) -> None:
    with pytest.raises(NasPruneError, match="constraint 'latency'"):
        parse_constraint("latency", value, 40.0)


def test_a_cost_without_a_table_has_no_latency_to_check() -> None:
    with pytest.raises(NasPruneError, match="no latency table"):
        Cost(1.0, 1.0).get("latency")


def test_profile_leaves_a_latency_budget_to_the_search() -> None:
    from nasprune_cli.profiling import profile

    report = profile(space_of(Chain()), None, None, {"flops": "50%", "latency": "50%"})
    assert [c.name for c in report.constraints] == ["flops"]
