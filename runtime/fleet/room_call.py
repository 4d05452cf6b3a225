"""One LiveKit job: route it to a bot, converse, end for one reason, hand the record on.

    job metadata + the party's SIP attributes → CallRequest (routing.py)
    → resolve_call plugins (e.g. the config endpoint; a 404 is spoken and rejected)
    → plan → AgentSession bound to the room (the line's control for transfers and tones,
      the party's keys as turns) → until the bot or the party ends it
    → the room is deleted (LiveKit sends BYE) → record → outbox, post-call, delivery

An outbound call's dial failures (busy, no answer) are recorded by the dialer that placed
it (`dialer.py`), which knows the SIP status; the job only sees the room stay empty.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.call import CallRequest, unstarted_record
from runtime.call_checkpoints import Checkpoints, Save
from runtime.catalog import CatalogSnapshot
from runtime.compiler import CompiledBot
from runtime.errors import CallRejected, DialplanError
from runtime.fleet.config import FleetConfig
from runtime.fleet.room_line import Party, RoomLine
from runtime.fleet.routing import JobMetadata, parse_job_metadata, route_job
from runtime.keypad import Keypad
from runtime.record import CallEvent, CallRecord, DisconnectedBy
from runtime.recordings import offer_recording
from runtime.registry import Registry
from runtime.resolve import CallPlan, plan_call, resolve_request

log = logging.getLogger("dialplan.fleet")

INBOUND_JOIN_TIMEOUT = 30.0  # a SIP caller is in the room before the job is dispatched
OUTBOUND_JOIN_MARGIN = 15.0  # beyond the ringing timeout: the dialer gives up first

HandOff = Callable[[CallRecord, CompiledBot | None], Awaitable[None]]


@dataclass
class RoomCallServices:
    """What every job of a worker shares: the bots of the moment, plugins, the fleet
    config, and where records and recordings go."""

    catalog: Callable[[], CatalogSnapshot]
    registry: Registry
    fleet: FleetConfig
    hand_off: HandOff
    recordings_dir: Path = Path("recordings")
    checkpoint: Save | None = None  # stores a call's progress while it runs


async def serve_room_call(
    line: RoomLine, raw_metadata: str, services: RoomCallServices
) -> CallRecord | None:
    """Run the job's call; returns its record (None: an outbound callee never answered)."""
    accepted = time.perf_counter()
    try:
        metadata = parse_job_metadata(raw_metadata)
    except DialplanError as exc:
        record = _unstarted(CallRequest(bot="", transport="livekit"), DisconnectedBy.ERROR, exc)
        await services.hand_off(record, None)
        return record
    await line.connect()
    party = await _wait_for_party(line, metadata)
    if party is None:
        if metadata.dial is None:
            request = CallRequest(bot=metadata.bot or "", transport="livekit")
            reason = f"nobody joined room {line.room_name} within {INBOUND_JOIN_TIMEOUT:g} s"
            record = _unstarted(request, DisconnectedBy.ERROR, reason)
            await services.hand_off(record, None)
            await line.hang_up()
            return record
        return None
    return await _converse(line, metadata, party, services, accepted)


async def _wait_for_party(line: RoomLine, metadata: JobMetadata) -> Party | None:
    dial = metadata.dial
    timeout = dial.ringing_timeout + OUTBOUND_JOIN_MARGIN if dial else INBOUND_JOIN_TIMEOUT
    identity = dial.participant_identity or None if dial else None
    try:
        party = line.wait_for_party(identity, answered=dial is not None)
        return await asyncio.wait_for(party, timeout)
    except (asyncio.TimeoutError, RuntimeError):
        return None


async def _converse(
    line: RoomLine,
    metadata: JobMetadata,
    party: Party,
    services: RoomCallServices,
    accepted: float,
) -> CallRecord:
    request = CallRequest(bot=metadata.bot or "", transport="livekit")
    snapshot = services.catalog()  # this call's bots, to the end (a reload never changes it)
    try:
        request = route_job(metadata, party.attributes, services.fleet, is_sip=party.is_sip)
        plan = await _plan(snapshot, request, services.registry)
    except DialplanError as exc:
        record = _unstarted(request, DisconnectedBy.ERROR, exc)
        await services.hand_off(record, snapshot.bots.get(request.bot))
        await line.hang_up()
        return record
    from runtime.session import build_call_session  # livekit: only when a call runs

    call_session = build_call_session(plan, text_only=False)
    call = call_session.call
    call.control = line.control(party)  # before any tool can run: a transfer is real
    record_audio = plan.bot.bot.recording.enabled
    start_options = line.bind(call_session.session, party)
    if record_audio:
        start_options["record"] = {"audio": True, "traces": False, "logs": False}
    else:
        start_options["record"] = False
    disconnected_by, cause = DisconnectedBy.CUSTOMER, None
    checkpoints = Checkpoints(call, services.checkpoint) if services.checkpoint else None
    if checkpoints is not None:
        checkpoints.start()
    left = asyncio.create_task(line.party_left(party), name="dialplan.party_left")
    keypad = Keypad(call, call_session.session)
    stop_keys = line.on_key(party, keypad.press)
    try:
        await call_session.start(**start_options)
        call.add_event(
            "job_started",
            room=line.room_name,
            setup_ms=round((time.perf_counter() - accepted) * 1000, 2),
        )
        bot_done = asyncio.create_task(call_session.finished.wait())
        done, _ = await asyncio.wait({left, bot_done}, return_when=asyncio.FIRST_COMPLETED)
        if left in done:
            bot_done.cancel()
            cause = left.result()
    except Exception as exc:  # the pipeline failed: end the call, keep the record
        disconnected_by, cause = DisconnectedBy.ERROR, f"{type(exc).__name__}: {exc}"
    stop_keys()
    keypad.close()
    left.cancel()
    if checkpoints is not None:
        await checkpoints.aclose()
    record = await call_session.close(disconnected_by, cause=cause)
    await line.hang_up()  # the room goes: LiveKit ends the SIP leg with a BYE
    if record_audio:
        record.recording_key = await _store_recording(line, record, services)
    await services.hand_off(record, plan.bot)
    return record


async def _plan(snapshot: CatalogSnapshot, request: CallRequest, registry: Registry) -> CallPlan:
    """The call's plan; a call the config endpoint refuses still gets a plan on the bot's
    defaults, so the caller hears why before the line closes."""
    try:
        resolved = await resolve_request(request, registry)
    except CallRejected as exc:
        plan = plan_call(snapshot, request, registry, resolved=True)
        return replace(plan, rejected=str(exc), lines=replace(plan.lines, rejected=exc.message))
    return plan_call(snapshot, resolved, registry, resolved=True)


async def _store_recording(line: RoomLine, record: CallRecord, services: RoomCallServices) -> str:
    """Copy livekit's recording out of the job's session directory (removed when the job
    ends), then offer it to the ``store_recording`` plugins."""
    source = line.recording()
    if source is None or not source.exists():
        return ""
    target = services.recordings_dir / f"{record.session_id}{source.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.copyfile, source, target)
    return await offer_recording(services.registry, record, target)


def _unstarted(
    request: CallRequest, disconnected_by: DisconnectedBy, cause: Exception | str
) -> CallRecord:
    text = cause if isinstance(cause, str) else str(cause)
    record = unstarted_record(request, disconnected_by, text)
    record.events.append(CallEvent(type="setup_failed", at=0.0, data={"error": text}))
    log.warning("call %s did not start: %s", request.session_id, text)
    return record
