"""Whole numbers written by users, read strictly.

`str.isdigit()` and `int()` take far more than "0"-"9": superscripts ("³") pass isdigit and then
fail int() (a 500), other scripts' digits ("٣٦٠٠") quietly become numbers, and int() refuses
more than 4,300 digits. A number from outside is ASCII digits or it is not a number.
"""

from __future__ import annotations

import re

_ASCII_DIGITS = re.compile(r"[0-9]+")


def is_whole(text: str) -> bool:
    """True when `text` is one or more ASCII digits and nothing else."""
    return _ASCII_DIGITS.fullmatch(text) is not None


def whole_number(text: str, at_most: int) -> int | None:
    """The value of `text` when it is only ASCII digits and at most `at_most`, else None."""
    if not is_whole(text):
        return None
    # Compare lengths first: int() of a very long string is slow, then refused outright.
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(at_most)):
        return None
    value = int(significant)
    return value if value <= at_most else None
