"""Request bodies and delivery targets, as a client of the gateway would send them."""

from __future__ import annotations

from typing import Any

NO_DELIVERY: dict[str, Any] = {"type": "none"}


def webhook(url: str) -> dict[str, Any]:
    """A webhook delivery config."""
    return {"type": "webhook", "webhook_url": url}


def to_queue(queue: str) -> dict[str, Any]:
    """A RabbitMQ delivery config publishing to a queue."""
    return {"type": "rabbitmq", "rabbitmq_queue": queue}


def request_payload(custom_id: str, delivery: dict[str, Any], **body: Any) -> dict[str, Any]:
    """A valid intake body for the stand-in model; `body` keys replace or add to the model body."""
    return {
        "custom_id": custom_id,
        "url": "/v1/chat/completions",
        "method": "POST",
        "body": {"model": "stand-in", "messages": [{"role": "user", "content": custom_id}], **body},
        "delivery_config": delivery,
    }


def chat(content: str) -> list[dict[str, str]]:
    """A one-message chat, for `request_payload(..., messages=chat("..."))`."""
    return [{"role": "user", "content": content}]


def client_request(custom_id: str, webhook_url: str) -> dict[str, Any]:
    """One POST /api/requests body, as a client would send it: the benchmarks' body, and the one
    testkit/wrk_post.lua posts."""
    return request_payload(custom_id, webhook(webhook_url), messages=chat(f"say hi to {custom_id}"))


def new_batch(**columns: Any) -> Any:
    """A batch row as the pipeline would leave one (done, local, empty), for tests that need a
    batch in a state the pipeline only reaches slowly or by accident; `columns` override."""
    from app.db.models import Batch
    from app.ground.clock import utcnow

    now = utcnow()
    values: dict[str, Any] = {
        "backend": "local",
        "endpoint": "/v1/chat/completions",
        "model": "stand-in",
        "origin": "api",
        "status": "done",
        "request_count": 0,
        "bytes": 0,
        "completed_count": 0,
        "failed_count": 0,
        "close_requested": False,
        "run_failures": 0,
        "created_at": now,
        "status_changed_at": now,
    }
    return Batch(**(values | columns))
