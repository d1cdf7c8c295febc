"""`nasprune recipe show|check`: print a recipe fully resolved (extends, defaults, --set) or only validate it."""

from __future__ import annotations

from typing import Annotated

import typer

from nasprune_cli.cli import output
from nasprune_cli.cli.options import SetOpt

RecipeArg = Annotated[
    str,
    typer.Argument(
        metavar="RECIPE",
        help="Recipe YAML file, or the name of a shipped recipe: fastnas, autonas, demo.",
        show_default=False,
    ),
]

recipe_app = typer.Typer(
    name="recipe",
    help="Show a recipe fully resolved, or check one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@recipe_app.command("show")
def show_command(recipe: RecipeArg, sets: SetOpt = None) -> None:
    """Print the recipe as YAML with `extends` merged, `defaults` applied to every rule and --set applied."""
    import yaml

    from nasprune_cli.recipe.load import load_recipe, recipe_to_dict

    data = recipe_to_dict(load_recipe(recipe, sets=sets or ()), effective_rules=True)
    data = {key: data[key] for key in ("version", "mode", "description", "rules")} | data  # the file's order
    output.print_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120).rstrip("\n"))


@recipe_app.command("check")
def check_command(recipe: RecipeArg, sets: SetOpt = None) -> None:
    """Validate the recipe (and its extends chain): exit 0 with one OK line on stderr, else the error and exit 1."""
    from nasprune_cli.recipe.load import load_recipe

    loaded = load_recipe(recipe, sets=sets or ())
    types = len(loaded.rules_table())
    output.info(f"{recipe}: OK ({loaded.mode}, rules for {types} module type{'s' if types != 1 else ''})")


def register(app: typer.Typer) -> None:
    """Add the `recipe` command group (show, check) to the app."""
    app.add_typer(recipe_app, name="recipe")
