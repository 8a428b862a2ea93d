"""Which function the demo engine calls, and with what arguments: deterministic, as a real
tool-using model would behave, so that agent loops can be tested end to end.

A chat request with `tools` gets at most one call of one function:
- `tool_choice` naming a function: that function; "required": the first tool;
- "auto" or absent, when the conversation ends with a user message: the first tool whose name
  that message mentions (case-insensitive; an underscore matches a space), else the first tool;
- "none", or an "auto" conversation that ends otherwise (with a tool's result, say): no call;
  the answer is text (generation.py: "The tool said: <the result>").

The arguments satisfy the function's JSON-schema `parameters`, so SDKs that validate them
accept them: every property listed in `required` (every property when none is) gets a value by
its schema: an `enum`'s first value (or the `const`), else by `type`: a string is the last user
message, an integer or number 1, a boolean true, an array [], an object its own properties filled
the same way ({} when it lists none), null null. `anyOf`/`oneOf`/`allOf` take their first option
that is not null, and a `$ref` into the parameters' own `$defs` is followed. Parameters without
any properties get `{"said": <the text answer>}`.

Call ids are `call_demo_<k>`, k the number of calls earlier in the conversation: the same
conversation gets the same ids, and no id repeats within one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tiller.demo_engine.generation import answer_text, last_user_text

_MAX_DEPTH = 16  # a self-referring schema ($ref to itself) stops here


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str  # JSON text


def call_for(body: dict[str, Any], messages: list[dict[str, Any]]) -> Call | None:
    """The call a chat request gets, if any."""
    tools = [t["function"] for t in body.get("tools") or [] if isinstance(t.get("function"), dict)]
    function = _chosen(body.get("tool_choice"), tools, messages)
    if function is None:
        return None
    parameters = function.get("parameters") or {}
    if parameters.get("properties"):
        arguments = _value(parameters, parameters, last_user_text(messages), 0)
    else:
        arguments = {"said": answer_text(messages)}
    earlier = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
    return Call(
        f"call_demo_{earlier}", str(function["name"]), json.dumps(arguments, ensure_ascii=False)
    )


def _chosen(
    choice: Any, tools: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == name), {"name": name}) if name else None
    if not tools or choice == "none":
        return None
    if choice == "required":
        return tools[0]
    if not messages or messages[-1].get("role") != "user":
        return None
    said = _plain(last_user_text(messages))
    return next((t for t in tools if _plain(str(t.get("name"))) in said), tools[0])


def _plain(text: str) -> str:
    return text.lower().replace("_", " ")


def _value(schema: dict[str, Any], root: dict[str, Any], text: str, depth: int) -> Any:
    """A value that `schema` accepts (see the module's docstring)."""
    schema = _resolved(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combined in ("anyOf", "oneOf", "allOf"):
        options = [_resolved(o, root) for o in schema.get(combined) or []]
        options = [o for o in options if o.get("type") != "null"]
        if options:
            return _value(options[0], root, text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        names = schema.get("required") or list(properties)
        return {n: _value(properties.get(n) or {}, root, text, depth + 1) for n in names}
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(
        str(kind), text
    )


def _resolved(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or what its `$ref` points to in the parameters (`#/$defs/…`)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}
