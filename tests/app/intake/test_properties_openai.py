"""A property test of the OpenAI face (POST /v1/files, then POST /v1/batches), on SQLite and
PostgreSQL: purpose, filename, expires_after, the input file's lines (custom_id, body.model,
url), endpoint, completion_window and metadata drawn at and past their documented limits. Never
a 5xx; a refusal is a 4xx in OpenAI's error shape and keeps nothing (no row, no file under
DATA_DIR); a bad line fails the batch with no requests; what must be taken is taken (issue 24)."""

from __future__ import annotations

import json
import re

from hypothesis import strategies as st

from app.core.intake.schema import CUSTOM_ID_MAX_CHARS, ENDPOINTS, MODEL_MAX_CHARS
from testkit import RunningApp, StartApp, fast_settings
from testkit.properties import (
    EXAMPLES,
    TABLES,
    Drawn,
    Field,
    choices,
    kept_files,
    one_fault,
    one_of_texts,
    openai_refusal,
    row_counts,
    run_examples,
    sized,
    text_field,
    verdict,
    wild_text,
)

PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals")

EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 24 * 3600
BOUNDARY = "bg-property-7f3a9c"


def expires_valid(anchor: str | None, seconds: str | None) -> bool:
    if anchor is None and seconds is None:
        return True
    if anchor != "created_at" or seconds is None or not re.fullmatch("[0-9]+", seconds):
        return False
    return len(seconds.lstrip("0")) <= 8 and EXPIRES_MIN <= int(seconds) <= EXPIRES_MAX


def expires(anchor: str | None, seconds: str | None) -> Drawn:
    return Drawn((anchor, seconds), expires_valid(anchor, seconds))


SECONDS = st.sampled_from(
    [str(n) for n in (0, EXPIRES_MIN - 1, EXPIRES_MIN, EXPIRES_MAX, EXPIRES_MAX + 1, 10**20)]
    + ["³⁶⁰⁰", "٣٦٠٠", "\uff13\uff16\uff10\uff10", "1" * 4301, "9" * 5000, "3600 ", "+3600", "", "0003600"]
)
EXPIRES: Field = (
    st.sampled_from([expires(None, None), expires("created_at", "3600"), expires("created_at", "2592000")]),
    st.builds(expires, st.just("created_at"), SECONDS | st.text(max_size=12))
    | st.builds(expires, st.sampled_from([None, "expires_at"]) | st.text(max_size=12), st.none() | SECONDS),
)


def metadata_of(pairs: int, key: int, value: int) -> Drawn:
    data = {f"{i:02d}".ljust(key, "k"): "v" * value for i in range(pairs)}
    return Drawn(data, pairs <= 16 and (pairs == 0 or (key <= 64 and value <= 512)))


SOME_METADATA = [(None, True), ("oops", False), ([1], False), ({"k": 5}, False), ({"k": None}, False)]
METADATA: Field = (
    st.builds(metadata_of, st.sampled_from([0, 1, 16]), st.sampled_from([2, 64]), st.sampled_from([0, 512])),
    st.builds(
        metadata_of, st.sampled_from([0, 16, 17]), st.sampled_from([64, 65]), st.sampled_from([512, 513])
    )
    | choices(SOME_METADATA)[1],
)


@st.composite
def good_lines(draw: st.DrawFn) -> Drawn:
    """1 to 3 lines with distinct custom_ids, one model and the batch's url."""
    model = draw(sized(MODEL_MAX_CHARS, within=True)).value
    ids = draw(
        st.lists(sized(CUSTOM_ID_MAX_CHARS, within=True), min_size=1, max_size=3, unique_by=lambda d: d.value)
    )
    return Drawn([(d.value, model, True) for d in ids], True)


@st.composite
def faulty_lines(draw: st.DrawFn) -> Drawn:
    """Good lines but for one fault: one line's custom_id or url, or the model of every line
    (so that a model at its limit can be taken)."""
    lines = list(draw(good_lines()).value)
    index, which = draw(st.integers(0, len(lines) - 1)), draw(st.sampled_from(["custom_id", "model", "url"]))
    custom_id, model, _ = lines[index]
    if which == "model":
        drawn = draw(text_field(MODEL_MAX_CHARS)[1])
        return Drawn([(i, drawn.value, same) for i, _, same in lines], drawn.valid)
    if which == "url":
        lines[index] = (custom_id, model, False)
        return Drawn(lines, False)
    drawn = draw(text_field(CUSTOM_ID_MAX_CHARS)[1])
    lines[index] = (drawn.value, model, True)
    ids = [json.dumps(i) for i, _, _ in lines]
    return Drawn(lines, False if len(set(ids)) < len(ids) else drawn.valid)


