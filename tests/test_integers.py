"""The one integer parser of user input (ltbench.integers): ASCII digits, int64-bounded."""

from __future__ import annotations

import pytest

from ltbench.errors import BadInput
from ltbench.integers import INT64_MAX, INT64_MIN, parse_int, parse_int_list


@pytest.mark.parametrize("text, value", [
    ("0", 0), (" 7 ", 7), ("+3", 3), ("-12", -12), ("007", 7),
    ("9223372036854775807", INT64_MAX), ("-9223372036854775808", INT64_MIN),
    ("0" * 30 + "5", 5),  # leading zeros are not magnitude
])
def test_integers_in_ascii_digits_parse(text, value):
    assert parse_int(text, "n") == value


@pytest.mark.parametrize("text, message", [
    ("²", "n '²' is not an integer"),  # str.isdigit() is true, int() refuses it
    ("١٢", "n '١٢' is not an integer"),  # int() would read 12
    ("1_000", "n '1_000' is not an integer"),  # int() would read 1000
    ("1.0", "n '1.0' is not an integer"),
    ("", "n '' is not an integer"),
    ("-", "n '-' is not an integer"),
    ("--1", "n '--1' is not an integer"),
    ("9223372036854775808", "n must be at most 9223372036854775807, got 9223372036854775808"),
    ("-9223372036854775809", "n must be at least -9223372036854775808"),
    ("9" * 5000, "n must be at most 9223372036854775807, got 99999999999999999999…99999999 "
                 "(5000 characters)"),  # int() refuses more than 4300 digits
    ("-" + "9" * 5000, "n must be at least -9223372036854775808"),
])
def test_other_text_is_one_line_bad_input(text, message):
    with pytest.raises(BadInput) as info:
        parse_int(text, "n")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_bounds_are_inclusive():
    assert parse_int("1", "n", least=1, most=1) == 1
    with pytest.raises(BadInput, match="^n must be at least 1, got 0$"):
        parse_int("0", "n", least=1)
    with pytest.raises(BadInput, match="^n must be at most 6, got 7$"):
        parse_int("7", "n", most=6)


def test_lists_are_non_negative_deduplicated_in_order():
    assert parse_int_list("3, 1,,3,0", "seed") == [3, 1, 0]
    with pytest.raises(BadInput, match="^seed must be at least 0, got -1$"):
        parse_int_list("1,-1", "seed")
    with pytest.raises(BadInput, match="^no seed in ' , '$"):
        parse_int_list(" , ", "seed")
