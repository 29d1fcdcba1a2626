"""Anthropic Messages on an OpenAI-compatible server: translate the request and the answer.

A "/v1/messages" line carries Anthropic Messages API params; the local inference servers only
speak OpenAI chat.completions. Text and client tool use (anthropic_tools.py) are carried; images,
documents and thinking have no portable chat.completions form across Ollama, vLLM and llama.cpp,
so they are refused rather than silently dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.formats.anthropic_tools import (
    UnreadableAnswer,
    UnsupportedContent,
    tool_call,
    tool_message,
    tool_use_blocks,
    tools_to_chat,
)

__all__ = ["MESSAGES_URL", "UnreadableAnswer", "UnsupportedContent", "error_body", "to_chat", "to_message"]

# Params that keep their name in chat.completions. top_k is not OpenAI's, but vLLM and
# llama.cpp accept it (Ollama ignores it).
_SAME_NAME = ("max_tokens", "temperature", "top_p", "top_k")

_FINISH_TO_STOP_REASON = {"stop": "end_turn", "length": "max_tokens"}

# Anthropic's error type for each HTTP status it documents.
_ERROR_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# The Anthropic Messages endpoint, as batch lines name it.
MESSAGES_URL = "/v1/messages"


def to_chat(params: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request's params as an OpenAI chat.completions request body.

    Raises UnsupportedContent for a content block it cannot carry (anything but text and the
    tool blocks), and for `thinking` other than disabled (refused at create already; checked
    again so that no caller can have it dropped). Unknown keys are dropped.
    """
    thinking = params.get("thinking")
    if thinking is not None and not (isinstance(thinking, dict) and thinking.get("type") == "disabled"):
        raise UnsupportedContent("thinking: an OpenAI-compatible chat server has no thinking to configure")
    messages: list[dict[str, Any]] = []
    if params.get("system"):
        messages.append({"role": "system", "content": _text(params["system"], "system")})
    for i, message in enumerate(params.get("messages") or []):
        messages += _chat_messages(message, f"messages[{i}]")
    chat: dict[str, Any] = {"model": params.get("model"), "messages": messages}
    chat |= tools_to_chat(params)
    chat |= {key: params[key] for key in _SAME_NAME if key in params}
    if "stop_sequences" in params:
        chat["stop"] = params["stop_sequences"]
    user_id = (params.get("metadata") or {}).get("user_id")
    if user_id is not None:
        chat["user"] = user_id
    return chat


def to_message(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completion answer as an Anthropic Message object (every field present).

    `model` is the model the request named, which Anthropic echoes back.
    Raises UnreadableAnswer when the answer's tool calls cannot be told as tool_use blocks.
    """
    choice = (chat.get("choices") or [{}])[0]
    answer = choice.get("message") or {}
    text = answer.get("content") or ""
    tool_uses = tool_use_blocks(answer)
    finish_reason = choice.get("finish_reason")
    # Which stop string ended the text is only known when the server says so: vLLM reports it
    # in the choice's `stop_reason` (a string; a stop *token* is an int, and EOS is null).
    matched = choice.get("stop_reason")
    stop_sequence = matched if finish_reason == "stop" and isinstance(matched, str) else None
    stop_reason = _FINISH_TO_STOP_REASON.get(finish_reason, "end_turn")
    # Some servers (Ollama) end a tool-calling turn with "stop" rather than "tool_calls"; the
    # calls themselves say the turn ended to use a tool, unless the length cut it.
    if tool_uses and finish_reason != "length":
        stop_reason = "tool_use"
    # A turn that only calls tools has no text block, as Anthropic answers it.
    content = ([_text_block(text)] if text or not tool_uses else []) + tool_uses
    usage = chat.get("usage") or {}
    return {
        "id": _message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "stop_sequence" if stop_sequence is not None else stop_reason,
        "stop_sequence": stop_sequence,
        # Anthropic-only features a local server never uses: present but null, so clients that
        # read every field of a Message (as anthropic.types.Message declares them) find them.
        "stop_details": None,
        "container": None,
        "diagnostics": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens") or 0,
            "output_tokens": usage.get("completion_tokens") or 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": None,
            "server_tool_use": None,
            "service_tier": None,
            "inference_geo": None,
            "output_tokens_details": None,
            "speed": None,
        },
    }


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape; `kind` defaults to Anthropic's error type for `status`."""
    if kind is None:
        kind = _ERROR_KINDS.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _chat_messages(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: a user message's tool_result blocks become `tool`
    messages (first, as both formats require them right after the calls), an assistant message's
    tool_use blocks its `tool_calls`."""
    role, content = message.get("role"), message.get("content")
    if not isinstance(content, list):
        return [{"role": role, "content": _text(content, where)}]
    tools = "tool_result" if role == "user" else "tool_use" if role == "assistant" else None
    texts = [block for block in content if not (isinstance(block, dict) and block.get("type") == tools)]
    blocks = [block for block in content if isinstance(block, dict) and block.get("type") == tools]
    if tools == "tool_result":
        if blocks and content[: len(blocks)] != blocks:
            raise UnsupportedContent(f"{where}: tool_result blocks must come first in the content")
        results = [tool_message(block, where) for block in blocks]
        return results + ([{"role": role, "content": _text(texts, where)}] if texts or not results else [])
    chat: dict[str, Any] = {"role": role, "content": _text(texts, where)}
    if blocks:
        chat["content"] = chat["content"] or None  # OpenAI's form of a turn that only calls tools
        chat["tool_calls"] = [tool_call(block) for block in blocks]
    return [chat]


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def _text(content: Any, where: str) -> str:
    """A string, or a list of text blocks joined by blank lines; anything else is refused."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedContent(f"{where}: content must be a string or a list of blocks")
    parts: list[str] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else type(block).__name__
        if kind != "text":
            raise UnsupportedContent(
                f"{where}: content block type {kind!r} is not supported by the local backend "
                "(only 'text' blocks are)"
            )
        parts.append(str(block.get("text", "")))
    return "\n\n".join(parts)


def _message_id(chat_id: Any) -> str:
    # Keep the server's id recognisable in ours, so a Message can be traced in its logs.
    if not chat_id:
        return f"msg_{uuid.uuid4().hex}"
    return "msg_" + str(chat_id).removeprefix("chatcmpl-")
