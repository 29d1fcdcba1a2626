"""Request ids on the drop-in faces' answers, as OpenAI (`x-request-id`) and Anthropic
(`request-id`) send them: the official SDKs read them into `_request_id` and name them in their
errors, which is what a user quotes when asking what happened.

A `before_send` hook rather than a router middleware, so that every answer of a face carries
one, also a refusal raised before its routes' middleware passes it on (a wrong API key, a refused
Host). A face's routers name their header in `opt`; other routes are left as they are.
"""

from __future__ import annotations

import uuid

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

OPT = "request_id_header"


def request_id_header(name: str) -> dict[str, str]:
    """The router `opt` that has every answer of its routes carry a fresh id in header `name`."""
    return {OPT: name}


async def stamp_request_id(message: Message, scope: Scope) -> None:
    """Add the route's request id header to the start of its answer (cheap: one lookup for
    other routes, one uuid for the faces' answers)."""
    if message["type"] != "http.response.start":
        return
    handler = scope.get("route_handler")
    name = handler.opt.get(OPT) if handler is not None else None
    if name:
        MutableScopeHeaders.from_message(message).add(name, f"req_{uuid.uuid4().hex}")
