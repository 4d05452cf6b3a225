"""The call server: every WebSocket transport and the browser widget in one aiohttp app.

    POST /twilio/voice     Twilio's incoming-call webhook → TwiML <Connect><Stream>
    GET  /twilio/stream    Twilio Media Streams (WebSocket)
    GET  /exotel/stream    Exotel voicebot stream (WebSocket, ?sample-rate=8000|16000|24000)
    GET  /ws               the generic protocol (JSON control + binary PCM)
    GET  /                 the browser widget;  GET /api/bots  the bots it offers
    GET  /healthz          calls in progress, capacity, and lag behind real time

`dialplan serve` runs it in production; `dialplan dev` runs it beside the terminal.
Each call takes the catalog snapshot of the moment it starts.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from runtime.call import CallOverrides, CallRequest, unstarted_record
from runtime.call_results import CallResults
from runtime.catalog import CatalogSnapshot
from runtime.compiler import CompiledBot
from runtime.errors import CallRejected, DialplanError
from runtime.overload import LAG_LIMIT, current_lag, overloaded
from runtime.record import CallRecord, DisconnectedBy
from runtime.recordings import offer_recording
from runtime.registry import Registry
from runtime.resolve import plan_call, resolve_request
from runtime.transports.exotel import ExotelWire
from runtime.transports.generic import GenericWire
from runtime.transports.stream_call import StartFailed, StreamCall, await_start, send_error
from runtime.transports.twilio import TwilioWire, connect_stream_twiml, refuse_twiml
from runtime.transports.twilio_auth import TOKEN_PARAMETER, StreamTokens, signed_handshake
from runtime.transports.wire import Start, Wire

log = logging.getLogger("dialplan.server")
WIDGET_DIR = Path(__file__).parent / "widget"
RECENT_RECORDS = 200


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_concurrent_calls: int = 20
    default_bot: str | None = None  # for streams and webhooks that name no bot
    public_url: str | None = None  # how Twilio reaches us, e.g. https://bots.example.com
    twilio_auth_token: str | None = None  # set: webhooks must carry a valid signature
    recordings_dir: Path = Path("recordings")
    records_dir: Path | None = None  # set: every call record is also written there as JSON
    record_all: bool = False  # record every call, not only bots with [recording] enabled
    busy_message: str = "All our lines are busy right now. Please call again in a few minutes."
    overrides: CallOverrides | None = None  # applied to every call (e.g. a simulation's grammar)
    # a stream may ask to be answered outside opening hours (`dialplan dev` only: callers
    # of a production server must not choose that)
    allow_schedule_override: bool = False


@dataclass
class CallServer:
    catalog: Callable[[], CatalogSnapshot]
    registry: Registry
    config: ServerConfig = field(default_factory=ServerConfig)
    records: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=RECENT_RECORDS))
    listeners: list[Callable[[CallRecord], None]] = field(default_factory=list)
    # the outbox, post-call work and delivery; by default post-call work only
    results: CallResults | None = None
    # live watchers of every call's transcript and timeline: (kind, data)
    observers: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    active: int = 0
    _runner: web.AppRunner | None = None
    _stream_tokens: StreamTokens | None = None
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    url: str = ""

    # -- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.post("/twilio/voice", self.twilio_webhook),
                web.get("/twilio/stream", self.twilio_stream),
                web.get("/exotel/stream", self.exotel_stream),
                web.get("/ws", self.generic_stream),
                web.get("/api/bots", self.list_bots),
                web.get("/healthz", self.health),
                web.get("/", self.widget_page),
            ]
        )
        if WIDGET_DIR.is_dir():
            app.router.add_static("/widget/", WIDGET_DIR)
        return app

    async def start(self) -> str:
        if self.results is None:
            self.results = CallResults(self.registry)
        if self.config.twilio_auth_token:
            self._stream_tokens = StreamTokens(self.config.twilio_auth_token)
        self.results.listeners.append(self._keep)
        await self.results.start()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.results is not None:
            await self.results.aclose()

    # -- HTTP --------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        stage, lag = current_lag()
        return web.json_response(
            {
                "active_calls": self.active,
                "max_concurrent_calls": self.config.max_concurrent_calls,
                "lag_ms": round(lag * 1000, 1),
                "lagging": stage if lag > LAG_LIMIT else None,
            }
        )

    def _refusal(self) -> str | None:
        """Why a new call cannot be taken now (at capacity, or falling behind real time)."""
        if self.active >= self.config.max_concurrent_calls:
            return f"at capacity ({self.active}/{self.config.max_concurrent_calls} calls)"
        return overloaded()

    async def list_bots(self, request: web.Request) -> web.Response:
        bots = [
            {
                "id": bot.id,
                "version": bot.version,
                "description": bot.bot.description,
                "variables": {
                    name: {
                        "default": spec.default,
                        "required": spec.required,
                        "description": spec.description,
                    }
                    for name, spec in bot.bot.variables.items()
                },
            }
            for bot in self.catalog()
        ]
        return web.json_response(
            {
                "bots": bots,
                "default": self.config.default_bot,
                "schedule_override": self.config.allow_schedule_override,
            }
        )

    async def widget_page(self, request: web.Request) -> web.StreamResponse:
        index = WIDGET_DIR / "index.html"
        if not index.is_file():
            raise web.HTTPNotFound(text="the widget is not installed")
        return web.FileResponse(index)

    async def twilio_webhook(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self.config.twilio_auth_token and not self._twilio_signed(request, form):
            log.warning("rejected a Twilio webhook with a missing or invalid signature")
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
        bot = request.query.get("bot") or self.config.default_bot
        caller, callee = form.get("From", ""), form.get("To", "")
        if (full := self._refusal()) is not None:
            await self._finish(
                self._unstarted_record(
                    CallRequest(bot=bot or "", transport="twilio", caller=caller, callee=callee),
                    DisconnectedBy.REJECTED,
                    full,
                )
            )
            return _twiml(refuse_twiml(self.config.busy_message))
        parameters = {"caller": caller, "callee": callee}
        if bot:
            parameters["bot"] = bot
        if self._stream_tokens is not None:  # the stream must come back with it
            parameters[TOKEN_PARAMETER] = self._stream_tokens.issue(form.get("CallSid", ""))
        return _twiml(connect_stream_twiml(self._stream_url(request), parameters))

    def _twilio_signed(self, request: web.Request, form: dict[str, str]) -> bool:
        from twilio.request_validator import RequestValidator

        signature = request.headers.get("X-Twilio-Signature", "")
        validator = RequestValidator(self.config.twilio_auth_token)
        return bool(signature) and validator.validate(self._public(request), form, signature)

    def _public(self, request: web.Request) -> str:
        """The URL Twilio called (behind a proxy, as configured by ``public_url``)."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/") + request.path_qs
        proto = request.headers.get("X-Forwarded-Proto", request.scheme)
        return f"{proto}://{request.host}{request.path_qs}"

    def _stream_url(self, request: web.Request) -> str:
        base = self._public(request).split("/twilio/voice")[0]
        return base.replace("https://", "wss://").replace("http://", "ws://") + "/twilio/stream"

    # -- WebSocket transports ----------------------------------------------------------

    async def twilio_stream(self, request: web.Request) -> web.WebSocketResponse:
        token = self.config.twilio_auth_token
        if token:
            signature = request.headers.get("X-Twilio-Signature", "")
            http_url = self._public(request)  # this request's URL, as the TwiML gave it
            ws_url = http_url.replace("https://", "wss://").replace("http://", "ws://")
            if not signed_handshake(token, [ws_url, http_url], signature):
                log.warning("rejected a Twilio stream with a missing or invalid signature")
                raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
        return await self._serve_stream(request, TwilioWire())

    async def exotel_stream(self, request: web.Request) -> web.WebSocketResponse:
        try:
            wire = ExotelWire(int(request.query.get("sample-rate", "8000")), dict(request.query))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._serve_stream(request, wire)

    async def generic_stream(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve_stream(request, GenericWire())

    async def _serve_stream(self, request: web.Request, wire: Wire) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._converse(ws, wire)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _converse(self, ws: web.WebSocketResponse, wire: Wire) -> None:
        try:
            start = await await_start(ws, wire)
        except StartFailed as exc:
            log.info("%s stream closed before a call: %s", wire.transport, exc)
            await send_error(ws, wire, str(exc))
            await ws.close(code=1008, message=str(exc).encode()[:120])
            return
        request = self._request(start, wire)
        if isinstance(wire, TwilioWire) and self._stream_tokens is not None:
            refusal = self._stream_tokens.redeem(start.auth_token, start.call_id)
            if refusal:
                log.warning("rejected a Twilio stream: %s", refusal)
                cause = f"unauthenticated stream: {refusal}"
                await self._finish(self._unstarted_record(request, DisconnectedBy.REJECTED, cause))
                await send_error(ws, wire, cause)
                await ws.close(code=1008, message=cause.encode()[:120])
                return
        if (full := self._refusal()) is not None:
            await self._finish(self._unstarted_record(request, DisconnectedBy.REJECTED, full))
            await send_error(ws, wire, full)
            await ws.close(code=1013, message=f"{full}: try again later".encode()[:120])
            return
        self.active += 1
        try:
            try:
                request = await resolve_request(request, self.registry)
                plan = plan_call(self.catalog(), request, self.registry, resolved=True)
            except DialplanError as exc:
                refused = isinstance(exc, CallRejected)
                reason = DisconnectedBy.REJECTED if refused else DisconnectedBy.ERROR
                await self._finish(self._unstarted_record(request, reason, str(exc)))
                await send_error(ws, wire, str(exc))
                await ws.close(code=1008, message=str(exc).splitlines()[0].encode()[:120])
                return
            record_audio = self.config.record_all or plan.bot.bot.recording.enabled
            assert self.results is not None
            call = StreamCall(
                ws,
                wire,
                plan,
                start,
                record_audio=record_audio,
                observers=self.observers,
                checkpoint=self.results.checkpoint,
            )
            try:
                record = await call.run()
            except Exception as exc:  # a bug, not bad input: still a record, still a hang-up
                log.exception("call %s failed", request.session_id)
                cause = f"internal error: {type(exc).__name__}: {exc}"
                await self._finish(
                    self._unstarted_record(request, DisconnectedBy.ERROR, cause), plan.bot
                )
                await ws.close(code=1011, message=b"call failed: internal error")
                return
            if call.recorder is not None:
                record.recording_key = await self._store_recording(record, call)
            await self._finish(record, plan.bot)
        finally:
            self.active -= 1

    def _request(self, start: Start, wire: Wire) -> CallRequest:
        snapshot = self.catalog()
        bot = start.bot or self.config.default_bot or _only_bot(snapshot) or ""
        return CallRequest(
            bot=bot,
            variables=_declared_only(start.variables, snapshot, bot, wire.transport),
            transport=wire.transport,
            direction="outbound" if start.outbound else "inbound",
            caller=start.caller,
            callee=start.callee,
            overrides=self._overrides(start),
        )

    def _overrides(self, start: Start) -> CallOverrides:
        overrides = self.config.overrides or CallOverrides()
        if start.ignore_schedule and self.config.allow_schedule_override:
            return overrides.model_copy(update={"ignore_schedule": True})
        if start.ignore_schedule:
            log.warning("a stream asked to ignore the schedule; this server does not allow it")
        return overrides

    # -- records -----------------------------------------------------------------------

    def _unstarted_record(
        self, request: CallRequest, disconnected_by: DisconnectedBy, cause: str
    ) -> CallRecord:
        """A call that never conversed still leaves a record (refused, or set-up failed)."""
        snapshot = self.catalog()
        version = snapshot.bots[request.bot].version if request.bot in snapshot.bots else ""
        return unstarted_record(request, disconnected_by, cause, version)

    async def _store_recording(self, record: CallRecord, call: StreamCall) -> str:
        """Write the WAV, then offer it to the ``store_recording`` plugins."""
        assert call.recorder is not None
        path = self.config.recordings_dir / f"{record.session_id}.wav"
        call.recorder.write(path)
        return await offer_recording(self.registry, record, path)

    async def _finish(self, record: CallRecord, bot: CompiledBot | None = None) -> None:
        """Hand the record on: durable in the outbox before this call's slot is freed;
        post-call work and delivery follow off the media path."""
        if bot is None:
            bot = self.catalog().bots.get(record.bot_id)
        assert self.results is not None, "start() the server first"
        await self.results.ended(record, bot)

    def _keep(self, record: CallRecord) -> None:
        """A finished record (post-call work done): recent list, records directory."""
        self.records.append(record)
        if self.config.records_dir is not None:
            self.config.records_dir.mkdir(parents=True, exist_ok=True)
            target = self.config.records_dir / f"{record.session_id}.json"
            target.write_text(record.model_dump_json(indent=2))
        for listener in self.listeners:
            listener(record)


def _declared_only(
    variables: dict[str, Any], snapshot: CatalogSnapshot, bot: str, transport: str
) -> dict[str, Any]:
    """Per-call variables from the wire, limited to those the bot declares: a stream's
    parameters are the caller's side's to choose, and may not set what the bot never
    asked for (an unknown bot is refused later, with its own error)."""
    compiled = snapshot.bots.get(bot)
    if compiled is None:
        return variables
    declared = compiled.bot.variables
    refused = sorted(name for name in variables if name not in declared)
    if refused:
        log.warning(
            "%s stream for bot %r: ignored variable(s) the bot does not declare: %s",
            transport,
            bot,
            ", ".join(refused),
        )
    return {name: value for name, value in variables.items() if name in declared}


def _only_bot(snapshot: CatalogSnapshot) -> str | None:
    ids = list(snapshot.bots)
    return ids[0] if len(ids) == 1 else None


def _twiml(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml")
