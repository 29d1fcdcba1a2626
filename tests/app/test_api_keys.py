"""API_KEYS: with keys set, every route under /api and /v1 (the native API, its OpenAPI document,
both drop-in faces under both mounts) refuses a request without a valid key with 401 in the shape
of the face called and `x-should-retry: false`; every UI page sends the browser to the login
form; only /health, /metrics, the login form and the static files answer. The official SDKs
work with a right key and raise AuthenticationError, once, with a wrong one."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from pydantic import ValidationError

from app.asgi import create_app
from app.ground.config import Settings
from testkit import API_KEYS, NO_DELIVERY, RunningApp, StartApp, fast_settings, request_payload
from testkit.apps import every_route

WRONG = "sk-wrong-0b2e"
MISSING = "No API key given: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
INVALID = "The API key given is not valid."


def under(path: str, *prefixes: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def guarded(path: str) -> bool:
    return under(path, "/api", "/v1")


# What answers without a key. Anything else a new route adds is refused, or this test fails.
OPEN = ("/health", "/metrics", "/login", "/logout", "/static")


async def test_every_api_and_v1_route_refuses_a_missing_or_wrong_key(keyed: RunningApp) -> None:
    routes = every_route(create_app(keyed.settings))
    closed = [(method, path) for method, path in routes if guarded(path)]
    mounts = ("/api/requests", "/api/batches", "/api/openapi.json", "/v1/files", "/v1/batches")
    mounts += ("/v1/messages/batches", "/api/openai/v1/files", "/api/anthropic/v1/messages/batches")
    assert {p for _, p in closed} >= set(mounts)  # the listing found every face
    refused = [
        {},
        {"authorization": f"Bearer {WRONG}"},
        {"x-api-key": WRONG},
        {"authorization": f"Basic {API_KEYS[0]}"},  # another scheme carries no key
        {"authorization": "Bearer"},  # a scheme without a key
    ]
    for n, (method, path) in enumerate(closed):
        for headers in refused:
            answer = await keyed.client.request(method, path, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.headers["x-should-retry"] == "false", (method, path)
            assert WRONG not in answer.text and API_KEYS[0] not in answer.text  # no key is echoed
        # Either key, in either header, passes the guard (what the handler answers then varies).
        key = API_KEYS[n % 2]
        for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
            answer = await keyed.client.request(method, path, headers=headers)
            assert answer.status_code != 401, (method, path, headers, answer.text)
    assert (await keyed.client.get("/health")).status_code == 200


async def test_every_other_route_but_the_open_ones_sends_to_the_login_form(keyed: RunningApp) -> None:
    pages = [
        (m, p) for m, p in every_route(create_app(keyed.settings)) if not guarded(p) and not under(p, *OPEN)
    ]
    assert {p for _, p in pages} >= {"/", "/batches", "/requests", "/settings", "/keys"}
    for method, path in pages:
        if method in ("HEAD", "OPTIONS"):
            continue
        answer = await keyed.client.request(method, path, follow_redirects=False)
        assert (answer.status_code, answer.headers.get("location", "")[:13]) == (303, "/login?next=/"), (
            method,
            path,
        )
        htmx = await keyed.client.request(method, path, headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login"), (method, path)


def openai_refusal(message: str) -> dict[str, Any]:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    return {"error": error}


def anthropic_refusal(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "authentication_error", "message": message}}


def native_refusal(message: str) -> dict[str, Any]:
    return {"errors": [{"code": "unauthorized", "title": "Unauthorized", "detail": message, "source": {}}]}


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/files", openai_refusal),
        ("/v1/batches", openai_refusal),
        ("/api/openai/v1/batches", openai_refusal),
        ("/v1/messages/batches", anthropic_refusal),
        ("/api/anthropic/v1/messages/batches", anthropic_refusal),
        ("/api/batches", native_refusal),
        ("/api/openapi.json", native_refusal),
    ],
)
async def test_a_refusal_has_the_shape_of_the_face_called(keyed: RunningApp, path: str, shape: Any) -> None:
    for headers, message in (({}, MISSING), ({"x-api-key": WRONG}, INVALID)):
        answer = await keyed.client.get(path, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json() == shape(message)
        assert answer.headers["x-should-retry"] == "false"
        assert answer.headers["www-authenticate"] == "Bearer"


class Attempts:
    """Counts the requests an SDK sends (an httpx event hook), retries included."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, _: Any) -> None:
        self.count += 1


