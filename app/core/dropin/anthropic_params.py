"""The params of one Anthropic request, checked at create as Anthropic checks them.

What the local backend's translation (app.formats.anthropic_messages) reads must have the type
Anthropic documents: a `messages` entry that is not an object, or `metadata` that is a string,
would otherwise be taken, then fail at run time with Python's exception text as the request's
result. Only types and the limits Batchgate stores are checked here; a content block of a type
the translation cannot carry (an image, a document) stays the request's own
`invalid_request_error` when it runs, as documented. What no request of the list could ever run
with is refused here, naming the param: `thinking` (a chat server has nothing to carry it to) and
server tools (they run inside Anthropic's platform).
"""

from __future__ import annotations

from typing import Any

from app.core.intake.schema import MODEL_MAX_CHARS
from app.core.rules.errors import Problem

ROLES = ("user", "assistant", "system")
Found = list[Problem]


def refused(title: str, detail: str, pointer: str) -> Problem:
    """A problem of an Anthropic request list, at `pointer` (a JSON pointer into the body)."""
    return Problem("invalid_request", title, detail, pointer)


def params_problems(params: dict[str, Any], where: str) -> Found:
    """Every problem of `params` (at `where`, e.g. "/requests/3/params")."""
    found: Found = []
    model = params.get("model")
    if not isinstance(model, str) or not model or len(model) > MODEL_MAX_CHARS:
        rule = f"params.model must be a model name of 1 to {MODEL_MAX_CHARS} characters."
        found.append(refused("Invalid model", rule, where + "/model"))
    for name in ("max_tokens", "messages"):
        if name not in params:
            found.append(refused("Missing field", f"params.{name} is required.", f"{where}/{name}"))
    tokens = params.get("max_tokens", 1)
    if not _whole(tokens) or tokens < 1:
        rule = "params.max_tokens must be a whole number of at least 1."
        found.append(refused("Invalid max_tokens", rule, where + "/max_tokens"))
    found += _messages(params.get("messages", []), where + "/messages")
    if params.get("system") is not None:
        found += _content(params["system"], where + "/system", "params.system")
    found += _metadata(params.get("metadata"), where + "/metadata")
    found += _sampling(params, where)
    found += _thinking(params.get("thinking"), where + "/thinking")
    found += _tools(params.get("tools"), where + "/tools")
    found += _tool_choice(params.get("tool_choice"), where + "/tool_choice")
    return found


def _messages(messages: Any, where: str) -> Found:
    """The first problem of the message list (one per list: a long list of bad entries would
    otherwise make an answer as long as the body)."""
    if not isinstance(messages, list):
        return [refused("Invalid messages", "params.messages must be a list of messages.", where)]
    for index, message in enumerate(messages):
        at = f"{where}/{index}"
        if not isinstance(message, dict):
            rule = "each message must be an object with role and content."
            return [refused("Invalid message", rule, at)]
        if message.get("role") not in ROLES:
            rule = f"role must be one of {', '.join(ROLES)}."
            return [refused("Invalid role", rule, at + "/role")]
        if "content" not in message:
            return [refused("Missing field", "content is required.", at + "/content")]
        if found := _content(message["content"], at + "/content", "content"):
            return found
    return []


def _content(content: Any, where: str, name: str) -> Found:
    """A string or a list of content blocks (objects with a `type`; a text block's `text` is a
    string). Which block types run is the translation's decision, made when the request runs."""
    if isinstance(content, str):
        return []
    if not isinstance(content, list):
        return [refused("Invalid content", f"{name} must be a string or a list of content blocks.", where)]
    for index, block in enumerate(content):
        at = f"{where}/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return [refused("Invalid content block", "a content block must be an object with a type.", at)]
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return [refused("Invalid text block", "a text block's text must be a string.", at + "/text")]
        if found := _tool_block(block, at):
            return found
    return []


def _tool_block(block: dict[str, Any], at: str) -> Found:
    """A tool_use block's id, name and input, and a tool_result's tool_use_id and content, of the
    types the translation passes on."""
    if block["type"] == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            return [refused("Invalid tool_use block", "a tool_use block needs a string id and name.", at)]
        if not isinstance(block.get("input"), dict):
            return [refused("Invalid tool_use block", "a tool_use block's input must be an object.", at)]
    if block["type"] == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            rule = "a tool_result block needs a string tool_use_id."
            return [refused("Invalid tool_result block", rule, at + "/tool_use_id")]
        content = block.get("content")
        if content is not None and (found := _content(content, at + "/content", "tool_result content")):
            return found
    return []


def _thinking(thinking: Any, where: str) -> Found:
    """Extended thinking is Claude's own: an OpenAI-compatible chat server has no budget or
    thinking blocks to carry it to, and running without it would answer something else than was
    asked. Only an explicit {"type": "disabled"} (what the server does anyway) is taken."""
    if thinking is None or thinking == {"type": "disabled"}:
        return []
    rule = "params.thinking is not supported: the local backend's chat servers have no extended thinking."
    return [refused("Unsupported thinking", rule, where)]


def _tools(tools: Any, where: str) -> Found:
    """Client tools (name, input_schema, optional description); a server tool is refused."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        return [refused("Invalid tools", "params.tools must be a list of tools.", where)]
    for index, tool in enumerate(tools):
        at = f"{where}/{index}"
        if not isinstance(tool, dict):
            return [refused("Invalid tool", "each tool must be an object.", at)]
        if tool.get("type") not in (None, "custom"):
            rule = f"server tool {tool['type']!r} is not supported: the local backend runs client tools only."
            return [refused("Unsupported tool", rule, at + "/type")]
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            return [refused("Invalid tool", "a tool's name must be a non-empty string.", at + "/name")]
        if not isinstance(tool.get("input_schema"), dict):
            return [refused("Invalid tool", "a tool's input_schema must be an object.", at + "/input_schema")]
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            return [refused("Invalid tool", "a tool's description must be a string.", at + "/description")]
    return []


def _tool_choice(choice: Any, where: str) -> Found:
    if choice is None:
        return []
    kinds = ("auto", "any", "tool", "none")
    if not isinstance(choice, dict) or choice.get("type") not in kinds:
        rule = f"params.tool_choice must be an object whose type is one of {', '.join(kinds)}."
        return [refused("Invalid tool_choice", rule, where)]
    if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
        return [refused("Invalid tool_choice", "tool_choice of type tool needs a name.", where + "/name")]
    return []


def _metadata(metadata: Any, where: str) -> Found:
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return [refused("Invalid metadata", "params.metadata must be an object.", where)]
    if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
        return [refused("Invalid metadata", "metadata.user_id must be a string.", where + "/user_id")]
    return []


def _sampling(params: dict[str, Any], where: str) -> Found:
    """stop_sequences, temperature, top_p and top_k: passed on to the server as they are, so of
    the type it expects (or null, which it ignores)."""
    found: Found = []
    stops = params.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        rule = "params.stop_sequences must be a list of strings."
        found.append(refused("Invalid stop_sequences", rule, where + "/stop_sequences"))
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            found.append(refused(f"Invalid {name}", f"params.{name} must be a number.", f"{where}/{name}"))
    top_k = params.get("top_k")
    if top_k is not None and (not _whole(top_k) or top_k < 0):
        rule = "params.top_k must be a whole number of at least 0."
        found.append(refused("Invalid top_k", rule, where + "/top_k"))
    return found


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
