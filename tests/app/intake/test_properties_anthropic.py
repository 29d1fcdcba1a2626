"""A property test of the Anthropic face (POST /v1/messages/batches), on SQLite and PostgreSQL:
custom_id, params.model and the types of every param the translation reads drawn at and past
their documented limits. Never a 5xx; a refusal is a 4xx in Anthropic's error shape and keeps
nothing (no row, no spooled body under DATA_DIR); what must be taken is taken (issue 24)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from app.core.dropin.anthropic import CUSTOM_ID
from app.core.intake.schema import MODEL_MAX_CHARS
from testkit import StartApp, fast_settings
from testkit.properties import (
    EXAMPLES,
    TABLES,
    Drawn,
    Field,
    anthropic_refusal,
    anything,
    choices,
    kept_files,
    not_text,
    one_fault,
    row_counts,
    run_examples,
    sized,
    text_field,
    verdict,
)

MISSING = object()  # a param left out

TEXT_BLOCK = {"type": "text", "text": "hi"}
PARAMS: dict[str, list[tuple[Any, bool]]] = {
    "max_tokens": [
        *[(1, True), (4096, True)],
        *[(bad, False) for bad in (0, -1, True, 1.5, "5", None, MISSING)],
    ],
    "messages": [
        ([{"role": "user", "content": "hi"}], True),
        ([{"role": "user", "content": [TEXT_BLOCK]}, {"role": "assistant", "content": "ok"}], True),
        ([{"role": "user", "content": [{"type": "image", "source": {}}]}], True),  # refused when run
        ([], True),
        *[(bad, False) for bad in ("hi", ["hi"], [None], {"role": "user"}, 5, MISSING)],
        *[([{"role": "user", "content": bad}], False) for bad in (5, None, [5], [{"text": "x"}], {"a": 1})],
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], False),
        ([{"role": "bot", "content": "x"}], False),
        ([{"content": "x"}], False),
        ([{"role": "user"}], False),
    ],
    "system": [
        *[(good, True) for good in (MISSING, None, "be brief", [TEXT_BLOCK])],
        *[(bad, False) for bad in (5, ["x"], {"type": "text"}, [{"type": 1}])],
    ],
    "metadata": [
        *[(good, True) for good in (MISSING, None, {}, {"user_id": "u"}, {"user_id": None})],
        *[(bad, False) for bad in ("oops", {"user_id": 5}, [1])],
    ],
    "stop_sequences": [(MISSING, True), (["\n"], True), ("stop", False), ([1], False)],
    "temperature": [(MISSING, True), (0.5, True), (1, True), ("hot", False), (True, False)],
    "top_k": [(MISSING, True), (5, True), (0, True), (-1, False), (1.5, False), (False, False)],
}


def anthropic_id(value: Any) -> Drawn:
    return Drawn(value, isinstance(value, str) and CUSTOM_ID.fullmatch(value) is not None)


ENTRY: dict[str, Field] = {
    "custom_id": (
        sized(64, ("a", "Z", "0", "_", "-"), within=True),
        sized(64, ("a", "Z", "0", "_", "-"))
        | st.text(max_size=70).map(anthropic_id)
        | st.sampled_from(["a b", "é", "a\x00", "a.b"]).map(anthropic_id)
        | not_text(),
    ),
    "model": text_field(MODEL_MAX_CHARS),
    **{name: choices(values) for name, values in PARAMS.items()},
    "unknown": (st.just(Drawn(MISSING, True)), anything().map(lambda v: Drawn(v, True))),  # dropped
}


@st.composite
def request_lists(draw: st.DrawFn) -> tuple[list[Any], bool | None]:
    """1 to 3 entries, at most one of them with a fault (or a freely drawn one, or not an entry
    at all), and whether the list must be taken."""
    count = draw(st.integers(1, 3))
    faulty = draw(st.integers(0, count - 1))
    listed, verdicts, ids = [], [], []
    for index in range(count):
        if index == faulty:
            fields = draw(one_fault(ENTRY))
        else:  # a good entry, whose custom_id is not one already used
            fields = {n: draw(good) for n, (good, _) in ENTRY.items()}
            fields["custom_id"] = draw(ENTRY["custom_id"][0].filter(lambda d: json.dumps(d.value) not in ids))
        custom_id = fields.pop("custom_id")
        params = {"x_unknown_param" if n == "unknown" else n: d.value for n, d in fields.items()}
        entry: Any = {
            "custom_id": custom_id.value,
            "params": {k: v for k, v in params.items() if v is not MISSING},
        }
        verdicts.append(verdict(custom_id, *fields.values()))
        if index == faulty and draw(st.integers(0, 9)) == 0:
            entry = draw(anything())  # not an entry at all
            verdicts[-1] = False
        listed.append(entry)
        ids.append(json.dumps(custom_id.value))
    if len(set(ids)) < len(ids):
        verdicts.append(False)  # a custom_id used twice
    return listed, verdict(*(Drawn(None, v) for v in verdicts))


async def test_the_anthropic_face_never_answers_5xx_and_keeps_nothing_it_refuses(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:

        async def check(drawn: tuple[list[Any], bool | None]) -> None:
            listed, expected = drawn
            before, files = await row_counts(app, *TABLES), kept_files(app)
            answer = await app.client.post(
                "/v1/messages/batches",
                content=json.dumps({"requests": listed}),
                headers={"content-type": "application/json"},
            )
            after = await row_counts(app, *TABLES)
            assert kept_files(app) == files  # the spooled body is gone, whatever the answer
            if answer.status_code == 200:
                assert expected is not False, (listed, answer.text)
                assert after["batches"] == before["batches"] + 1
                assert after["requests"] == before["requests"] + len(listed)
            else:
                anthropic_refusal(answer)
                assert expected is not True, (listed, answer.text)
                assert after == before

        await run_examples(request_lists(), check, EXAMPLES)