async def test_the_openai_sdk_works_with_a_key_and_is_refused_once_without(keyed: RunningApp) -> None:
    base_url = keyed.url + "/v1"
    client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEYS[1], max_retries=0)
    body = request_payload("k-1", NO_DELIVERY)["body"]
    line = {"custom_id": "k-1", "method": "POST", "url": "/v1/chat/completions", "body": body}
    uploaded = await client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert [f.id async for f in client.files.list()] == [uploaded.id]
    assert [b.id async for b in client.batches.list()] == [batch.id]

    attempts = Attempts()
    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [attempts]})
    # Default retries: a refusal the SDK would retry shows as more than one attempt.
    wrong = openai.AsyncOpenAI(base_url=base_url, api_key=WRONG, http_client=http)
    with pytest.raises(openai.AuthenticationError) as refused:
        await wrong.batches.list()
    assert (refused.value.status_code, refused.value.code) == (401, "invalid_api_key")
    assert refused.value.type == "invalid_request_error"
    assert attempts.count == 1
    await http.aclose()


async def test_the_anthropic_sdk_works_with_a_key_and_is_refused_once_without(keyed: RunningApp) -> None:
    client = anthropic.AsyncAnthropic(base_url=keyed.url, api_key=API_KEYS[0], max_retries=0)
    params: Any = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    created = await client.messages.batches.create(requests=[{"custom_id": "a-1", "params": params}])
    assert [b.id async for b in client.messages.batches.list()] == [created.id]
    assert (await client.messages.batches.retrieve(created.id)).id == created.id

    attempts = Attempts()
    http = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [attempts]})
    wrong = anthropic.AsyncAnthropic(base_url=keyed.url, api_key=WRONG, http_client=http)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await wrong.messages.batches.list()
    assert refused.value.status_code == 401
    assert refused.value.body == anthropic_refusal(INVALID)
    assert attempts.count == 1
    await http.aclose()


async def test_the_native_api_takes_either_header_and_either_key(keyed: RunningApp) -> None:
    c = keyed.client
    payload = request_payload("native-1", NO_DELIVERY)
    created = await c.post("/api/requests", json=payload, headers={"authorization": f"Bearer {API_KEYS[0]}"})
    assert created.status_code == 202, created.text
    read = await c.get("/api/requests/native-1", headers={"x-api-key": API_KEYS[1]})
    assert read.status_code == 200 and read.json()["custom_id"] == "native-1"
    # The scheme is case-insensitive (RFC 9110).
    listed = await c.get("/api/batches", headers={"authorization": f"bearer {API_KEYS[1]}"})
    assert listed.status_code == 200
    document = await c.get("/api/openapi.json", headers={"x-api-key": API_KEYS[0]})
    assert "/api/requests" in document.json()["paths"]
    assert (await c.get("/api/batches", headers={"x-api-key": WRONG})).status_code == 401
    # A wrong key in one header does not spoil a right one in the other.
    both = {"authorization": f"Bearer {WRONG}", "x-api-key": API_KEYS[0]}
    assert (await c.get("/api/batches", headers=both)).status_code == 200


async def test_the_keys_are_never_shown(keyed: RunningApp) -> None:
    await keyed.client.post("/login", data={"key": API_KEYS[0]})
    for page in ("/health", "/settings", "/", "/keys"):
        answer = await keyed.client.get(page)
        assert answer.status_code == 200
        assert not any(key in answer.text for key in API_KEYS)
    assert not any(key in repr(keyed.settings) for key in API_KEYS)


async def test_without_keys_everything_stays_open(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False, api_keys="")) as app:
        assert app.settings.api_keys is None
        for path in ("/api/batches", "/api/openapi.json", "/v1/files", "/v1/batches", "/v1/messages/batches"):
            for headers in ({}, {"authorization": "Bearer anything"}, {"x-api-key": "anything"}):
                answer = await app.client.get(path, headers=headers)
                assert answer.status_code == 200, (path, headers, answer.text)


@pytest.mark.parametrize("value", [",", " , ,"])
def test_a_list_without_a_key_stops_the_start(value: str) -> None:
    with pytest.raises(ValidationError, match="API_KEYS holds no key"):
        Settings(_env_file=None, api_keys=value)  # type: ignore[call-arg]


def test_the_settings_read_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "a,b")
    assert Settings(_env_file=None).api_keys == "a,b"  # type: ignore[call-arg]
    monkeypatch.setenv("API_KEYS", "")
    assert Settings(_env_file=None).api_keys is None  # type: ignore[call-arg]
