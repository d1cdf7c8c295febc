"""Composable recipes: `defaults`, `extends` (shipped name, relative path, chains, cycles), `--set` and their order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasprune_cli.errors import RecipeError
from nasprune_cli.recipe.files import SHIPPED_DIR, shipped_names
from nasprune_cli.recipe.load import load_recipe, recipe_from_dict, recipe_to_dict
from nasprune_cli.recipe.schema import FASTNAS_TYPES, ConvRule, default_keys, default_rules

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def divisors(recipe: object, type_name: str) -> dict[str, int | None]:
    return {p: None if r is None else r.divisor for p, r in recipe.rules_table()[type_name].items()}  # type: ignore[attr-defined]


# ---- shipped recipes --------------------------------------------------------------------------------------------
def test_recipes_dir_is_the_shipped_dir() -> None:
    assert (ROOT / "recipes").resolve() == SHIPPED_DIR
    assert shipped_names() == ["autonas", "demo", "fastnas"]


def test_shipped_fastnas_is_the_fastnas_defaults() -> None:
    fast = load_recipe("fastnas")  # a shipped recipe's name where no such file exists
    assert fast.rules == default_rules("fastnas")
    assert recipe_to_dict(fast) == recipe_to_dict(load_recipe(ROOT / "recipes" / "fastnas.yaml"))


# ---- defaults -----------------------------------------------------------------------------------------------------
def test_defaults_fill_rules_that_do_not_set_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "defaults: {channel_divisor: 8, features_ratio: [0.5, 1.0]}\n"
        "rules:\n"
        "  nn.Conv2d: {'*': {}, 'stem*': {channel_divisor: 16}, 'head': null}\n"
        "  nn.BatchNorm2d: {}\n  nn.GroupNorm: {}\n  nn.Linear: {feature_divisor: 4}\n",
    )
    recipe = load_recipe(path)
    assert divisors(recipe, "nn.Conv2d") == {"*": 8, "stem*": 16, "head": None}
    assert divisors(recipe, "nn.GroupNorm") == {"*": 8}  # channel_divisor: convs and group norms
    assert divisors(recipe, "nn.BatchNorm2d") == {"*": 32}  # feature_divisor is not set
    assert recipe.rules_table()["nn.BatchNorm2d"]["*"].ratios == [0.5, 1.0]
    linear = recipe.rules_table()["nn.Linear"]["*"]
    assert linear.divisor == 4 and linear.ratios == [0.5, 1.0]


def test_defaults_apply_to_the_mode_rules_without_a_rules_section(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "mode: autonas\ndefaults: {divisor: 8, min_depth: 2}\n"))
    table = recipe.rules_table()
    assert {name: next(iter(table[name].values())).divisor for name in FASTNAS_TYPES if "Conv" in name} == {
        name: 8 for name in FASTNAS_TYPES if "Conv" in name
    }
    assert table["nn.Linear"]["*"].divisor == 8 and table["nn.Sequential"]["*"].min_depth == 2
    # the checkpoint dict holds the effective rules, so a stored recipe rebuilds the same space
    assert recipe_from_dict(recipe_to_dict(recipe)).rules_table() == table


def test_a_field_named_itself_wins_over_divisor_and_ratio(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "defaults: {divisor: 8, channel_divisor: 16, ratio: [1.0]}\n"))
    table = recipe.rules_table()
    assert table["nn.Conv2d"]["*"].divisor == 16 and table["nn.Linear"]["*"].divisor == 8
    assert table["nn.Conv2d"]["*"].ratios == [1.0] == table["nn.LayerNorm"]["*"].ratios


def test_recipes_without_defaults_keep_their_dict() -> None:
    assert "defaults" not in recipe_to_dict(load_recipe(None))
    assert recipe_to_dict(load_recipe(None))["rules"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {chanel_divisor: 8}\n", "defaults.chanel_divisor: unknown key (expected one of "),
        ("defaults: {channel_divisor: 0}\n", "defaults.channel_divisor: must be >= 1 (got 0)"),
        ("defaults: {divisor: eight}\n", "defaults.divisor: expected an integer (got 'eight')"),
        ("defaults: {ratio: [0.5, 1.5]}\n", "defaults.ratio[1]: must be in (0, 1] (got 1.5)"),
        ("defaults: {skippable: sometimes}\n", "defaults.skippable: expected one of 'trailing', 'blocks'"),
        ("defaults: [8]\n", "defaults: expected a mapping"),
    ],
)
def test_bad_defaults_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=re.escape(f"{path}: {message}")):
        load_recipe(path)


def test_unknown_default_lists_every_key(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, "defaults: {depth: 2}\n"))
    assert str(info.value).endswith(f"defaults.depth: unknown key (expected one of {', '.join(default_keys())})")
    assert {"divisor", "ratio", "channel_divisor", "feature_divisor", "min_heads"} <= set(default_keys())


# ---- extends ------------------------------------------------------------------------------------------------------
def test_extends_a_shipped_recipe_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "extends: fastnas\ndefaults: {channel_divisor: 8}\nsearch: {fill: false}\n")
    recipe = load_recipe(path)
    assert divisors(recipe, "nn.Conv2d") == {"*": 8} and divisors(recipe, "nn.BatchNorm2d") == {"*": 32}
    assert recipe.search.fill is False and recipe.search.searcher == "binary"  # the rest is fastnas's
    assert set(recipe.rules_table()) == set(load_recipe("fastnas").rules_table())


def test_extends_a_relative_path_and_a_chain(tmp_path: Path) -> None:
    write(tmp_path, "mode: autonas\nsearch: {seed: 1, iterations: 7}\nrules:\n  nn.Conv2d: {'*': {}}\n", "base/a.yaml")
    write(tmp_path, "extends: a.yaml\nsearch: {seed: 2}\nrules:\n  nn.Conv2d: {channel_divisor: 4}\n", "base/b.yaml")
    top = write(tmp_path, "extends: base/b.yaml\nsearch: {seed: 3, constraints: {flops: 50%}}\n", "c.yaml")
    recipe = load_recipe(top)
    assert recipe.mode == "autonas" and recipe.search.iterations == 7 and recipe.search.seed == 3
    assert recipe.search.constraints == {"flops": "50%"}
    assert divisors(recipe, "nn.Conv2d") == {"*": 4}  # an unnested config merges into the "*" pattern


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(
        tmp_path,
        "rules:\n  nn.Conv2d: {'*': {channels_ratio: [0.5, 1.0]}, 'stem': null}\ninput: {shape: [1, 3, 8, 8]}\n",
        "a.yaml",
    )
    top = write(
        tmp_path, "extends: a.yaml\nrules:\n  nn.Conv2d: {'*': {channels_ratio: [1.0]}}\ninput: {dtype: float16}\n"
    )
    recipe = load_recipe(top)
    assert recipe.rules_table()["nn.Conv2d"]["*"].ratios == [1.0]
    assert recipe.rules_table()["nn.Conv2d"]["stem"] is None
    assert recipe.input.shape == [1, 3, 8, 8] and recipe.input.dtype == "float16"


def test_an_error_in_an_extended_file_names_that_file(tmp_path: Path) -> None:
    base = write(tmp_path, "search: {fill: maybe}\n", "a.yaml")
    with pytest.raises(RecipeError, match=re.escape(f"{base}: search.fill: expected true or false (got 'maybe')")):
        load_recipe(write(tmp_path, "extends: a.yaml\nsearch: {seed: 1}\n"))


def test_extends_cycle_names_the_files(tmp_path: Path) -> None:
    a = write(tmp_path, "extends: b.yaml\n", "a.yaml")
    b = write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(RecipeError, match=re.escape(f"extends: cycle: {a} -> {b} -> {a}")):
        load_recipe(a)
    with pytest.raises(RecipeError, match="extends: cycle: "):
        load_recipe(write(tmp_path, "extends: self.yaml\n", "self.yaml"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.yaml", "extends: missing.yaml: file not found (looked for {dir}/missing.yaml)"),
        (
            "fastnas.yaml",
            "extends: fastnas.yaml: file not found (looked for {dir}/fastnas.yaml); a shipped recipe is named without "
            ".yaml (extends: fastnas)",
        ),
        ("fastnsa", "extends: unknown shipped recipe 'fastnsa' (expected one of autonas, demo, fastnas"),
        ("3", "extends: expected the name of a shipped recipe or a path relative to this file (got 3)"),
    ],
)
def test_bad_extends(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"extends: {value}\n")
    with pytest.raises(RecipeError, match=re.escape(f"{path}: {message.format(dir=tmp_path)}")):
        load_recipe(path)


# ---- the order: shipped < extends < file < --set < flags ------------------------------------------------------------
def test_merge_order(tmp_path: Path) -> None:
    write(tmp_path, "extends: autonas\nsearch: {seed: 1, iterations: 1, population_size: 1}\n", "base.yaml")
    path = write(tmp_path, "extends: base.yaml\nsearch: {iterations: 2, population_size: 2}\n")
    sets = ["search.population_size=3", "search.max_batches=3"]
    recipe = load_recipe(path, {"search": {"max_batches": 4}}, "command line", sets=sets)
    s = recipe.search
    assert (s.searcher, s.seed, s.iterations, s.population_size, s.max_batches) == ("evolve", 1, 2, 3, 4)
    # a later --set wins over an earlier one
    assert load_recipe(path, sets=["search.seed=5", "search.seed=6"]).search.seed == 6


def test_set_rules_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  nn.Conv2d: {channel_divisor: 16}\n  nn.Linear: {}\n")
    sets = [
        "rules.nn.Conv2d.*.channel_divisor=8",
        "rules.nn.Conv2d.layer1.*.channel_divisor=4",  # a glob pattern with dots
        "rules.nn.Conv2d.stem=null",
        "rules.nn.Linear.features_ratio=[0.5, 1.0]",  # no pattern: "*"
        "rules.nn.BatchNorm2d={}",
    ]
    recipe = load_recipe(path, sets=sets)
    assert divisors(recipe, "nn.Conv2d") == {"*": 8, "layer1.*": 4, "stem": None}
    assert recipe.rules_table()["nn.Linear"]["*"].ratios == [0.5, 1.0]
    assert recipe.rules_table()["nn.BatchNorm2d"]["*"].divisor == 32


def test_set_values_are_yaml(tmp_path: Path) -> None:
    sets = ["search.constraints={flops: 60%}", "search.checkpoint=", "input.shape=[1, 3, 32, 32]", "defaults.divisor=8"]
    recipe = load_recipe(None, sets=sets)
    assert recipe.search.constraints == {"flops": "60%"} and recipe.search.checkpoint is None
    assert recipe.input.shape == [1, 3, 32, 32] and recipe.rules_table()["nn.Conv2d"]["*"] == ConvRule(
        channel_divisor=8
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("search.fill", "--set search.fill: expected KEY=VALUE, e.g. --set search.fill=false"),
        ("=3", "--set =3: empty key; expected KEY=VALUE"),
        (" =3", "--set  =3: empty key"),
        ("search..fill=1", "--set search..fill=1: search..fill: empty part in the key"),
        ("search.fil=1", "--set search.fil=1: search.fil: unknown key (expected one of candidate_size, "),
        ("serch.fill=1", "--set serch.fill=1: serch: unknown key (expected one of defaults, "),
        ("defaults.depth=1", "--set defaults.depth=1: defaults.depth: unknown key (expected one of channel_divisor, "),
        ("rules.nn.Conv9d.x=1", "--set rules.nn.Conv9d.x=1: rules.nn.Conv9d.x: unknown module type (expected rules."),
        (
            "rules.nn.Conv2d.*.chanel_divisor=8",
            "--set rules.nn.Conv2d.*.chanel_divisor=8: rules.nn.Conv2d.*.chanel_divisor: unknown key 'chanel_divisor' "
            "(expected one of channel_divisor, channels_ratio, kernel_size, after an optional glob pattern",
        ),
        ("search.fill=yes", "--set search.fill=yes: search.fill: expected true or false (got 'yes')"),
        ("search.seed=[1", "--set search.seed=[1: search.seed: line 1, column 3: invalid YAML"),
        ("rules.nn.Conv2d.channel_divisor=0", "--set rules.nn.Conv2d.channel_divisor=0: rules.nn.Conv2d.*.channel_"),
        ("search.fill.x=1", "--set search.fill.x=1: search.fill: is true, not a mapping; set search.fill itself"),
        ("input.shape.0=1", "--set input.shape.0=1: input.shape: is a list; set input.shape itself"),
        ("extends=fastnas", "--set extends=fastnas: extends: cannot be set with --set"),
    ],
)
def test_set_errors_name_the_flag(tmp_path: Path, item: str, message: str) -> None:
    path = write(tmp_path, "search: {fill: true}\ninput: {shape: [1, 3, 8, 8]}\n")
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path, sets=[item])


def test_a_flag_error_names_the_command_line_not_the_set(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=re.escape("command line: search.seed: expected an integer")):
        load_recipe(None, {"search": {"seed": "x"}}, "command line", sets=["search.seed=1"])


# ---- a recipe written in Python (search(config={"recipe": {...}})) ---------------------------------------------------
def test_a_dict_recipe_extends_a_shipped_recipe_with_defaults() -> None:
    recipe = recipe_from_dict({"extends": "fastnas", "defaults": {"channel_divisor": 8}})
    assert divisors(recipe, "nn.Conv2d") == {"*": 8}
    assert recipe.search == load_recipe("fastnas").search


def test_a_dict_recipe_extends_a_file_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "mode: autonas\nsearch: {iterations: 7}\n", "base.yaml")
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict({"extends": "base.yaml", "search": {"population_size": 3}})
    assert recipe.mode == "autonas"
    assert (recipe.search.iterations, recipe.search.population_size) == (7, 3)


def test_a_dict_recipe_error_names_the_layer_that_gave_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "search: {iterations: many}\n", "base.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"base\.yaml: search\.iterations: expected an integer"):
        recipe_from_dict({"extends": "base.yaml"}, "search config: recipe")
    with pytest.raises(RecipeError, match=r"^search config: recipe: extends: nope\.yaml: file not found"):
        recipe_from_dict({"extends": "nope.yaml"}, "search config: recipe")
