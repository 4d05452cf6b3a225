"""One ``http`` tool invocation: check the arguments, render the request, send it (retrying
inside one deadline), read at most ``max_response_bytes`` and shape what the LLM sees.

Imported by `plugins.tools.http.create_tool` on a bot's first call, never by validation.
Every failure becomes a `ToolFailure` the LLM can act on, with secret values replaced by
``***`` — in the failure, in the ``http_request`` timeline event and in the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import jsonschema
from yarl import URL

from plugins.tools.http import HttpToolOptions, canonical_json
from runtime import CallContext, CallSetupError, ToolFailure, render_snippet
from runtime.durations import format_duration

MAX_RESULT_CHARS = 4000  # what the LLM gets at most; more costs tokens and rarely helps
EXCERPT_CHARS = 200  # of an error answer, for the LLM and the timeline
EXCERPT_BYTES = 4 * 1024
CHUNK_BYTES = 64 * 1024
BACKOFF_SECONDS = 0.1  # times the attempt number
# a later attempt may succeed; 4xx other than 429 will not
RETRY_STATUSES = frozenset({429, *range(500, 600)})
# `{{ args.party_size }}` alone: the body gets the argument's own JSON type, not its text
_WHOLE_NAME = re.compile(r"^\{\{-?\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*-?\}\}$")
_MISSING = object()


class Redactor:
    """Replaces every secret value, raw or URL-encoded, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {
            form
            for value in secrets
            for form in (value, quote(value), quote(value, safe=""), quote_plus(value))
        }
        self._forms = sorted(forms, key=len, reverse=True)  # a longer form first

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return text


@dataclass
class PreparedRequest:
    method: str
    url: URL
    headers: dict[str, str]
    body: bytes | None


@dataclass
class Answer:
    status: int
    reason: str
    location: str | None
    content: bytes
    charset: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.content.decode(self.charset, errors="replace")


@dataclass
class Exchange:
    """What the ``http_request`` timeline event reports about one invocation."""

    url: str | None = None
    status: int | None = None
    attempts: int = 0
    bytes: int = 0


