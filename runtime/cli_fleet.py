"""Fleet commands: ``start``, ``provision``, ``doctor``, ``call`` and ``campaign``.

All of them read the fleet config (``dialplan.toml``, or ``--config``/``$DIALPLAN_CONFIG``)
and, where they talk to LiveKit, ``LIVEKIT_URL``/``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli_args import parse_vars
from runtime.phone_numbers import NotDialable, phone_number
from runtime.record import DisconnectedBy

if TYPE_CHECKING:
    from livekit import api

    from runtime.call_results import CallResults
    from runtime.fleet.config import FleetConfig
    from runtime.fleet.dialer import Call
    from runtime.registry import Registry

DELIVER_BEFORE_EXIT = 15.0  # seconds a one-off command waits for its records to be sent


def add_fleet_commands(commands: Any) -> None:
    start = commands.add_parser("start", help="run a LiveKit worker serving every bot")
    _config_argument(start)
    start.add_argument("--bots", type=Path, help="bots directory (default: [worker] bots)")
    start.add_argument("--agent-name", help="the agent name dispatch rules ask for")
    start.add_argument("--max-calls", type=int, help="calls at once on this worker")
    start.add_argument("--watch", action="store_true", help="hot-reload bot/template changes")
    start.add_argument("--dev", action="store_true", help="development mode (debug logs, watch)")
    start.set_defaults(handler=cmd_start)

    provision = commands.add_parser(
        "provision", help="create/update SIP trunks and dispatch rules from the fleet config"
    )
    _config_argument(provision)
    provision.add_argument("--dry-run", action="store_true", help="show the changes only")
    provision.set_defaults(handler=cmd_provision)

    doctor = commands.add_parser("doctor", help="check what calls would fail, and why")
    _config_argument(doctor)
    doctor.add_argument("--bots", type=Path, help="bots directory (default: [worker] bots)")
    doctor.set_defaults(handler=cmd_doctor)

    call = commands.add_parser("call", help="place an outbound call through LiveKit SIP")
    _config_argument(call)
    call.add_argument("bot", help="bot id")
    call.add_argument("--to", required=True, help="the number to call (E.164)")
    call.add_argument("--from", dest="from_", help="caller id (default: the trunk's first)")
    call.add_argument("--trunk", help="outbound trunk name (default: the first configured)")
    call.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    call.add_argument("--ringing-timeout", type=float, help="seconds (default: the bot's)")
    call.add_argument("--wait", action="store_true", help="after the answer, wait for the end")
    call.add_argument("--bots", type=Path, help="bots directory (default: [worker] bots)")
    call.set_defaults(handler=cmd_call)

    from runtime.cli_campaign import add_campaign_commands

    add_campaign_commands(commands, _config_argument)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["DIALPLAN_CONFIG"]) if os.environ.get("DIALPLAN_CONFIG") else None,
        help="fleet config file (default: ./dialplan.toml when present)",
    )


def load_config(args: argparse.Namespace) -> FleetConfig:
    from runtime.fleet.config import load_fleet_config

    return load_fleet_config(args.config)


def livekit_client() -> api.LiveKitAPI:
    from livekit import api

    from runtime.fleet.worker import require_credentials

    require_credentials(os.environ)
    return api.LiveKitAPI()


# -- start -------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    import logging

    from runtime.fleet.worker import Worker, require_credentials

    config = load_config(args)
    require_credentials(os.environ)  # before anything slow: a fleet must notice at once
    logging.basicConfig(
        level=logging.DEBUG if args.dev else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    worker = Worker(
        bots=args.bots or config.worker.bots,
        agent_name=args.agent_name,
        config=config,
        max_concurrent_calls=args.max_calls,
        watch=True if (args.watch or args.dev) else None,
        exit_after_drain=True,  # a stopped `dialplan start` is a process that ends
    )

    def ready() -> None:
        assert worker.live is not None and worker.results is not None
        bots = worker.live.current()
        print(f"dialplan start — agent {worker.agent_name!r}, {len(bots)} bot(s)", flush=True)
        print(f"  LiveKit             {os.environ['LIVEKIT_URL']}", flush=True)
        print(f"  capacity            {worker.max_concurrent_calls} concurrent calls", flush=True)
        print(f"  call records        {worker.results.describe()}", flush=True)
        if worker.watch:
            print(f"  watching            {worker.live.bots_dir}", flush=True)

    asyncio.run(worker.run(devmode=args.dev, ready=ready))
    return 0


# -- provision / doctor --------------------------------------------------------------------


def cmd_provision(args: argparse.Namespace) -> int:
    from runtime.fleet.provision import provision

    config = load_config(args)

    async def run() -> Any:
        client = livekit_client()
        try:
            return await provision(config, client, dry_run=args.dry_run)
        finally:
            await client.aclose()

    report = asyncio.run(run())
    for line in report.lines():
        print(line)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from runtime.fleet.doctor import diagnose
    from runtime.fleet.worker import missing_credentials

    config = load_config(args)
    bot_ids = _bot_ids(args.bots or config.resolve_path(config.worker.bots))

    async def run() -> Any:
        if missing_credentials(os.environ):
            return await diagnose(config, bot_ids, None, os.environ)
        from livekit import api

        client = api.LiveKitAPI()
        try:
            return await diagnose(config, bot_ids, client, os.environ)
        finally:
            await client.aclose()

    report = asyncio.run(run())
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _bot_ids(bots: Path) -> list[str]:
    from runtime.catalog import load_catalog
    from runtime.registry import load_registry

    if not bots.is_dir():
        return []
    snapshot = load_catalog(bots, load_registry())
    for problem in snapshot.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return list(snapshot.bots)


# -- call --------------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from runtime.fleet.dialer import Call
    from runtime.fleet.results_config import open_results
    from runtime.registry import load_registry

    try:
        to = phone_number(args.to)
    except NotDialable as exc:
        print(f"dialplan: --to: {exc}", file=sys.stderr)
        return 2
    config = load_config(args)
    registry = load_registry()
    variables = parse_vars(args.var, [])
    bot_spec = check_outbound_call(config, registry, args.bot, variables, args.bots)

    async def run() -> int:
        results = open_results(config, registry)
        await results.start(beside_a_deliverer=True)  # a worker may run here
        client = livekit_client()
        call = Call(
            bot=args.bot,
            to=to,
            from_=args.from_,
            trunk=args.trunk,
            variables=variables,
            ringing_timeout=args.ringing_timeout,
            config=config,
            livekit_api=client,
            results=results,
            bot_spec=bot_spec,
        )
        try:
            print(f"calling {to} with {args.bot} (room {call.room}) ...", flush=True)
            return await _place(call, wait=args.wait)
        finally:
            await client.aclose()
            await close_results(results)

    return asyncio.run(run())


async def close_results(results: CallResults) -> None:
    """A one-off command's records are delivered before it exits (for a while): say
    which are not, so nobody wonders where a record went."""
    await results.aclose(deliver_within=DELIVER_BEFORE_EXIT)
    if results.delivered_by is not None:
        print(
            f"note: the records are in {results.describe()}; the process delivering from it "
            f"(pid {results.delivered_by}) sends them",
            file=sys.stderr,
        )
    if results.undelivered:
        sessions = sorted({session_id for session_id, _sink, _state in results.undelivered})
        where = ", ".join(f"{sink} ({state})" for _id, sink, state in results.undelivered[:3])
        print(
            f"note: {len(sessions)} record(s) not delivered yet ({where}); they stay in "
            f"{results.describe()} and are sent by the next process using it "
            "(`dialplan outbox list` shows them)",
            file=sys.stderr,
        )


async def _place(call: Call, *, wait: bool) -> int:
    outcome = await call.place()
    if not outcome.answered:
        reason = outcome.disconnected_by.value if outcome.disconnected_by else ""
        failed = outcome.disconnected_by == DisconnectedBy.ERROR
        print(
            f"{'call failed' if failed else 'not answered'}: {reason} ({outcome.cause}); "
            f"record {outcome.session_id}",
            file=sys.stderr if failed else sys.stdout,
            flush=True,
        )
        return 1 if failed else 3
    print(f"answered: session {outcome.session_id}, room {outcome.room}", flush=True)
    if wait:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        ended = asyncio.create_task(call.wait_ended())
        interrupted = asyncio.create_task(stop.wait())
        await asyncio.wait([ended, interrupted], return_when=asyncio.FIRST_COMPLETED)
        print("call ended" if ended.done() else "stopped waiting", flush=True)
        ended.cancel()
        interrupted.cancel()
    return 0


def check_outbound_call(
    config: FleetConfig,
    registry: Registry,
    bot: str,
    variables: dict[str, Any],
    bots: Path | None,
    *,
    strict: bool = True,
) -> Any:
    """When the bots are at hand, refuse to ring anyone for a call that cannot start
    (an unknown bot; with ``strict``, a missing required variable too — a campaign's
    variables come per row); returns the bot, whose limits set the ringing timeout."""
    from runtime.call import CallRequest
    from runtime.catalog import load_catalog
    from runtime.resolve import plan_call

    directory = bots or config.resolve_path(config.worker.bots)
    if not directory.is_dir():
        print(f"note: {directory} not found; the worker will check the bot", file=sys.stderr)
        return None
    snapshot = load_catalog(directory, registry)
    if not strict:
        return snapshot.get(bot)
    request = CallRequest(bot=bot, variables=variables, direction="outbound", transport="sip")
    return plan_call(snapshot, request, registry, resolved=True).bot
