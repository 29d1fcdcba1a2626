"""The OpenAPI links of the document: which answer's id another operation takes.

A client reads them as "the id this returns is the one that route wants"; schemathesis's stateful
run follows them, so it works on objects that exist instead of guessing ids that answer 404.
Each drop-in face names a batch `batch_<n>` or `msgbatch_<n>`; `#regex:` (a schemathesis
extension of the runtime expression) takes the native id out of it.
"""

from __future__ import annotations

from typing import Any

# Where an id sits in each answer: a created or read object, or the first of a list page.
CREATED, FIRST = "$response.body#/", "$response.body#/data/0/"
REQUEST_ACTIONS = ("cancel", "redeliver")


Target = tuple[str, str, dict[str, str]]


def _to(method: str, path: str, **parameters: str) -> Target:
    return method, path, parameters


def _request(at: str, verbs: tuple[str, ...] = REQUEST_ACTIONS) -> list[Target]:
    custom_id = f"{at}custom_id"
    actions = [
        _to("post", "/api/requests/{custom_id}", custom_id=f"{{{custom_id}}}/{verb}") for verb in verbs
    ]
    return [_to("get", "/api/requests/{custom_id}", custom_id=custom_id), *actions]


def _batch(batch_id: str) -> list[Target]:
    actions = [
        _to("post", f"/api/batches/{{batch_id}}/{verb}", batch_id=batch_id)
        for verb in ("cancel", "close", "retry", "redeliver")
    ]
    return [
        _to("get", "/api/batches/{batch_id}", batch_id=batch_id),
        *actions,
        _to("delete", "/api/batches/{batch_id}", batch_id=batch_id),
    ]


def _openai_batch(at: str) -> list[Target]:
    batch_id = f"{at}id"
    return [
        _to("get", "/v1/batches/{batch_id}", batch_id=batch_id),
        _to("post", "/v1/batches/{batch_id}/cancel", batch_id=batch_id),
        *_batch(rf"{batch_id}#regex:^batch_(\d+)$")[:1],
    ]


def _message_batch(at: str) -> list[Target]:
    batch_id = f"{at}id"
    operations = [("get", ""), ("post", "/cancel"), ("get", "/results"), ("delete", "")]
    return [
        *(
            _to(method, f"/v1/messages/batches/{{message_batch_id}}{tail}", message_batch_id=batch_id)
            for method, tail in operations
        ),
        *_batch(rf"{batch_id}#regex:^msgbatch_(\d+)$")[:1],
    ]


def _file(at: str) -> list[Target]:
    file_id = f"{at}id"
    return [
        _to(method, f"/v1/files/{{file_id}}{tail}", file_id=file_id)
        for method, tail in (("get", ""), ("get", "/content"), ("delete", ""))
    ]


def _destination(at: str) -> list[Target]:
    destination_id = f"{at}id"
    operations = [
        ("get", ""),
        ("put", "/limits"),
        ("post", "/pause"),
        ("post", "/resume"),
        ("get", "/secret"),
        ("delete", "/secret"),
        ("post", "/secret/rotate"),
    ]
    return [
        _to(method, f"/api/destinations/{{destination_id}}{tail}", destination_id=destination_id)
        for method, tail in operations
    ]


def _subscription(at: str) -> list[Target]:
    return [
        _to(method, "/api/subscriptions/{subscription_id}", subscription_id=f"{at}id")
        for method in ("get", "patch", "delete")
    ]


def _recovery(at: str) -> list[Target]:
    recovery_id = f"{at}id"
    return [
        _to("get", "/api/recoveries/{recovery_id}", recovery_id=recovery_id),
        _to("post", "/api/recoveries/{recovery_id}/cancel", recovery_id=recovery_id),
    ]


# (method, path, status) of a source -> the operations its answer leads to. A list leads on from
# its first item; the few links each source has keep a stateful run's steps on them.
SOURCES: dict[tuple[str, str, str], list[Target]] = {
    ("post", "/api/requests", "202"): _request(CREATED),
    ("get", "/api/requests", "200"): _request(FIRST, ("cancel",)),
    ("post", "/api/requests/bulk", "200"): _request("$response.body#/results/0/", ()),
    ("get", "/api/batches", "200"): _batch(f"{FIRST}id"),
    ("post", "/v1/batches", "200"): _openai_batch(CREATED),
    ("get", "/v1/batches", "200"): _openai_batch(FIRST),
    ("post", "/v1/messages/batches", "200"): _message_batch(CREATED),
    ("get", "/v1/messages/batches", "200"): _message_batch(FIRST),
    ("post", "/v1/files", "200"): _file(CREATED),
    ("get", "/v1/files", "200"): _file(FIRST),
    ("post", "/api/destinations", "200"): _destination(CREATED),
    ("get", "/api/destinations", "200"): _destination(FIRST),
    ("post", "/api/destinations/secret/rotate", "200"): [
        _to("get", "/api/destinations/{destination_id}/secret", destination_id=f"{CREATED}destination_id")
    ],
    ("post", "/api/subscriptions", "201"): _subscription(CREATED),
    ("get", "/api/subscriptions", "200"): _subscription(FIRST),
    ("post", "/api/recoveries", "202"): _recovery(CREATED),
    ("get", "/api/recoveries", "200"): _recovery(FIRST),
}

# A batch is made again from the input file of one that exists, for the same endpoint; and from
# a file just uploaded.
NEW_BATCH_BODY = {"input_file_id": "input_file_id", "endpoint": "endpoint"}
NEW_BATCH_FROM = {("post", "/v1/batches", "200"): CREATED, ("get", "/v1/batches", "200"): FIRST}
FILE_BATCH = {("post", "/v1/files", "200"): {"input_file_id": f"{CREATED}id"}}


def _reference(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _link(
    method: str, path: str, parameters: dict[str, Any], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    link: dict[str, Any] = {"operationRef": _reference(method, path)}
    if parameters:
        link["parameters"] = parameters
    if body is not None:
        link["requestBody"] = body
    return link


def _name(method: str, path: str, parameters: dict[str, str]) -> str:
    tail = "/".join(part for part in path.split("/")[1:] if not part.startswith("{"))
    suffix = "".join(f"_{p.rsplit('/', 1)[-1]}" for p in parameters.values() if p.endswith(REQUEST_ACTIONS))
    return f"{method}_{tail.replace('/', '_')}{suffix}"


def add_links(paths: dict[str, Any]) -> None:
    """Writes SOURCES into the answers of the paths' operations (those the document has)."""
    wanted: dict[tuple[str, str, str], dict[str, Any]] = {}
    for source, targets in SOURCES.items():
        links = wanted.setdefault(source, {})
        for method, path, parameters in targets:
            if method in paths.get(path, {}):
                links[_name(method, path, parameters)] = _link(method, path, parameters)
    for source, at in NEW_BATCH_FROM.items():
        body = {field: f"{at}{name}" for field, name in NEW_BATCH_BODY.items()}
        wanted[source]["post_v1_batches_again"] = _link("post", "/v1/batches", {}, body)
    for source, body in FILE_BATCH.items():
        wanted[source]["post_v1_batches"] = _link("post", "/v1/batches", {}, body)
    for (method, path, status), links in wanted.items():
        answer = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if answer is not None and links:
            answer.setdefault("links", {}).update(links)
