"""Search settings (the recipe's search section, with overrides), fingerprints and RNG state round trips."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nasprune_cli.checkpoint import fingerprint_difference
from nasprune_cli.errors import RecipeError, SearchError
from nasprune_cli.fileio import digest
from nasprune_cli.recipe.load import load_recipe, search_settings
from nasprune_cli.recipe.schema import Recipe, SearchSettings
from nasprune_cli.searching.base import config_key, rng_state, set_rng_state
from nasprune_cli.searching.fingerprint import fingerprint
from nasprune_cli.searching.options import config_keys, search_options


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"searcher": "grid"}, r"search.searcher: expected one of 'binary', 'evolve', 'random' \(got 'grid'\)"),
        ({"iterations": 0}, r"search.iterations: must be >= 1 \(got 0\)"),
        ({"max_batches": 1.5}, r"search.max_batches: expected an integer \(got 1.5\)"),
        ({"mutation_prob": 2.0}, r"search.mutation_prob: must be <= 1.0 \(got 2.0\)"),
        ({"candidate_size": 30}, r"search.candidate_size: must be <= search.population_size \(20\)"),
        ({"crossover_size": -1}, r"search.crossover_size: must be >= 0 \(got -1\)"),
        ({"fill": "yes"}, r"search.fill: expected true or false \(got 'yes'\)"),
    ],
)
def test_settings_are_checked_by_the_recipe_schema(changes: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=rf"^search config: {message}"):
        search_settings(None, changes)


def test_settings_defaults_are_the_schemas() -> None:
    settings = SearchSettings().resolved()
    assert (settings.searcher, settings.fill, settings.rival_floor, settings.candidate_size) == (
        "binary",
        True,
        0.5,
        10,
    )
    assert SearchSettings().resolved("autonas").searcher == "evolve"
    assert SearchSettings(searcher="random").resolved("autonas").searcher == "random"  # an explicit searcher stays


@pytest.mark.parametrize(("population", "candidates"), [(20, 10), (12, 10), (4, 4), (2, 2)])
def test_default_candidate_size_follows_a_small_population(population: int, candidates: int) -> None:
    settings = SearchSettings(searcher="evolve", population_size=population).resolved()
    assert settings.candidate_size == candidates
    assert SearchSettings(population_size=4, candidate_size=3).resolved().candidate_size == 3  # an explicit value stays


def test_overrides_win_over_the_recipe_and_keep_its_other_settings(tmp_path: Path) -> None:
    """Flag / config over recipe precedence, on the settings model alone."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("search: {fill: false, seed: 3, iterations: 7, score: 'pkg:acc'}\n")
    loaded = load_recipe(recipe, {"search": {"seed": 5, "descent": False}}, "command line")
    assert (loaded.search.seed, loaded.search.descent, loaded.search.fill, loaded.search.iterations) == (
        5,
        False,
        False,
        7,
    )
    merged = search_settings(loaded.search, {"iterations": 9, "score": "pkg:other"})
    assert (merged.iterations, merged.score, merged.seed, merged.fill) == (9, "pkg:other", 5, False)
    with pytest.raises(RecipeError, match=r"^command line: search.seed: expected an integer \(got 'x'\)"):
        load_recipe(recipe, {"search": {"seed": "x"}}, "command line")


def test_search_config_objects_win_over_recipe_strings() -> None:
    recipe = Recipe.model_validate({"search": {"score": "pkg:acc", "max_batches": 3}})

    def accuracy(model: object) -> float:
        return 1.0

    options = search_options({"recipe": recipe, "score_func": accuracy, "fill": False})
    assert options.score.value is accuracy and options.score.name.endswith("accuracy")
    assert (options.settings.max_batches, options.settings.fill, options.settings.searcher) == (3, False, "binary")
    with pytest.raises(SearchError, match="search config: unknown key 'fil'"):
        search_options({"fil": False})
    assert "constraints" not in config_keys() and {"fill", "score_func", "recipe"} <= set(config_keys())


def make_fp(**changes: object) -> dict:
    base = {
        "model": {"entry_point": "pkg:build", "kwargs": {"width": 8}},
        "recipe": {"mode": "fastnas", "rules": None, "search": {"checkpoint": "a.pt"}, "input": {"shape": [1, 3]}},
        "settings": SearchSettings(),
        "bounds": {"flops": 100.0},
        "input_spec": {"shape": [1, 3], "dtype": "float32"},
        "hparams": {"h": [8, 16]},
        "score": "pkg:score",
        "data": "pkg:data",
        "collect": "default",
    }
    base.update(changes)
    return fingerprint(**base)  # type: ignore[arg-type]


def test_fingerprint_ignores_the_recipe_search_section_but_not_the_rest() -> None:
    a = make_fp()
    same = make_fp(
        recipe={"mode": "fastnas", "rules": None, "search": {"checkpoint": "b.pt"}, "input": {"shape": [1, 3]}}
    )
    assert digest(a) == digest(same)
    assert digest(a) != digest(make_fp(bounds={"flops": 99.0}))
    assert digest(a) != digest(make_fp(settings=SearchSettings(seed=1)))
    diff = fingerprint_difference(a, make_fp(model={"entry_point": "pkg:other", "kwargs": {"width": 8}}))
    assert diff == 'model.entry_point ("pkg:build" in the checkpoint vs "pkg:other" now)'
    assert fingerprint_difference(a, a) == ""
    rules = {"mode": "fastnas", "rules": {"nn.Conv2d": None}, "search": {}, "input": {"shape": [1, 3]}}
    assert fingerprint_difference(a, make_fp(recipe=rules)).startswith("recipe.rules (null in the checkpoint vs ")
    # another model also has other hparams: the model, the cause, is named
    other = make_fp(model={"entry_point": "pkg:build", "kwargs": {"width": 16}}, hparams={"h": [8, 16, 32]})
    assert fingerprint_difference(a, other).startswith("model.kwargs.width (8 in the checkpoint vs 16 now)")


def test_rng_state_round_trips_through_weights_only_files(tmp_path) -> None:
    rng = random.Random(5)
    rng.random()
    path = tmp_path / "rng.pt"
    torch.save({"rng": rng_state(rng)}, path)
    expected = [rng.random() for _ in range(3)]
    other = random.Random(0)
    set_rng_state(other, torch.load(path, weights_only=True)["rng"])
    assert [other.random() for _ in range(3)] == expected


def test_config_key_is_order_independent() -> None:
    assert config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1}) == "a=2,b=1"