PURPOSE: Field = (
    st.just(Drawn("batch", True)),
    one_of_texts(PURPOSES, True)[1] | st.just(Drawn(None, False)),
)
OPENAI = one_fault(
    {
        "purpose": PURPOSE,
        "filename": (
            sized(255, at_least=0, within=True),
            sized(255, at_least=0)
            | wild_text()
            | st.sampled_from(["a\x00b", "\x00"]).map(lambda v: Drawn(v, False)),
        ),
        "expires": EXPIRES,
        "lines": (good_lines(), faulty_lines()),
        "endpoint": one_of_texts(ENDPOINTS),
        "window": one_of_texts(("24h",)),
        "metadata": METADATA,
    }
)


def quoted(name: str) -> bytes:
    """A filename as a browser quotes it in Content-Disposition (HTML5: %22, %0D, %0A)."""
    escaped = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode("utf-8", "surrogatepass")


def form(example: dict[str, Drawn]) -> bytes:
    """The multipart upload of the example's input file, its purpose and expiry first."""
    fields = [("purpose", example["purpose"].value)]
    anchor, seconds = example["expires"].value
    fields += [("expires_after[anchor]", anchor), ("expires_after[seconds]", seconds)]
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode("utf-8", "surrogatepass")
        + b"\r\n"
        for name, value in fields
        if value is not None
    ]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
    parts.append(head + quoted(example["filename"].value) + b'"\r\n\r\n' + input_file(example) + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def input_file(example: dict[str, Drawn]) -> bytes:
    endpoint = example["endpoint"].value
    other = next(e for e in ENDPOINTS if e != endpoint)
    return b"".join(
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": endpoint if same_url else other,
                "body": {"model": model, "messages": []},
            }
        ).encode()
        + b"\n"
        for custom_id, model, same_url in example["lines"].value
    )


async def test_the_openai_face_never_answers_5xx_and_keeps_nothing_it_refuses(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:

        async def check(example: dict[str, Drawn]) -> None:
            file_id = await uploaded(app, example)
            if file_id is not None:
                await created(app, example, file_id)

        await run_examples(OPENAI, check, EXAMPLES)


async def uploaded(app: RunningApp, example: dict[str, Drawn]) -> str | None:
    """Upload the example's file; its id when it was taken."""
    before, files = await row_counts(app, *TABLES), kept_files(app)
    answer = await app.client.post(
        "/v1/files",
        content=form(example),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    expected = verdict(example["purpose"], example["filename"], example["expires"])
    after = await row_counts(app, *TABLES)
    if answer.status_code != 200:
        openai_refusal(answer)
        assert expected is not True, (example, answer.text)
        assert (after, kept_files(app)) == (before, files)
        return None
    assert expected is not False, (example, answer.text)
    file_id: str = answer.json()["id"]
    assert after["files"] == before["files"] + 1
    assert {p.name for p in kept_files(app) - files} == {file_id}
    if example["filename"].valid:
        assert answer.json()["filename"] == (example["filename"].value or "upload")
    return file_id


async def created(app: RunningApp, example: dict[str, Drawn], file_id: str) -> None:
    """Create a batch from the uploaded file: a 400 keeps nothing; a taken batch is `failed`
    without requests when a line is bad, and holds every line when all are good."""
    before, files = await row_counts(app, *TABLES), kept_files(app)
    params = {
        "input_file_id": file_id,
        "endpoint": example["endpoint"].value,
        "completion_window": example["window"].value,
        "metadata": example["metadata"].value,
    }
    answer = await app.client.post("/v1/batches", json=params)
    a_batch_file = Drawn(None, example["purpose"].value == "batch")
    expected = verdict(example["endpoint"], example["window"], example["metadata"], a_batch_file)
    after, lines = await row_counts(app, *TABLES), example["lines"]
    assert kept_files(app) == files
    if answer.status_code != 200:
        openai_refusal(answer)
        assert expected is not True, (example, answer.text)
        assert after == before
        return
    assert expected is not False, (example, answer.text)
    batch = answer.json()
    assert after["batches"] == before["batches"] + 1
    if batch["status"] == "failed":
        assert lines.valid is not True and batch["errors"]["data"], (example, batch)
        assert after["requests"] == before["requests"]
    else:
        assert lines.valid is not False, (example, batch)
        assert after["requests"] == before["requests"] + len(lines.value)
