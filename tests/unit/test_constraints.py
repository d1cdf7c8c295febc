"""Budgets: absolute numbers, SI suffixes and percentages of the original, and the fit check."""

from __future__ import annotations

import pytest

from nasprune_cli.constraints import Cost, parse_constraint, parse_constraints, satisfies
from nasprune_cli.errors import NasPruneError

ORIGINAL = Cost(flops=2.0e9, params=1.0e7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("60%", 1.2e9),
        (" 12.5 % ", 2.5e8),
        ("100%", 2.0e9),
        ("450M", 4.5e8),
        ("450m", 4.5e8),
        ("4.5e8", 4.5e8),
        ("1.5G", 1.5e9),
        ("2k", 2000.0),
        ("3T", 3e12),
        ("5e6", 5e6),
        (4.5e8, 4.5e8),
        (1000, 1000.0),
    ],
)
def test_budgets_become_absolute_upper_bounds(value: str | float, expected: float) -> None:
    assert parse_constraint("flops", value, ORIGINAL.flops) == pytest.approx(expected)


def test_percentages_are_of_each_figure_own_original() -> None:
    bounds = parse_constraints({"flops": "50%", "params": "10%", "ignored": None}, ORIGINAL)
    assert bounds == {"flops": pytest.approx(1.0e9), "params": pytest.approx(1.0e6)}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("flops", "0%", r"constraint 'flops': percentage must be in \(0%, 100%\] \(got '0%'\)"),
        ("flops", "160%", r"percentage must be in \(0%, 100%\] \(got '160%'\)"),
        ("flops", "lots", r"expected a number \(4\.5e8, 450M\) or a percentage \('60%'\) \(got 'lots'\)"),
        ("flops", "-5", r"expected a number .* \(got '-5'\)"),
        ("flops", 0, r"must be a positive finite number \(got 0\)"),
        ("flops", float("inf"), r"must be a positive finite number \(got inf\)"),
        ("params", True, r"constraint 'params': expected a number or a percentage such as '60%' \(got True\)"),
        ("memory", "5", r"constraint 'memory': unknown \(expected one of flops, params, latency\)"),
    ],
)
def test_bad_budgets_name_the_constraint_and_the_value(name: str, value: object, message: str) -> None:
    with pytest.raises(NasPruneError, match=message):
        parse_constraint(name, value, 1.0)  # type: ignore[arg-type]


def test_satisfies_checks_every_bound() -> None:
    cost = Cost(flops=1.0e9, params=5.0e6)
    assert satisfies(cost, {"flops": 1.0e9})  # the bound itself fits
    assert satisfies(cost, {})
    assert not satisfies(cost, {"flops": 2.0e9, "params": 4.9e6})
