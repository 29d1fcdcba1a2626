"""Per-key isolation (issue 29): a team's key sees and acts on only its team's requests, batches
and files. Every read and action route of every face, listed from the app itself, answers a
second team's key 404 for the first team's objects (and 403 on the operator's routes), while the
first team's key finds them; lists leave them out. Usage is charged to the team that created the
work, and a team's limits refuse new work at intake with a clear error."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.asgi import create_app
from testkit import NO_DELIVERY, RunningApp, StartApp, fast_settings, request_payload
from testkit.standins.inference import InferenceStandin
from testkit.waiting import wait_until

ADMIN = "admin-key-5b1e"
PATH_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")
# Routes no object lives behind (documents, the catch-all), and creation routes (tested apart).
NOT_OBJECTS = ("/api/openapi", "/api/swaggerui", "/api/oauth2-redirect.html", "/api/{path:str}", "/static")
# The operator's routes, shared by every team: a team's key is refused them whatever it names.
ADMIN_ROUTES = ("/api/destinations", "/api/subscriptions", "/api/recoveries", "/api/purge")
ADMIN_PAGES = ("/destinations", "/subscriptions", "/recoveries", "/settings", "/keys")
# Routes that check their body before the object: given a valid one, so the answer is the lookup's.
FORMS = {"/requests/{request_id:int}/delivery": {"delivery_config": '{"type": "none"}'}}


@dataclass
class Team:
    name: str
    key: str
    client: httpx.AsyncClient
    ids: dict[str, str] = field(default_factory=dict)  # path parameter → this team's object

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


async def new_key(app: RunningApp, admin: httpx.AsyncClient, team: str) -> str:
    """A key of `team`, made on the UI's Keys page as an operator would."""
    answer = await admin.post("/keys", data={"name": f"{team}-service", "team": team})
    assert answer.status_code == 200, answer.text
    found = re.search(r'id="new-key-value">([^<]+)<', answer.text)
    assert found, answer.text
    return found[1]


async def logged_in(url: str, key: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=30)
    await client.get("/login")
    client.headers["x-csrftoken"] = client.cookies.get("batchgate_csrf", "")
    answer = await client.post("/login", data={"key": key, "next": "/"})
    assert answer.status_code == 303, answer.text
    return client


