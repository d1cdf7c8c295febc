"""load_recipe: YAML files, overrides, and one-line errors naming the file, the key path and the value."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from nasprune_cli.errors import RecipeError
from nasprune_cli.recipe import ConvRule, Recipe, load_recipe


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_none_path_gives_defaults() -> None:
    assert load_recipe(None) == Recipe()


def test_empty_file_is_the_default_recipe(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, "")) == Recipe()


def test_full_recipe(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        mode: fastnas
        description: small
        rules:
          nn.Conv2d:
            "*": {channels_ratio: [0.5, 1], channel_divisor: 8}
            "head": null
        search: {constraints: {flops: 60%}, searcher: binary}
        input: {shape: [1, 3, 32, 32]}
    """,
    )
    recipe = load_recipe(path)
    assert recipe.rules == {"nn.Conv2d": {"*": ConvRule(channels_ratio=[0.5, 1.0], channel_divisor=8), "head": None}}
    assert recipe.search.constraints == {"flops": "60%"}
    assert recipe.input.shape == [1, 3, 32, 32]


def test_overrides_merge_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "search: {constraints: {flops: 60%}, seed: 1}\ninput: {shape: [1, 3, 32, 32]}\n")
    recipe = load_recipe(path, {"search": {"constraints": {"params": "5M"}}, "input": {"shape": [1, 3, 8, 8]}})
    assert recipe.search.constraints == {"flops": "60%", "params": "5M"}
    assert recipe.search.seed == 1
    assert recipe.input.shape == [1, 3, 8, 8]
    assert load_recipe(None, {"search": {"seed": 7}}).search.seed == 7


BAD_RECIPES = [
    (
        "rules:\n  nn.Conv2d:\n    '*': {channels_ratio: [0.5, 0.7, 1, 1.5]}\n",
        "x.yaml: rules.nn.Conv2d.*.channels_ratio[3]: must be in (0, 1] (got 1.5)",
    ),
    (
        "rules:\n  nn.Conv2d: {channels_ratio: [0.0]}\n",
        "x.yaml: rules.nn.Conv2d.channels_ratio[0]: must be in (0, 1] (got 0.0)",
    ),
    (
        "rules:\n  nn.Conv2d:\n    '*': {chanels_ratio: [0.5]}\n",
        "x.yaml: rules.nn.Conv2d.*.chanels_ratio: unknown key (expected one of channel_divisor, channels_ratio, "
        "kernel_size)",
    ),
    (
        "rules:\n  nn.Conv2d: {chanels_ratio: [0.5]}\n",
        "x.yaml: rules.nn.Conv2d.chanels_ratio: unknown key (expected one of channel_divisor, channels_ratio, "
        "kernel_size)",
    ),
    (
        "rules:\n  nn.Linear:\n    'fc*': {feature_divisor: 0}\n",
        "x.yaml: rules.nn.Linear.fc*.feature_divisor: must be >= 1 (got 0)",
    ),
    ("rules:\n  nn.Conv2d: {channel_divisor: 0}\n", "x.yaml: rules.nn.Conv2d.channel_divisor: must be >= 1 (got 0)"),
    (
        "rules:\n  nn.Conv2d: {channels_ratio: abc}\n",
        "x.yaml: rules.nn.Conv2d.channels_ratio: expected a list of numbers (got 'abc')",
    ),
    (
        "rules:\n  nn.Conv2d: {channels_ratio: [0.5, x]}\n",
        "x.yaml: rules.nn.Conv2d.channels_ratio[1]: expected a number (got 'x')",
    ),
    (
        "rules:\n  nn.Conv2d: {kernel_size: [3, 4]}\n",
        "x.yaml: rules.nn.Conv2d.kernel_size[1]: must be an odd positive integer (got 4)",
    ),
    (
        "rules:\n  nn.Conv2d: {channel_divisor: 8.5}\n",
        "x.yaml: rules.nn.Conv2d.channel_divisor: expected an integer (got 8.5)",
    ),
    ("rules:\n  nn.Sequential: {min_depth: -1}\n", "x.yaml: rules.nn.Sequential.min_depth: must be >= 0 (got -1)"),
    ("rules:\n  nn.Conv4d: {}\n", "x.yaml: rules.nn.Conv4d: unknown module type (expected one of nn.Conv1d, nn.Conv2d"),
    (
        "rules:\n  nn.Conv2d: 5\n",
        "x.yaml: rules.nn.Conv2d: expected a rule config, a mapping of glob pattern -> config, or null (got 5)",
    ),
    ("rules:\n  nn.Conv2d:\n    'a*': [0.5]\n    'b*': {}\n", "x.yaml: rules.nn.Conv2d.a*: unknown key"),
    ("mode: turbo\n", "x.yaml: mode: expected one of 'fastnas', 'autonas' (got 'turbo')"),
    ("version: 2\n", "x.yaml: version: expected one of 1 (got 2)"),
    (
        "rulez: {}\n",
        "x.yaml: rulez: unknown key "
        "(expected one of defaults, description, extends, input, mode, plugins, rules, search, version)",
    ),
    (
        "search: {constraints: {flops: 160%}}\n",
        "x.yaml: search.constraints.flops: percentage must be in (0%, 100%] (got '160%')",
    ),
    (
        "search: {constraints: {memory: 5}}\n",
        "x.yaml: search.constraints.memory: unknown constraint (expected one of flops, params, latency)",
    ),
    (
        "search: {searcher: evol}\n",
        "x.yaml: search.searcher: expected one of 'binary', 'evolve', 'random' (got 'evol')",
    ),
    ("search: {mutation_prob: 2}\n", "x.yaml: search.mutation_prob: must be <= 1.0 (got 2)"),
    (
        "search: {population_size: 4, candidate_size: 5}\n",
        "x.yaml: search.candidate_size: must be <= search.population_size (4): lower candidate_size or raise "
        "population_size (got 5)",
    ),
    ("search: {iters: 5}\n", "x.yaml: search.iters: unknown key (expected one of candidate_size, checkpoint"),
    ("input: {shape: [1, 3, x]}\n", "x.yaml: input.shape: expected a list of positive integers"),
    ("input: {dtype: float64}\n", "x.yaml: input.dtype: expected one of 'float32', 'float16', 'bfloat16', 'int64'"),
    ("- 1\n- 2\n", "x.yaml: expected a mapping of recipe sections at the top level (got [1, 2])"),
]


