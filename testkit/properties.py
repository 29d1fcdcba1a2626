"""Property tests against the app served for real: hypothesis draws inputs at and past every
limit a face documents, and each example is sent to one app, served once per test.

Hypothesis runs a plain function, so it runs in a thread while the test's event loop keeps
serving the app; each example's checks are handed back to that loop and awaited there. Examples
are derandomized (the same ones every run, on both databases) and bounded in number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.db.models import Batch, File, Request
from testkit.apps import RunningApp

T = TypeVar("T")
# Each example is two to four HTTP calls: this many keep a test within a few seconds.
EXAMPLES = 120
TABLES = (File, Batch, Request)  # nothing of a refused input may be left in these
# One to four bytes of UTF-8 each: a limit counts characters, not bytes.
PLAIN = ("a", "b", "Z", "é", "ж", "日", "😀")
# Any character, lone surrogates and NUL included (what a JSON \u escape can carry).
ANY_CHAR = st.characters(codec=None, categories=None)


@dataclass(frozen=True)
class Drawn:
    """A drawn value and what the face must do with it: True (take it), False (refuse it) or
    None (either; only the answer's shape and what is kept are checked)."""

    value: Any
    valid: bool | None


def sized(
    limit: int, chars: tuple[str, ...] = PLAIN, at_least: int = 1, within: bool = False
) -> st.SearchStrategy[Drawn]:
    """Text of `chars`, at and around the limits `at_least` and `limit` (only the sizes within
    them when `within`)."""
    # Each limit and one past it twice: drawn from a list, they come up more often.
    sizes = [*{max(at_least - 1, 0), at_least, limit - 1, 2 * limit}, limit, limit, limit + 1, limit + 1]
    if within:
        sizes = [n for n in sizes if at_least <= n <= limit]
    return st.sampled_from(sizes).flatmap(
        lambda n: st.text(st.sampled_from(chars), min_size=n, max_size=n).map(
            lambda text: Drawn(text, at_least <= n <= limit)
        )
    )


def choices(values: list[tuple[Any, bool]]) -> tuple[st.SearchStrategy[Drawn], st.SearchStrategy[Drawn]]:
    """(the valid values, all of them) as the two strategies one_fault takes."""
    good = [Drawn(value, True) for value, valid in values if valid]
    return st.sampled_from(good), st.sampled_from([Drawn(value, valid) for value, valid in values])


Field = tuple[st.SearchStrategy[Drawn], st.SearchStrategy[Drawn]]


@st.composite
def one_fault(draw: st.DrawFn, fields: dict[str, Field]) -> dict[str, Drawn]:
    """Every field drawn from its valid values but (at most) one drawn from all of them, so that
    a refusal has one cause and each limit is met alone."""
    focus = draw(st.sampled_from([None, *fields]))
    return {name: draw(wide if focus == name else good) for name, (good, wide) in fields.items()}


def wild_text(max_size: int = 40) -> st.SearchStrategy[Drawn]:
    return st.text(ANY_CHAR, max_size=max_size).map(lambda text: Drawn(text, None))


def anything() -> st.SearchStrategy[Any]:
    """A small JSON value of any type that every database stores (no NUL, no lone surrogate)."""
    text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
    # -2**63 left out: the Anthropic face's incremental parser (yajl) refuses it as an overflow.
    numbers = st.integers(-(2**63) + 1, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        st.none() | st.booleans() | numbers | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=6,
    )


def not_text() -> st.SearchStrategy[Drawn]:
    """Any JSON value but a string (where text is required)."""
    return anything().filter(lambda v: not isinstance(v, str)).map(lambda v: Drawn(v, False))


def one_of_texts(allowed: tuple[str, ...], only_text: bool = False) -> Field:
    """One of `allowed`; or that, any text (valid only if it happens to be allowed) and, unless
    `only_text` (a form field is text), any other JSON value."""
    good = st.sampled_from(allowed).map(lambda v: Drawn(v, True))
    wide = good | st.text(ANY_CHAR, max_size=30).map(lambda v: Drawn(v, v in allowed))
    return good, wide if only_text else wide | not_text()


def text_field(limit: int) -> Field:
    """Text within 1..`limit` characters; or text at and past both ends, any text, not text."""
    return sized(limit, within=True), sized(limit) | wild_text() | not_text()


def verdict(*drawn: Drawn) -> bool | None:
    """False when any part must be refused, True when every part must be taken, else None."""
    if any(d.valid is False for d in drawn):
        return False
    return True if all(d.valid for d in drawn) else None


def check_examples(
    loop: asyncio.AbstractEventLoop,
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Awaitable[None]],
    max_examples: int,
) -> None:
    """Run `check` on each example of `strategy`, on `loop` (call this in a thread)."""

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(strategy)
    def example(drawn: T) -> None:
        asyncio.run_coroutine_threadsafe(check(drawn), loop).result(timeout=60)

    example()


async def run_examples(
    strategy: st.SearchStrategy[T], check: Callable[[T], Awaitable[None]], max_examples: int
) -> None:
    await asyncio.to_thread(check_examples, asyncio.get_running_loop(), strategy, check, max_examples)


async def row_counts(app: RunningApp, *tables: Any) -> dict[str, int]:
    """How many rows each table (a model class) holds."""
    async with app.db.transaction() as session:
        return {
            t.__tablename__: int(await session.scalar(select(func.count()).select_from(t)) or 0)
            for t in tables
        }


def kept_files(app: RunningApp) -> set[Path]:
    """Every file under DATA_DIR."""
    return {p for p in Path(app.settings.data_dir).rglob("*") if p.is_file()}


def openai_refusal(answer: Any) -> None:
    """A 4xx in OpenAI's error shape."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:500])
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert error["type"] == "invalid_request_error", error


def anthropic_refusal(answer: Any) -> None:
    """A 4xx in Anthropic's error shape."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:500])
    body = answer.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] in ("invalid_request_error", "request_too_large"), body


def native_refusal(answer: Any) -> None:
    """A 4xx in the native API's error shape (a JSON:API-like list of problems)."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:500])
    errors = answer.json()["errors"]
    assert errors and all({"code", "title", "detail"} <= set(e) for e in errors), errors
