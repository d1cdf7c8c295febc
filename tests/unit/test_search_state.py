"""Search settings checks, fingerprints and RNG state round trips."""

from __future__ import annotations

import random

import pytest
import torch

from nasprune_cli.checkpoint import fingerprint_difference
from nasprune_cli.errors import SearchError
from nasprune_cli.fileio import digest
from nasprune_cli.searchers.state import (
    SearchSettings,
    config_key,
    fingerprint,
    rng_state,
    set_rng_state,
)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"searcher": "grid"}, "search.searcher: unknown searcher 'grid'"),
        ({"iterations": 0}, r"search.iterations: expected an integer >= 1 \(got 0\)"),
        ({"max_batches": 1.5}, "search.max_batches: expected an integer"),
        ({"mutation_prob": 2.0}, r"search.mutation_prob: expected a number in \[0, 1\]"),
        ({"candidate_size": 30}, r"search.candidate_size: must be <= population_size \(got 30 > 20\)"),
        ({"crossover_size": -1}, "search.crossover_size: expected an integer >= 0"),
    ],
)
def test_settings_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(SearchError, match=message):
        SearchSettings(**changes).check()


def test_settings_defaults_are_valid() -> None:
    assert SearchSettings().check().searcher == "binary"
    assert "fill" in SearchSettings.names()


@pytest.mark.parametrize(("population", "candidates"), [(20, 10), (12, 10), (4, 4), (2, 2)])
def test_default_candidate_size_follows_a_small_population(population: int, candidates: int) -> None:
    settings = SearchSettings(searcher="evolve", population_size=population).check()
    assert settings.candidate_size == candidates
    assert SearchSettings(population_size=4, candidate_size=3).check().candidate_size == 3  # an explicit value stays


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
