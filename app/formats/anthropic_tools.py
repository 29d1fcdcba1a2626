"""Anthropic tool use on an OpenAI-compatible chat server: tools, tool_choice and the tool blocks.

Anthropic's client tools (name, description, input_schema) are OpenAI's function tools; a
`tool_use` block is an assistant `tool_calls` entry and a `tool_result` block a `tool` message.
Both formats carry the same facts (an id pairing call and result, a name, JSON arguments), so the
translation is faithful both ways. Server tools (web search, code execution, ...) run inside
Anthropic's platform and have no chat.completions form: they are refused.
"""

from __future__ import annotations

import json
import uuid
from typing import Any


class UnsupportedContent(ValueError):
    """The request holds content the chat.completions translation cannot carry."""


class UnreadableAnswer(ValueError):
    """The server's answer cannot be told as an Anthropic Message (e.g. tool arguments that are
    not a JSON object, which Anthropic's `tool_use.input` always is)."""


# Anthropic's tool_choice types and OpenAI's names for the same choice ("tool" names one).
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def tools_to_chat(params: dict[str, Any]) -> dict[str, Any]:
    """The chat.completions `tools`, `tool_choice` and `parallel_tool_calls` for `params`."""
    tools = params.get("tools")
    if not tools:
        return {}
    chat: dict[str, Any] = {"tools": [_function(tool, i) for i, tool in enumerate(tools)]}
    choice = params.get("tool_choice")
    if choice:
        kind = choice.get("type")
        if kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in _CHOICES:
            chat["tool_choice"] = _CHOICES[kind]
        else:
            raise UnsupportedContent(f"tool_choice: type {kind!r} is not supported")
        if choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    return chat


def _function(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise UnsupportedContent(
            f"tools[{index}]: tool type {tool.get('type')!r} is a server tool, which the local "
            "backend cannot run (only client tools with name and input_schema are)"
        )
    function: dict[str, Any] = {"name": tool.get("name"), "parameters": tool.get("input_schema")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """An assistant `tool_use` block as a chat `tool_calls` entry (arguments are a JSON string)."""
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A user `tool_result` block as a chat `tool` message.

    chat.completions has no error flag for a tool's answer: an `is_error` result is sent as its
    text, which is what the model reads in either format.
    """
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise UnsupportedContent(
                    f"{where}: tool_result content block type {kind!r} is not supported by the "
                    "local backend (only 'text' blocks are)"
                )
            parts.append(str(part.get("text", "")))
        text = "\n\n".join(parts)
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def tool_use_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat answer's `tool_calls` as Anthropic `tool_use` blocks (every field present)."""
    blocks = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        if call.get("type", "function") != "function" or not isinstance(function.get("name"), str):
            raise UnreadableAnswer(f"the server answered a tool call that is not a function call: {call!r}")
        arguments = function.get("arguments")
        try:
            # Some servers send the arguments as an object rather than OpenAI's JSON string.
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = None
        if parsed is None and arguments in ("", None):
            parsed = {}  # a call without arguments
        if not isinstance(parsed, dict):
            raise UnreadableAnswer(
                f"the server's call of tool {function['name']!r} has arguments that are not a JSON "
                f"object: {arguments!r}"
            )
        blocks.append(
            {
                "type": "tool_use",
                # The server's id is kept: the client sends it back as tool_result.tool_use_id,
                # which becomes the chat tool message's tool_call_id the server expects.
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                "name": function["name"],
                "input": parsed,
                "caller": None,
                "toolset_name": None,
            }
        )
    return blocks
