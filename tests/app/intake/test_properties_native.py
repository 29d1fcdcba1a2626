"""A property test of the native API (POST /api/requests), on SQLite and PostgreSQL: custom_id,
body.model and url drawn at and past their documented limits and types. Never a 5xx; a refusal
is a 4xx in the native error shape and keeps nothing; what must be taken is taken (issue 24)."""

from __future__ import annotations

import json

from app.core.intake.schema import CUSTOM_ID_MAX_CHARS, ENDPOINTS, MODEL_MAX_CHARS
from testkit import StartApp, fast_settings
from testkit.properties import (
    EXAMPLES,
    TABLES,
    Drawn,
    kept_files,
    native_refusal,
    one_fault,
    one_of_texts,
    row_counts,
    run_examples,
    text_field,
    verdict,
)

NATIVE = one_fault(
    {
        "custom_id": text_field(CUSTOM_ID_MAX_CHARS),
        "model": text_field(MODEL_MAX_CHARS),
        "url": one_of_texts(ENDPOINTS),
    }
)


async def test_the_native_api_never_answers_5xx_and_keeps_nothing_it_refuses(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        taken: set[str] = set()

        async def check(drawn: dict[str, Drawn]) -> None:
            before, files = await row_counts(app, *TABLES), kept_files(app)
            custom_id = drawn["custom_id"].value
            payload = {
                "custom_id": custom_id,
                "url": drawn["url"].value,
                "body": {"model": drawn["model"].value, "messages": [{"role": "user", "content": "hi"}]},
                "delivery_config": {"type": "none"},
            }
            answer = await app.client.post(
                "/api/requests", content=json.dumps(payload), headers={"content-type": "application/json"}
            )
            expected = verdict(*drawn.values())
            after = await row_counts(app, *TABLES)
            if answer.status_code == 202:
                assert expected is not False, (drawn, answer.text)
                assert after["requests"] == before["requests"] + 1
                taken.add(custom_id)
            else:
                native_refusal(answer)
                assert expected is not True or custom_id in taken, (drawn, answer.text)
                assert after == before
            assert kept_files(app) == files

        await run_examples(NATIVE, check, EXAMPLES)
