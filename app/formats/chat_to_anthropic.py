"""OpenAI chat on the Anthropic Messages API: the inverse of anthropic_messages.py.

A "/v1/chat/completions" request routed to an Anthropic batch backend is sent as Messages params,
and the Message that comes back is told as a chat.completion, so the client reads the shape it
asked in. Text (with system messages) is carried; tools, images and other content parts are
refused (UnsupportedContent) rather than silently dropped.
"""

from __future__ import annotations

from typing import Any

from app.formats.anthropic_tools import UnsupportedContent

# Anthropic requires max_tokens; a chat request may leave it out.
DEFAULT_MAX_TOKENS = 4096
_SAME_NAME = ("temperature", "top_p", "top_k")
_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_UNSUPPORTED = ("tools", "functions", "tool_choice", "response_format", "n", "logprobs")


def to_params(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat.completions request body as Anthropic Messages params."""
    for key in _UNSUPPORTED:
        value = chat.get(key)
        if value not in (None, False) and not (key == "n" and value == 1):
            raise UnsupportedContent(f"{key}: not carried to the Anthropic Messages API")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(chat.get("messages") or []):
        role, text = message.get("role"), _text(message.get("content"), f"messages[{i}]")
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": text})
        else:
            raise UnsupportedContent(f"messages[{i}]: role {role!r} is not carried")
    params: dict[str, Any] = {
        "model": chat.get("model"),
        "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        params["system"] = "\n\n".join(system)
    params |= {key: chat[key] for key in _SAME_NAME if chat.get(key) is not None}
    stop = chat.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("user"):
        params["metadata"] = {"user_id": chat["user"]}
    return params


def to_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Message as a chat.completion (text blocks joined; usage as prompt/completion)."""
    text = "".join(
        str(block.get("text", "")) for block in message.get("content") or [] if block.get("type") == "text"
    )
    usage = message.get("usage") or {}
    # input_tokens only, as the Message says: cache reads are Anthropic's own count, kept apart.
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": 0,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _STOP_TO_FINISH.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise UnsupportedContent(f"{where}: only text content is carried to the Anthropic Messages API")
