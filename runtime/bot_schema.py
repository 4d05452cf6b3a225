"""The JSON Schema of a bot file, with every registered provider's and tool's options in it,
so editors can complete `[llm]` keys for the provider actually chosen."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runtime.registry import PROVIDER_KINDS, Registry
from runtime.schema import Bot


def bot_json_schema(registry: Registry) -> dict[str, Any]:
    schema = Bot.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    properties = schema["properties"]
    for kind in PROVIDER_KINDS:
        variants = [
            _variant(
                "provider",
                name,
                registry.provider(kind, name).options,
                defs,
                registry.provider(kind, name).description,
            )
            for name in registry.provider_names(kind)
        ]
        if variants:
            properties[kind] = (
                {"anyOf": [*variants, {"type": "null"}]} if kind != "llm" else {"anyOf": variants}
            )
    tool_variants = [
        _variant("use", name, entry.options, defs, entry.description)
        for name, entry in sorted(registry.tools.items())
    ]
    if tool_variants:
        properties["tools"] = {"type": "array", "items": {"anyOf": tool_variants}}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dialplan bot"
    return schema


def _variant(
    selector: str, name: str, options: type[BaseModel], defs: dict[str, Any], description: str
) -> dict[str, Any]:
    option_schema = options.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(option_schema.pop("$defs", {}))
    properties = {selector: {"const": name}, **option_schema.get("properties", {})}
    variant: dict[str, Any] = {
        "type": "object",
        "title": f"{selector} = {name!r}",
        "properties": properties,
        "required": [selector, *option_schema.get("required", [])],
        "additionalProperties": False,
    }
    if description:
        variant["description"] = description
    return variant
