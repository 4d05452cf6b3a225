"""Per-call settings from an HTTP endpoint: the ``[config_endpoint]`` of ``dialplan.toml``.

Before a call is planned, `ConfigEndpoint` POSTs what is known about it (bot, numbers,
variables, SIP headers) and the endpoint answers with the bot, variables and overrides to
use, or refuses the call (404). An endpoint that is down or misconfigured never silences
the line: the call goes on with the bot's defaults and the log says why.

    200 {"bot"?, "variables"?, "overrides"?}  the changed request      204 / {}  no change
    404                                        CallRejected (the caller hears `message`)
    5xx, timeout, connection error             retried, then defaults (WARNING)
    other 4xx, a body that is not an answer    defaults at once (ERROR)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from runtime.call import CallOverrides, CallRequest
from runtime.errors import CallRejected, PluginError
from runtime.fleet.config import ConfigEndpointSettings
from runtime.hookspecs import hookimpl
from runtime.registry import Registry

log = logging.getLogger("dialplan.config_endpoint")
PLUGIN_NAME = "config_endpoint"
SHORT_BODY = 200  # characters of an answer quoted in a log line or a call's cause


class EndpointAnswer(BaseModel):
    """A 200's body. Unknown keys are errors, so a typo (``"variabels"``) is logged, not
    silently ignored."""

    model_config = ConfigDict(extra="forbid")
    bot: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    overrides: CallOverrides | None = None


class _Transient(Exception):
    """Worth another attempt: a 5xx, a timeout, a connection that failed."""


class _Unusable(Exception):
    """Not worth another attempt: the endpoint answered, but not with anything we can use."""


class ConfigEndpoint:
    """The ``resolve_call`` plugin that asks ``settings.url`` about every call.

    Each lookup opens its own ``aiohttp.ClientSession`` and closes it when done. A session
    is bound to the loop it was made on, and the LiveKit worker runs each call on its own
    thread and loop, so sessions cannot be shared across calls there; a per-loop cache would
    not help (one call per loop) and cannot be cleaned up either (the session holds its
    loop, so a weak reference to the loop never dies, and a closed loop can no longer close
    its session). Measured on loopback, a fresh session costs ~0.02 ms and the new TCP
    connection ~0.3-0.6 ms per call (0.7 vs 0.2-0.35 ms with a shared one); over TLS it is
    a handshake, one or two round trips: small beside a call's set-up. Retries within one
    lookup reuse its connection when the endpoint kept it open.
    """

    def __init__(self, settings: ConfigEndpointSettings) -> None:
        self.settings = settings
        self.endpoint = _without_credentials(settings.url)
        if settings.auth_token is not None:
            settings.auth_token.get()  # a missing token fails the worker's start, not each call

    @hookimpl(trylast=True)
    def resolve_call(self, request: CallRequest) -> Awaitable[CallRequest | None]:
        # trylast: this hook always answers (an awaitable), so anywhere earlier it would
        # hide every other resolve_call plugin; last, the others decide first
        return self.resolve(request)

    async def resolve(self, request: CallRequest) -> CallRequest | None:
        """The request as the endpoint changes it, None for no change (or no usable answer).
        Raises `CallRejected` when the endpoint refuses the call."""
        try:
            answer = await self._ask_with_retries(request)
        except _Transient as failure:
            log.warning(
                "config endpoint %s failed %d time(s), last: %s; "
                "call %s goes on with the bot's defaults",
                self.endpoint,
                self.settings.retries + 1,
                failure,
                request.session_id,
            )
            return None
        except _Unusable as problem:
            log.error(
                "config endpoint %s %s; call %s goes on with the bot's defaults",
                self.endpoint,
                problem,
                request.session_id,
            )
            return None
        return None if answer is None else _apply(request, answer)

    async def aclose(self) -> None:
        """Nothing stays open between lookups (see the class docstring); the worker closes
        every plugin the same way, so this one answers too."""

    async def _ask_with_retries(self, request: CallRequest) -> EndpointAnswer | None:
        delay = self.settings.retry_delay
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(self.settings.retries):
                try:
                    return await self._ask(session, request)
                except _Transient as failure:
                    log.info("config endpoint %s: %s; retrying", self.endpoint, failure)
                    await asyncio.sleep(delay)
                    delay *= 2
            return await self._ask(session, request)  # the last attempt: a failure is final

    async def _ask(
        self, session: aiohttp.ClientSession, request: CallRequest
    ) -> EndpointAnswer | None:
        try:
            async with session.post(
                self.settings.url, json=call_description(request), headers=self._headers(request)
            ) as response:
                status, body = response.status, await response.text(errors="replace")
        except TimeoutError:
            raise _Transient(f"no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        return self._read(status, body)

    def _read(self, status: int, body: str) -> EndpointAnswer | None:
        if status == 204:
            return None
        if status == 404:
            raise CallRejected(
                f"config endpoint {self.endpoint} answered 404: {_short(body)}",
                _rejection_message(body) or self.settings.rejected_message,
            )
        if status >= 500:
            raise _Transient(f"answered {status}: {_short(body)}")
        if status != 200:
            raise _Unusable(f"answered {status}: {_short(body)}")
        return _parse_answer(body)

    def _headers(self, request: CallRequest) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Dialplan-Session-Id": request.session_id}
        if self.settings.auth_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.auth_token.get()}"
        return headers


def install_config_endpoint(registry: Registry, settings: ConfigEndpointSettings) -> ConfigEndpoint:
    """Register a `ConfigEndpoint` with the registry's plugin manager; the worker calls this
    once when ``dialplan.toml`` has a ``[config_endpoint]``. ``aclose()`` it on shutdown."""
    manager = registry.plugins.manager
    existing = manager.get_plugin(PLUGIN_NAME)
    if existing is not None:
        installed = getattr(getattr(existing, "settings", None), "url", repr(existing))
        raise PluginError(
            f"a config endpoint is already installed ({installed}); a worker asks one "
            f"endpoint per call: install it once (remove the second [config_endpoint])"
        )
    plugin = ConfigEndpoint(settings)
    if manager.register(plugin, name=PLUGIN_NAME) is None:
        log.warning(
            "the config endpoint %s is blocked (DIALPLAN_DISABLED_PLUGINS=%s): "
            "calls are served with their bots' defaults",
            plugin.endpoint,
            PLUGIN_NAME,
        )
    manager.check_pending()
    return plugin


def call_description(request: CallRequest) -> dict[str, Any]:
    """What the endpoint is told about a call. ``sip``: what the LiveKit worker learned from
    the SIP participant (call id, trunk id, numbers, X- headers), {} on other transports."""
    sip = request.variables.get("sip")
    return {
        "session_id": request.session_id,
        "bot": request.bot,
        "direction": request.direction,
        "transport": request.transport,
        "caller": request.caller,
        "callee": request.callee,
        "variables": request.variables,
        "sip": sip if isinstance(sip, dict) else {},
    }


def _parse_answer(body: str) -> EndpointAnswer | None:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        raise _Unusable(f"answered 200 with a body that is not JSON: {_short(body)}") from None
    if not isinstance(data, dict):
        raise _Unusable(f"answered 200 with JSON that is not an object: {_short(body)}")
    try:
        answer = EndpointAnswer.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<answer>'}: {e['msg']}" for e in exc.errors()
        )
        raise _Unusable(f"answered 200 with an invalid answer: {problems}") from None
    return answer if answer.model_fields_set else None


def _apply(request: CallRequest, answer: EndpointAnswer) -> CallRequest:
    """The endpoint wins: its variables over the request's, and each top-level override
    it sets (``llm``, ``prompt``...) replaces the request's one whole."""
    overrides = request.overrides
    if answer.overrides is not None:
        changed = {
            name: getattr(answer.overrides, name) for name in answer.overrides.model_fields_set
        }
        overrides = overrides.model_copy(update=changed)
    return request.model_copy(
        update={
            "bot": answer.bot or request.bot,
            "variables": {**request.variables, **answer.variables},
            "overrides": overrides,
        }
    )


def _rejection_message(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) and message.strip() else None


def _short(body: str) -> str:
    text = " ".join(body.split())
    if not text:
        return "(empty body)"
    return text if len(text) <= SHORT_BODY else text[: SHORT_BODY - 1] + "…"


def _without_credentials(url: str) -> str:
    """The endpoint as logs and call records name it: no user, password or query string,
    which is where tokens hide in URLs."""
    return str(URL(url).with_user(None).with_query(None).with_fragment(None))
