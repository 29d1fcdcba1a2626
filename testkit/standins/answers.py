"""The fake answers both model stand-ins give, built in one place: completion, chat, responses,
embeddings and moderation bodies, usage counted in words, the OpenAI error envelope and the lines
of a batch's output and error files.

The inference stand-in answers as a local server does (llama.cpp, vLLM: the fields every client
reads); the OpenAI Batch API stand-in asks for `as_openai`, the fields OpenAI adds that the
official SDK's types require (refusal, logprobs, token details, every moderation category)."""

from __future__ import annotations

from typing import Any

from testkit.standins.asgi import word_count

Json = dict[str, Any]

# The JSON names of OpenAI's moderation categories (openai.types.Moderation aliases).
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# A local server's moderation answer names only a few categories.
LOCAL_MODERATION_CATEGORIES = ("harassment", "violence")
EXPIRED_LINE_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> Json:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt: str, reply: str, *, as_openai: bool = False, cached_half: bool = False) -> Json:
    """Chat-style usage, one token per word; OpenAI's adds the details (half the prompt cached
    with `cached_half`)."""
    p, c = word_count(prompt), word_count(reply)
    counts: Json = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if as_openai:
        counts["prompt_tokens_details"] = {"cached_tokens": p // 2 if cached_half else 0}
        counts["completion_tokens_details"] = {"reasoning_tokens": 0}
    return counts


def chat_completion(
    answer_id: str, created: int, model: str, reply: str, counts: Json, *, as_openai: bool = False
) -> Json:
    """A chat completion whose one choice says `reply`."""
    message: Json = {"role": "assistant", "content": reply}
    choice: Json = {"index": 0, "message": message, "finish_reason": "stop"}
    if as_openai:
        message["refusal"] = None
        choice["logprobs"] = None
    body: Json = {
        "id": answer_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": counts,
    }
    if as_openai:
        body["system_fingerprint"] = None
    return body


def text_completion(answer_id: str, created: int, model: str, reply: str, counts: Json) -> Json:
    """A legacy completion whose one choice says `reply`."""
    return {
        "id": answer_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": reply, "logprobs": None, "finish_reason": "stop"}],
        "usage": counts,
    }


def embeddings(model: str, items: list[Any], texts: list[str]) -> Json:
    """One three-number embedding per input item; `texts` are what the tokens are counted in."""
    tokens = sum(word_count(text) for text in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def response(
    answer_id: str, message_id: str, created: int, model: str, reply: str, counts: Json, **fields: Any
) -> Json:
    """A Responses API answer whose one message says `reply`; `counts` is chat-style usage (from
    `usage`), renamed as the Responses API names it; `fields` come before the usage."""
    renamed: Json = {"input_tokens": counts["prompt_tokens"]}
    if "prompt_tokens_details" in counts:
        # openai 3.54.0's ResponseUsage requires cache_write_tokens.
        renamed["input_tokens_details"] = {
            "cached_tokens": counts["prompt_tokens_details"]["cached_tokens"],
            "cache_write_tokens": 0,
        }
    renamed["output_tokens"] = counts["completion_tokens"]
    if "completion_tokens_details" in counts:
        renamed["output_tokens_details"] = {"reasoning_tokens": 0}
    renamed["total_tokens"] = counts["total_tokens"]
    message = {
        "type": "message",
        "id": message_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply, "annotations": []}],
    }
    return {
        "id": answer_id,
        "object": "response",
        "created_at": created,
        "status": "completed",
        "model": model,
        "output": [message],
        **fields,
        "usage": renamed,
    }


def moderation(answer_id: str, model: str, *, as_openai: bool = False) -> Json:
    """A moderation answer that flags nothing."""
    categories = MODERATION_CATEGORIES if as_openai else LOCAL_MODERATION_CATEGORIES
    result: Json = {
        "flagged": False,
        "categories": dict.fromkeys(categories, False),
        "category_scores": dict.fromkeys(categories, 0.0001 if as_openai else 0.001),
    }
    if as_openai:
        result["category_applied_input_types"] = {c: ["text"] for c in categories}
    return {"id": answer_id, "model": model, "results": [result]}


def output_line(line_id: str, custom_id: str, status: int, request_id: str, body: Json) -> Json:
    """A line of a batch's output (2xx) or error file: the answer one input line got."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def expired_line(line_id: str, custom_id: str) -> Json:
    """A line of a batch's error file for an input line the completion window left unrun."""
    return {"id": line_id, "custom_id": custom_id, "response": None, "error": dict(EXPIRED_LINE_ERROR)}


def anthropic_message(message_id: str, model: str, reply: str, prompt: str) -> Json:
    """An Anthropic Message (anthropic.types.Message), one token per word."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": word_count(prompt),
            "output_tokens": word_count(reply),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_error(kind: str, message: str, request_id: str | None = None) -> Json:
    """Anthropic's error envelope (anthropic.types.shared.ErrorResponse)."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