async def owned_objects(app: RunningApp, team: Team) -> None:
    """One of everything a team can create, through each face, run to its end."""
    client, auth = app.client, team.auth
    answer = await client.post("/api/requests", json=request_payload("shared-id", NO_DELIVERY), headers=auth)
    assert answer.status_code == 202, answer.text
    team.ids["request_id"] = str(answer.json()["id"])

    seen: dict[str, object] = {}

    async def batched() -> bool:
        seen.update((await client.get("/api/requests/shared-id", headers=auth)).json())
        team.ids["native_batch"] = str(seen.get("batch_id"))
        return seen.get("status") == "succeeded"

    await wait_until(batched, what=lambda: f"{team.name}'s request to finish: {seen}")
    line = {"custom_id": "l1", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}]}  # type: ignore[assignment]
    files = {"file": ("in.jsonl", json.dumps(line).encode() + b"\n"), "purpose": (None, "batch")}
    uploaded = await client.post("/v1/files", files=files, headers=auth)
    assert uploaded.status_code == 200, uploaded.text
    team.ids["file_id"] = uploaded.json()["id"]
    create = {
        "input_file_id": team.ids["file_id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    made = await client.post("/v1/batches", json=create, headers=auth)
    assert made.status_code == 200, made.text
    team.ids["openai_batch"] = made.json()["id"]
    entry = {
        "custom_id": "m1",
        "params": {"model": "stand-in", "max_tokens": 8, "messages": [line["body"]["messages"][0]]},
    }  # type: ignore[index]
    messages = await client.post("/v1/messages/batches", json={"requests": [entry]}, headers=auth)
    assert messages.status_code == 200, messages.text
    team.ids["message_batch"] = messages.json()["id"]

    async def ended() -> bool:
        done = (await client.get(f"/v1/batches/{team.ids['openai_batch']}", headers=auth)).json()
        message = (await client.get(f"/v1/messages/batches/{team.ids['message_batch']}", headers=auth)).json()
        return done["status"] == "completed" and message["processing_status"] == "ended"

    await wait_until(ended, what=f"{team.name}'s drop-in batches to end")


def filled(path: str, method: str, ids: dict[str, str]) -> str | None:
    """The route's path naming the team's object; None for a route no team object is behind."""

    def value(match: re.Match[str]) -> str:
        name, kind = match[1], match[2]
        if name == "custom_id":  # one path for reading and acting: GET reads, POST acts
            return "shared-id" if method == "GET" else "shared-id/cancel"
        if name == "batch_id":
            return ids["native_batch"] if kind == "int" else ids["openai_batch"]
        chosen = {"message_batch_id": ids["message_batch"], "file_id": ids["file_id"], "name": "red"}
        chosen |= {"request_id": ids["request_id"], "filename": "input.jsonl", "team": "red"}
        return chosen.get(name, "1")  # destinations, subscriptions, recoveries, keys: admin's

    if any(path.startswith(p) for p in NOT_OBJECTS) or path == "/api/{path:str}":
        return None
    return PATH_PARAMETER.sub(value, path)


def is_admin_route(path: str) -> bool:
    under = [p for p in (*ADMIN_ROUTES, *ADMIN_PAGES) if path == p or path.startswith(p + "/")]
    return bool(under) or path.endswith("/limits")


@pytest.fixture
async def teams(
    database_url: str, start_app: StartApp, inference: InferenceStandin
) -> AsyncIterator[tuple[RunningApp, Team, Team]]:
    settings = fast_settings(database_url, inference.url + "/v1", api_keys=ADMIN)
    async with start_app(settings) as app:
        admin = await logged_in(app.url, ADMIN)
        red = Team("red", await new_key(app, admin, "red"), await logged_in(app.url, ADMIN))
        blue = Team("blue", await new_key(app, admin, "blue"), await logged_in(app.url, ADMIN))
        for team in (red, blue):
            await team.client.aclose()
            team.client = await logged_in(app.url, team.key)
        try:
            yield app, red, blue
        finally:
            for client in (admin, red.client, blue.client):
                await client.aclose()


async def test_a_second_team_gets_404_for_every_object_route_of_the_first(
    teams: tuple[RunningApp, Team, Team],
) -> None:
    app, red, blue = teams
    await owned_objects(app, red)
    routes = [
        (m, r.path)
        for r in create_app(app.settings).routes
        for m in sorted(r.methods)
        if m not in ("OPTIONS", "HEAD")
    ]
    checked: list[tuple[str, str]] = []
    for method, route in routes:
        if PATH_PARAMETER.search(route) is None or (path := filled(route, method, red.ids)) is None:
            continue
        api = route.startswith(("/api", "/v1"))
        client, headers = (app.client, blue.auth) if api else (blue.client, {})
        answer = await client.request(method, path, headers=headers, data=FORMS.get(route))
        expected = 403 if is_admin_route(route) else 404
        assert answer.status_code == expected, (method, route, path, answer.status_code, answer.text[:300])
        checked.append((method, route))
    # The listing found every face's object routes, under each mount, and the UI's.
    paths = {route for _, route in checked}
    for must in (
        "/api/requests/{custom_id:path}",
        "/api/batches/{batch_id:int}/cancel",
        "/v1/files/{file_id:str}/content",
        "/v1/batches/{batch_id:str}/cancel",
        "/api/openai/v1/batches/{batch_id:str}",
        "/v1/messages/batches/{message_batch_id:str}/results",
        "/api/anthropic/v1/messages/batches/{message_batch_id:str}",
        "/api/owners/{name:str}",
        "/requests/{request_id:int}/cancel",
        "/batches/{batch_id:int}/{filename:str}",
    ):
        assert must in paths, must
    assert len(checked) > 60
    # The ids are real: the owner's key finds every object its reads name.
    for method, route in checked:
        if method != "GET" or is_admin_route(route):
            continue
        path = filled(route, method, red.ids)
        assert path is not None
        api = route.startswith(("/api", "/v1"))
        client, headers = (app.client, red.auth) if api else (red.client, {})
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200, (route, path, answer.status_code, answer.text[:300])


async def test_lists_show_each_team_only_its_own_and_an_admin_everything(
    teams: tuple[RunningApp, Team, Team],
) -> None:
    app, red, blue = teams
    await owned_objects(app, red)
    # The same custom_id is blue's own: custom_ids are unique per team, so nothing collides.
    answer = await app.client.post(
        "/api/requests", json=request_payload("shared-id", NO_DELIVERY), headers=blue.auth
    )
    assert answer.status_code == 202, answer.text
    assert str(answer.json()["id"]) != red.ids["request_id"]
    lists = {
        "/api/requests": f'"id":{red.ids["request_id"]},"custom_id":"shared-id"',
        "/api/batches": f'"id":{red.ids["native_batch"]},"origin"',
        "/v1/files": red.ids["file_id"],
        "/v1/batches": red.ids["openai_batch"],
        "/v1/messages/batches": red.ids["message_batch"],
    }
    admin = {"authorization": f"Bearer {ADMIN}"}
    for path, marker in lists.items():
        assert marker in (await app.client.get(path, headers=red.auth)).text, path
        assert marker in (await app.client.get(path, headers=admin)).text, path
        assert marker not in (await app.client.get(path, headers=blue.auth)).text, path
    owners = {o["owner"]: o for o in (await app.client.get("/api/owners", headers=red.auth)).json()["data"]}
    assert set(owners) == {"red"}
    # The UI lists alike: blue's session sees its own request, not red's; red's pages its own.
    blue_page = (await blue.client.get("/requests")).text
    assert f'/requests/{red.ids["request_id"]}"' not in blue_page
    assert f'/requests/{red.ids["request_id"]}"' in (await red.client.get("/requests")).text
    assert (await blue.client.get(f"/batches/{red.ids['native_batch']}")).status_code == 404
    red_page = (await red.client.get("/requests")).text
    assert 'id="team">Team red<' in red_page and 'href="/keys"' not in red_page  # no operator's pages
    # An admin's lists filter by team.
    only_blue = (await app.client.get("/api/requests?owner=blue", headers=admin)).json()["data"]
    assert {r["owner"] for r in only_blue} == {"blue"}
    only_red = (await app.client.get("/api/batches?owner=red", headers=admin)).json()["data"]
    assert only_red and {b["owner"] for b in only_red} == {"red"}
    # An admin reads a team's request by custom_id in that team's scope; its own scope has none.
    read = await app.client.get("/api/requests/shared-id?owner=red", headers=admin)
    assert read.status_code == 200 and str(read.json()["id"]) == red.ids["request_id"]
    assert (await app.client.get("/api/requests/shared-id", headers=admin)).status_code == 404
    # A team's key cannot borrow another team's scope.
    assert (await app.client.get("/api/requests/shared-id?owner=red", headers=blue.auth)).json()[
        "owner"
    ] == "blue"


async def test_usage_is_charged_to_the_team_that_created_the_work(
    teams: tuple[RunningApp, Team, Team],
) -> None:
    app, red, blue = teams
    await owned_objects(app, red)
    admin = {"authorization": f"Bearer {ADMIN}"}
    owners = {o["owner"]: o for o in (await app.client.get("/api/owners", headers=admin)).json()["data"]}
    # Red made one native request, one OpenAI line and one Anthropic entry; blue nothing.
    assert owners["red"]["requests"] == 3
    assert owners["red"]["prompt_tokens"] > 0
    assert owners["blue"]["requests"] == 0 and owners["blue"]["prompt_tokens"] == 0
    assert owners[""]["requests"] == 0
    batches = (await app.client.get("/api/batches", headers=admin)).json()["data"]
    assert {b["owner"] for b in batches} == {"red"}  # native batches never mix teams
    assert (await app.client.get("/api/owners/red", headers=blue.auth)).status_code == 404


async def test_a_teams_limits_refuse_new_work_at_intake(teams: tuple[RunningApp, Team, Team]) -> None:
    app, red, blue = teams
    admin = {"authorization": f"Bearer {ADMIN}"}
    refused = await app.client.put(
        "/api/owners/red/limits", json={"max_enqueued_tokens": 10}, headers=red.auth
    )
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "admin_only"
    set_ = await app.client.put("/api/owners/red/limits", json={"max_enqueued_tokens": 10}, headers=admin)
    assert set_.status_code == 200 and set_.json()["max_enqueued_tokens"] == 10
    big = request_payload("big", NO_DELIVERY, messages=[{"role": "user", "content": "word " * 200}])
    answer = await app.client.post("/api/requests", json=big, headers=red.auth)
    assert answer.status_code == 429, answer.text
    assert answer.json()["errors"][0]["code"] == "enqueued_token_limit"
    assert "retry-after" in answer.headers
    bulk = await app.client.post("/api/requests/bulk", json=[big], headers=red.auth)
    assert bulk.status_code == 429 and bulk.json()["errors"][0]["code"] == "enqueued_token_limit"
    # Another team, and an admin, are not held by red's limit; nothing of red's was stored.
    assert (await app.client.post("/api/requests", json=big, headers=blue.auth)).status_code == 202
    assert (await app.client.post("/api/requests", json=big, headers=admin)).status_code == 202
    assert (await app.client.get("/api/requests/big", headers=red.auth)).status_code == 404
    await app.client.put("/api/owners/red/limits", json={"budget_usd": 0}, headers=admin)
    over = await app.client.post(
        "/api/requests", json=request_payload("small", NO_DELIVERY), headers=red.auth
    )
    assert over.status_code == 403 and over.json()["errors"][0]["code"] == "budget_exceeded"
    await app.client.put("/api/owners/red/limits", json={}, headers=admin)
    again = await app.client.post(
        "/api/requests", json=request_payload("small", NO_DELIVERY), headers=red.auth
    )
    assert again.status_code == 202, again.text
