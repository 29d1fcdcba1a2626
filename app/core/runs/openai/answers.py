"""Reading OpenAI's answers: what an output/error line means, and what a batch object promises."""

from __future__ import annotations

from typing import Any

from app.core.runs.openai.endings import LINE_REFUSED


def classify(line: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """What one output/error line means: ok, expired, server_error (resubmit) or failed.

    The status code decides, not only `error`: a line the model refused comes back with a 4xx
    `response` and a null top-level `error`.
    """
    error = line.get("error")
    response = line.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        if code == "batch_expired":
            return "expired", None
        kind = "server_error" if code in ("server_error", "internal_error") else "failed"
        return kind, {"code": str(code or "batch_line_failed"), "message": str(error.get("message") or "")}
    if isinstance(status, int) and 200 <= status < 300:
        return "ok", None
    body_error = body.get("error") if isinstance(body, dict) else None
    detail = body_error if isinstance(body_error, dict) else {}
    code = detail.get("code") or detail.get("type") or (f"http_{status}" if status else "no_response")
    failure = {"code": str(code), "message": str(detail.get("message") or f"OpenAI answered {status}")}
    if isinstance(status, int) and status >= 500:
        return "server_error", failure
    return "failed", failure


def files_missing(remote: dict[str, Any]) -> bool:
    """Whether the counts promise a file the batch object does not name yet."""
    counts = remote.get("request_counts") or {}
    return bool(
        (counts.get("completed") and not remote.get("output_file_id"))
        or (counts.get("failed") and not remote.get("error_file_id"))
    )


def line_error(entry: dict[str, Any]) -> dict[str, Any]:
    """The error of a line errors.data names (OpenAI's code and message, else LINE_REFUSED's)."""
    return {
        "code": str(entry.get("code") or LINE_REFUSED.code),
        "message": str(entry.get("message") or LINE_REFUSED.message),
        "param": entry.get("param"),
        "line": entry.get("line"),
    }


def summary(errors: list[dict[str, Any]]) -> str:
    """The first of errors.data, and how many more there are."""
    if not errors:
        return "no reason given"
    first = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.get('code')}: {first.get('message')}{more}"