@pytest.mark.parametrize(("text", "message"), BAD_RECIPES, ids=[m.split(": ")[1] for _, m in BAD_RECIPES])
def test_bad_recipe_names_file_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=re.escape(f"{tmp_path}/{message}")) as info:
        load_recipe(path)
    assert "\n" not in str(info.value)


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  nn.Conv2d: {channels_ratio: [0.5\n")
    with pytest.raises(RecipeError, match=re.escape(f"{path}: line ") + r"\d+, column \d+: invalid YAML: "):
        load_recipe(path)


def test_unquoted_star_pattern_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  nn.Conv2d:\n    *: {}\n")
    with pytest.raises(RecipeError, match=r"line 3, column \d+: invalid YAML: .*quote glob patterns"):
        load_recipe(path)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  nn.Conv2d:\n    'a*': {}\n    'a*': null\n")
    with pytest.raises(RecipeError, match=re.escape(f"{path}: line 4, column 5: invalid YAML: duplicate key 'a*'")):
        load_recipe(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=re.escape(f"{tmp_path}/nope.yaml: file not found")):
        load_recipe(tmp_path / "nope.yaml")


def test_several_problems_are_counted_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: turbo\nsearch: {seed: x, iterations: 0}\n")
    with pytest.raises(RecipeError, match=r"\(and 2 more problems\)$"):
        load_recipe(path)


def test_bad_override_is_reported_with_its_key_path() -> None:
    with pytest.raises(RecipeError, match=re.escape("overrides: input.shape: expected a list of positive integers")):
        load_recipe(None, {"input": {"shape": [1, 0]}})


def test_an_error_names_where_the_bad_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "search: {seed: 1, searcher: evol}\n")
    with pytest.raises(RecipeError, match=re.escape(f"{path}: search.searcher: expected one of")):
        load_recipe(path, {"search": {"seed": 2}}, "command line")  # the bad value is the file's
    good = write(tmp_path, "search: {seed: 1}\n", "good.yaml")
    with pytest.raises(RecipeError, match=r"^command line: search\.searcher: expected one of .* \(got 'evol'\)$"):
        load_recipe(good, {"search": {"searcher": "evol"}}, "command line")
