"""The ``http`` tool: the LLM calls an HTTP API that the bot file describes.

    [[tools]]
    use = "http"
    name = "find_slots"
    description = "Free appointment slots on a date."
    url = "{{ api_base }}/slots"
    query = { date = "{{ args.date }}", clinic = "{{ clinic_id }}" }
    headers = { Authorization = "Bearer {{ secrets.token }}" }
    secrets = { token = "${env:CRM_TOKEN}" }
    response = "Free slots: {{ response.slots | join(', ') }}"
    [tools.parameters]
    type = "object"
    required = ["date"]
    properties.date = { type = "string", format = "date" }

Everything that can be checked is checked when the bot loads: the JSON Schema, template
syntax, each `args.x` / `secrets.x` a template reads, and (through `variables_used`) the
call variables. Sending the request lives in `plugins.tools.http_request`, imported on a
bot's first call, so `dialplan validate` never imports aiohttp.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import jinja2
from jinja2 import nodes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from runtime import (
    CallContext,
    RegisterTool,
    SecretRef,
    ToolDefinition,
    check_snippet,
    hookimpl,
    snippet_names,
)
from runtime.durations import Duration
from runtime.errors import suggest

KIB = 1024
# names the tool itself gives templates, beside the call's variables
REQUEST_NAMES = frozenset({"args", "secrets", "call", "bot"})
RESPONSE_NAMES = frozenset({"args", "call", "bot", "response", "status"})  # never secrets
TEMPLATED_FIELDS = ("url", "query", "headers", "body", "response")

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]


def no_arguments() -> dict[str, Any]:
    return {"type": "object", "properties": {}, "required": []}


class HttpToolOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$", description="the tool name the LLM sees"
    )
    description: str = Field(
        min_length=1, description="what the LLM is told the tool does and when to use it"
    )
    # `parameters` and `secrets` come before the templates: their validators read them
    parameters: dict[str, Any] = Field(
        default_factory=no_arguments,
        description="JSON Schema (type object) of the LLM's arguments, or that schema as "
        "JSON text; templates read them as `args.<name>`",
    )
    secrets: dict[Identifier, SecretRef] = Field(
        default_factory=dict,
        description='name -> "${env:NAME}"; templates read `secrets.<name>`',
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(description="template: the absolute http(s) URL")
    query: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="query parameters (templates), URL-encoded for you"
    )
    headers: dict[HeaderName, str] = Field(default_factory=dict, description="templates")
    body: str | dict[str, Any] | None = Field(
        None,
        description="a template sent as text, or a table sent as JSON whose string values "
        "are templates (a value that is exactly `{{ args.x }}` keeps its JSON type)",
    )
    response: str | None = Field(
        None,
        description="template of what the LLM sees: reads `response` (parsed JSON or text), "
        "`status`, `args` and variables; default: the body itself, cut at 4,000 characters",
    )
    expect_json: bool = Field(True, description="an answer that is not JSON is a failure")
    timeout: Duration = Field(
        5.0, gt=0, le=60, description="the longest the caller waits, retries included"
    )
    retries: int = Field(
        1, ge=0, le=5, description="extra attempts after a connection error, 429 or 5xx"
    )
    max_response_bytes: int = Field(256 * KIB, ge=1, le=16 * KIB * KIB)

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("parameters", mode="before")
    @classmethod
    def _schema_from_json_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None

    @field_validator("parameters")
    @classmethod
    def _valid_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        problem = json_schema_problem(canonical_json(schema))
        if problem:
            raise ValueError(problem)
        return schema

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, url: str) -> str:
        starts_as_text = "{" not in url.split("://", 1)[0]
        if starts_as_text and not url.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an absolute http:// or https:// URL")
        return url

    @field_validator(*TEMPLATED_FIELDS)
    @classmethod
    def _valid_templates(cls, value: Any, info: ValidationInfo) -> Any:
        """Each template's syntax and the `args.x` / `secrets.x` it reads, every problem
        located at its own key (``headers.Authorization``, ``body.customer.id``)."""
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{problem}", {"problem": problem}),
                loc=loc,
                input=text,
            )
            for loc, text in iter_templates(value)
            if (problem := template_problem(text, info.data, info.field_name == "response"))
        ]
        if errors:
            # raised inside a validator, pydantic puts the field's name in front of each loc
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return value

    def templates(self) -> Iterator[tuple[str, str]]:
        """(key path, template text) for every templated option."""
        for name in TEMPLATED_FIELDS:
            for loc, text in iter_templates(getattr(self, name)):
                yield key_path((name, *loc)), text

    def variables_used(self) -> dict[str, frozenset[str]]:
        """Call variables each template reads, for the compiler to check against the bot."""
        used: dict[str, frozenset[str]] = {}
        for key, text in self.templates():
            names = snippet_names(text) - (RESPONSE_NAMES if key == "response" else REQUEST_NAMES)
            if names:
                used[key] = names
        return used


def iter_templates(
    value: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string in a nested option value (the strings are templates), with its place."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_templates(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_templates(item, (*loc, index))


def key_path(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def template_problem(
    text: str, options: Mapping[str, Any], is_response: bool = False
) -> str | None:
    """What is wrong with one template, given the options validated so far."""
    try:
        check_snippet(text)
    except ValueError as exc:
        return str(exc)
    if is_response and "secrets" in snippet_names(text):
        return "cannot read `secrets`: what the response template renders goes to the LLM"
    parameters, secrets = options.get("parameters"), options.get("secrets")
    # a missing entry failed its own validation, which is reported already
    declared = {
        "args": None if parameters is None else sorted(parameters.get("properties") or {}),
        "secrets": None if secrets is None else sorted(secrets),
    }
    read = attributes_read(text)
    for root, known in declared.items():
        if known is None:
            continue
        for name in sorted(read.get(root, frozenset()) - set(known)):
            where = "a property in `parameters`" if root == "args" else "a name in `secrets`"
            hint = suggest(name, known, what="defined")
            return f"reads `{root}.{name}`, which is not {where} ({hint})"
    return None


_PARSER = jinja2.Environment()  # syntax only; the sandboxed one renders (runtime.snippets)


@functools.lru_cache(maxsize=4096)
def attributes_read(text: str) -> Mapping[str, frozenset[str]]:
    """``{"args": {"date"}, "secrets": {"token"}}`` for ``{{ args.date }} {{ secrets['token'] }}``:
    the attributes a template reads directly off each top-level name."""
    if "{{" not in text and "{%" not in text:
        return {}
    found: dict[str, set[str]] = {}
    for node in _PARSER.parse(text).find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        if not isinstance(node.node, nodes.Name):
            continue
        if isinstance(node, nodes.Getattr):
            attribute = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attribute = node.arg.value
        else:
            continue
        found.setdefault(node.node.name, set()).add(attribute)
    return {name: frozenset(attributes) for name, attributes in found.items()}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def json_schema_problem(schema_json: str) -> str | None:
    """Why a `parameters` schema is unusable, or None. Cached: many bots share a schema."""
    schema = json.loads(schema_json)
    if schema.get("type") != "object":
        return 'needs `type = "object"` at the top level (the arguments are an object)'
    from jsonschema import exceptions, validators  # ~90 ms; only for bots that use this tool

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = ".".join(str(part) for part in exc.absolute_path)
        return f"{exc.message} at {where}" if where else exc.message
    return None


def create_tool(options: HttpToolOptions, call: CallContext) -> ToolDefinition:
    from plugins.tools.http_request import HttpTool  # aiohttp: only when a call needs it

    tool = HttpTool(options, call)
    return ToolDefinition(
        name=options.name,
        description=options.description,
        handler=tool.invoke,
        parameters=options.parameters,
    )


@hookimpl
def register_tools(register: RegisterTool) -> None:
    register(
        name="http",
        factory=create_tool,
        options=HttpToolOptions,
        description="call an HTTP API: templated URL, query, headers and body; "
        "arguments checked against a JSON Schema; secrets from the environment",
    )