class HttpTool:
    """One bot's http tool within one call. Its client session (and so its keep-alive
    connections) lives as long as the call."""

    def __init__(self, options: HttpToolOptions, call: CallContext) -> None:
        self.options = options
        self.call = call
        self.arguments_validator = arguments_validator(canonical_json(options.parameters))
        self._client: aiohttp.ClientSession | None = None
        self._closer: asyncio.Task[None] | None = None

    async def invoke(self, arguments: dict[str, Any], call: CallContext) -> str:
        started = time.perf_counter()
        exchange = Exchange()
        redact = Redactor()
        error: str | None = None
        try:
            secrets = self.read_secrets()
            redact = Redactor(secrets.values())
            self.check_arguments(arguments)
            context = request_context(call, arguments, secrets)
            request = prepare_request(self.options, context)
            exchange.url = redact(str(request.url))
            answer = await self.send(request, exchange)
            return redact(self.result(answer, context))
        except ToolFailure as exc:
            error = redact(str(exc))
        except asyncio.CancelledError:  # the caller interrupted; the timeline says so
            error = "cancelled"
            raise
        except Exception as exc:  # a bug must not reach the LLM or the log with a secret
            error = redact(f"the tool failed unexpectedly: {type(exc).__name__}: {exc}")
        finally:
            call.add_event(
                "http_request",
                tool=self.options.name,
                method=self.options.method,
                url=exchange.url,
                status=exchange.status,
                attempts=exchange.attempts,
                bytes=exchange.bytes,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                error=error,
            )
        raise ToolFailure(error)

    def read_secrets(self) -> dict[str, str]:
        try:
            return {name: ref.get() for name, ref in self.options.secrets.items()}
        except CallSetupError as exc:
            raise ToolFailure(f"the tool is not configured: {exc}") from None

    def check_arguments(self, arguments: Any) -> None:
        problem = jsonschema.exceptions.best_match(self.arguments_validator.iter_errors(arguments))
        if problem is not None:
            where = ".".join(str(part) for part in problem.absolute_path)
            raise ToolFailure(
                f"invalid arguments: {problem.message}"
                + (f" (at {where})" if where else "")
                + "; call the tool again with arguments that match its parameters"
            )

    async def send(self, request: PreparedRequest, exchange: Exchange) -> Answer:
        """Attempts until a 2xx, a failure not worth repeating, or the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout
        async with self.client_session() as client:
            while True:
                exchange.attempts += 1
                try:
                    answer = await self.attempt(client, request, deadline - loop.time(), exchange)
                except asyncio.TimeoutError:
                    raise ToolFailure(
                        f"no answer within {format_duration(self.options.timeout)}"
                        f"{attempts_note(exchange)}"
                    ) from None
                except aiohttp.ClientConnectionError as exc:
                    failure, retryable = f"cannot reach the API: {describe(exc)}", True
                except aiohttp.ClientError as exc:
                    failure, retryable = f"the request failed: {describe(exc)}", False
                else:
                    if answer.ok:
                        return answer
                    failure, retryable = http_failure(answer), answer.status in RETRY_STATUSES
                backoff = BACKOFF_SECONDS * exchange.attempts
                out_of_time = deadline - loop.time() <= backoff
                if not retryable or exchange.attempts > self.options.retries or out_of_time:
                    raise ToolFailure(failure + attempts_note(exchange))
                await asyncio.sleep(backoff)

    async def attempt(
        self,
        client: aiohttp.ClientSession,
        request: PreparedRequest,
        seconds_left: float,
        exchange: Exchange,
    ) -> Answer:
        if seconds_left <= 0:
            raise asyncio.TimeoutError
        async with client.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            # a redirect could carry the secret headers to another host; report it instead
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds_left),
        ) as response:
            exchange.status = response.status
            ok = 200 <= response.status < 300
            cap = self.options.max_response_bytes if ok else EXCERPT_BYTES
            too_large = ToolFailure(f"the response is larger than {cap} bytes")
            if ok and (response.content_length or 0) > cap:
                raise too_large  # said so up front: not a byte read
            content, complete = await read_at_most(response, cap)
            exchange.bytes = len(content)
            if ok and not complete:
                raise too_large
            return Answer(
                status=response.status,
                reason=response.reason or "",
                location=response.headers.get("Location"),
                content=content,
                charset=response.charset or "utf-8",
            )

    def result(self, answer: Answer, context: dict[str, Any]) -> str:
        text = answer.text()
        data: Any = text
        if self.options.expect_json:
            if not text.strip():
                data = None
            else:
                try:
                    data = json.loads(text)
                except ValueError:
                    raise ToolFailure(
                        f"the API answered HTTP {answer.status} with something that is not "
                        f"JSON: {excerpt(text)}"
                    ) from None
        if self.options.response is not None:
            values = {**context, "response": data, "status": answer.status}
            values.pop("secrets")
            return truncated(render_template("response", self.options.response, values))
        if data is None:
            return f"HTTP {answer.status}, no content"
        if self.options.expect_json:
            return truncated(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        return truncated(text)

    @contextlib.asynccontextmanager
    async def client_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self.call.ended_event().is_set():  # nothing would close a new shared session
            async with new_client_session() as client:
                yield client
            return
        if self._client is None or self._client.closed:
            self._client = new_client_session()
            self._closer = asyncio.get_running_loop().create_task(
                self.close_when_call_ends(self._client), name="dialplan.http.close"
            )
        yield self._client

    async def close_when_call_ends(self, client: aiohttp.ClientSession) -> None:
        try:
            await self.call.ended_event().wait()
        finally:  # also when the loop shuts down and cancels this task
            await client.close()


def new_client_session() -> aiohttp.ClientSession:
    # each attempt sets its own deadline
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))


@functools.lru_cache(maxsize=1024)
def arguments_validator(schema_json: str) -> Any:
    """A jsonschema validator (formats checked) per distinct schema, shared by all calls."""
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def request_context(
    call: CallContext, arguments: dict[str, Any], secrets: dict[str, str]
) -> dict[str, Any]:
    request = call.request
    return {
        **call.template_values(),
        "args": arguments,
        "secrets": secrets,
        "bot": call.bot.bot_info(),
        "call": {
            "session_id": request.session_id,
            "caller": request.caller,
            "callee": request.callee,
            "transport": request.transport,
        },
    }


def prepare_request(options: HttpToolOptions, context: Mapping[str, Any]) -> PreparedRequest:
    try:
        url = URL(render_template("url", options.url, context))
    except ValueError as exc:
        raise ToolFailure(f"cannot build the request: url: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ToolFailure(f"cannot build the request: {str(url)!r} is not an http(s) URL")
    query = {
        name: render_query_value(f"query.{name}", value, context)
        for name, value in options.query.items()
        if not is_left_out(value, context)
    }
    if query:
        url = url.extend_query(query)
    headers = {
        name: render_template(f"headers.{name}", value, context)
        for name, value in options.headers.items()
    }
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ToolFailure(f"cannot build the request: header {name} contains a line break")
    body, content_type = encode_body(options.body, context)
    if content_type and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    return PreparedRequest(options.method, url, headers, body)


def render_template(key: str, text: str, context: Mapping[str, Any]) -> str:
    try:
        return render_snippet(text, context)
    except Exception as exc:  # undefined names, sandbox refusals, errors inside filters
        raise ToolFailure(f"cannot build the request: {key}: {exc}") from None


def render_query_value(
    key: str, value: str | int | float | bool, context: Mapping[str, Any]
) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return render_template(key, value, context)
    return str(value)


def encode_body(
    body: str | dict[str, Any] | None, context: Mapping[str, Any]
) -> tuple[bytes | None, str | None]:
    if body is None:
        return None, None
    if isinstance(body, str):
        return render_template("body", body, context).encode(), "text/plain; charset=utf-8"
    document = render_json("body", body, context)
    return json.dumps(document, ensure_ascii=False).encode(), "application/json"


def render_json(key: str, value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE_NAME.match(value.strip())
        if whole:
            found = lookup(context, whole.group(1).split("."))
            if found is not _MISSING:
                return found
        return render_template(key, value, context)
    if isinstance(value, dict):
        return {
            name: render_json(f"{key}.{name}", item, context)
            for name, item in value.items()
            if not is_left_out(item, context)
        }
    if isinstance(value, list):
        return [render_json(f"{key}[{i}]", item, context) for i, item in enumerate(value)]
    return value


def is_left_out(value: Any, context: Mapping[str, Any]) -> bool:
    """A value that is exactly ``{{ args.x }}`` for an optional argument the LLM did not
    give: the query parameter or body field is left out rather than sent empty."""
    whole = _WHOLE_NAME.match(value.strip()) if isinstance(value, str) else None
    if whole is None:
        return False
    path = whole.group(1).split(".")
    return len(path) == 2 and path[0] == "args" and lookup(context, path) is _MISSING


def lookup(context: Mapping[str, Any], path: list[str]) -> Any:
    """A dotted name through dicts only (no attributes: templates' data, not objects)."""
    found: Any = context
    for part in path:
        if not isinstance(found, Mapping) or part not in found:
            return _MISSING
        found = found[part]
    return found


async def read_at_most(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body, and whether that was all of it. Never holds more
    than one chunk beyond the cap, however large the answer."""
    content = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        content += chunk
        if len(content) > cap:
            return bytes(content[:cap]), False
    return bytes(content), True


def http_failure(answer: Answer) -> str:
    failure = f"the API answered HTTP {answer.status} {answer.reason}".rstrip()
    if 300 <= answer.status < 400 and answer.location:
        return f"{failure}, redirecting to {answer.location} (redirects are not followed)"
    text = excerpt(answer.text())
    return f"{failure}: {text}" if text else failure


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"


def truncated(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return f"{text[:MAX_RESULT_CHARS]}… [cut: {len(text)} characters in all]"


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__  # ServerDisconnectedError() has no message


def attempts_note(exchange: Exchange) -> str:
    return f" (after {exchange.attempts} attempts)" if exchange.attempts > 1 else ""
