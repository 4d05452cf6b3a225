"""`dialplan serve` (the call server) and `dialplan simulate` (a phone call, offline)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.caller_voices import CALLER_VOICES, DEFAULT_CALLER_VOICE
from runtime.cli_args import UsageError, caller_arguments, parse_vars
from runtime.flow.narration import FLOW_EVENTS, flow_line

if TYPE_CHECKING:
    from runtime.registry import Registry
    from runtime.transports.server import CallServer

DEFAULT_PORT = 8080
CALLER_VOICE = {"provider": "piper", "deterministic": True}


def add_voice_commands(commands: Any, default_bots: Path) -> None:
    serve = commands.add_parser(
        "serve", help="the call server: Twilio, Exotel and generic WebSockets, browser widget"
    )
    serve.add_argument("bots_dir", nargs="?", type=Path, default=default_bots, metavar="BOTS_DIR")
    serve.add_argument("--prompts", type=Path, help="prompts directory (default: ../prompts)")
    _server_arguments(serve)
    serve.add_argument(
        "--watch", action="store_true", help="reload bots and templates when files change"
    )
    serve.set_defaults(handler=cmd_serve)

    simulate = commands.add_parser(
        "simulate",
        help="a simulated phone call: synthesized caller lines over Twilio Media Streams",
    )
    simulate.add_argument("bot", help="bot id")
    simulate.add_argument("--bots", type=Path, default=default_bots, help="bots directory")
    simulate.add_argument("--prompts", type=Path, help="prompts directory (default: ../prompts)")
    simulate.add_argument("--script", type=Path, help="the caller's lines, one per line")
    simulate.add_argument("--say", action="append", default=[], metavar="TEXT")
    simulate.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    caller_arguments(simulate)
    simulate.add_argument(
        "--voice",
        choices=sorted(CALLER_VOICES),
        help=f"the caller's voice (default {DEFAULT_CALLER_VOICE}; with --exact, joe): "
        + "; ".join(f"{name}: {spec.description}" for name, spec in CALLER_VOICES.items()),
    )
    simulate.add_argument(
        "--expect-end",
        choices=["bot", "customer"],
        help="exit 1 unless the call ended this way (bot: the bot hung up, as a script that "
        "ends with a goodbye expects)",
    )
    simulate.add_argument(
        "--expect-step",
        action="append",
        default=[],
        metavar="STEP",
        help="exit 1 unless the call went through this flow step (repeatable)",
    )
    simulate.add_argument(
        "--exact",
        action="store_true",
        help="pocketsphinx listens for exactly the script's lines (a grammar) instead of the "
        "bot's recognizer: exact transcripts",
    )
    simulate.add_argument(
        "--ignore-schedule",
        action="store_true",
        help="answer as if the bot were open, whatever its [schedule] says",
    )
    simulate.add_argument("--recordings", type=Path, default=Path("recordings"))
    simulate.add_argument(
        "--record", metavar="PATH", help="write the call record JSON ('-' prints)"
    )
    simulate.set_defaults(handler=cmd_simulate)


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--host", default=env("DIALPLAN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("DIALPLAN_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--max-calls",
        type=int,
        default=int(env("DIALPLAN_MAX_CALLS", "20")),
        help="max_concurrent_calls: the next caller is refused (default 20)",
    )
    parser.add_argument("--default-bot", default=env("DIALPLAN_DEFAULT_BOT"))
    parser.add_argument(
        "--public-url",
        default=env("DIALPLAN_PUBLIC_URL"),
        help="how Twilio reaches this server (for TwiML stream URLs and signatures)",
    )
    parser.add_argument("--records", type=Path, help="also write each call record as JSON here")
    parser.add_argument("--recordings", type=Path, default=Path("recordings"))
    parser.add_argument("--record-all", action="store_true", help="record every call's audio")
    parser.add_argument(
        "--outbox",
        type=Path,
        default=Path(env("DIALPLAN_OUTBOX", "dialplan-outbox.db")),
        help="the SQLite outbox every call record is written to (default dialplan-outbox.db)",
    )
    parser.add_argument(
        "--no-outbox", action="store_true", help="keep records in memory only (no delivery)"
    )
    parser.add_argument(
        "--webhook",
        action="append",
        default=[url for url in env("DIALPLAN_WEBHOOKS", "").replace(",", " ").split() if url],
        metavar="URL",
        help="POST every call record here (repeatable; $DIALPLAN_WEBHOOKS); signed with "
        "$DIALPLAN_WEBHOOK_SECRET",
    )
    parser.add_argument(
        "--results-jsonl", type=Path, metavar="PATH", help="append every call record to PATH"
    )


def call_results(args: argparse.Namespace, registry: Registry) -> Any:
    """The outbox and deliverer the flags ask for, as the server's CallResults."""
    from runtime.call_results import CallResults
    from runtime.delivery import DeliveryConfig, open_delivery

    if args.no_outbox:
        if args.webhook or args.results_jsonl:
            raise UsageError("--webhook and --results-jsonl need the outbox (drop --no-outbox)")
        return CallResults(registry)
    config = DeliveryConfig(
        outbox_path=args.outbox,
        # a fleet's shared PostgreSQL store, as `dialplan start` reads it from dialplan.toml
        postgres_dsn=os.environ.get("DIALPLAN_RESULTS_DSN") or None,
        webhooks=tuple(args.webhook),
        webhook_secret=os.environ.get("DIALPLAN_WEBHOOK_SECRET") or None,
        jsonl_path=args.results_jsonl,
    )
    outbox, deliverer = open_delivery(config, registry)
    return CallResults(registry, outbox, deliverer)


def _live_catalog(bots: Path, prompts: Path | None, registry: Registry) -> Any:
    from runtime.live_catalog import LiveCatalog

    if not bots.is_dir():
        raise UsageError(f"{bots}: not a directory")
    return LiveCatalog(bots, registry, prompts)


def server_config(args: argparse.Namespace) -> Any:
    from runtime.transports.server import ServerConfig

    if args.max_calls < 0:
        raise UsageError("--max-calls must be 0 or more")
    return ServerConfig(
        host=args.host,
        port=args.port,
        max_concurrent_calls=args.max_calls,
        default_bot=args.default_bot,
        public_url=args.public_url,
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        recordings_dir=args.recordings,
        records_dir=args.records,
        record_all=args.record_all,
    )


def endpoint_lines(server: CallServer) -> list[str]:
    url = server.url
    ws = url.replace("http://", "ws://")
    return [
        f"  browser widget      {url}/",
        f"  Twilio webhook      POST {url}/twilio/voice   (stream: {ws}/twilio/stream)",
        f"  Exotel voicebot     {ws}/exotel/stream?sample-rate=8000",
        f"  generic WebSocket   {ws}/ws",
        f"  capacity            {server.config.max_concurrent_calls} concurrent calls",
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.registry import load_registry

    registry = load_registry()
    for failure in registry.failures:
        print(f"warning: {failure}", file=sys.stderr)
    live = _live_catalog(args.bots_dir, args.prompts, registry)
    config = server_config(args)
    for problem in live.current().problems:
        print(f"error: {problem}", file=sys.stderr)
    try:
        asyncio.run(_serve(live, registry, config, call_results(args, registry), watch=args.watch))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


async def _serve(live: Any, registry: Registry, config: Any, results: Any, *, watch: bool) -> None:
    from runtime.devserver import describe_reload
    from runtime.transports.server import CallServer

    server = CallServer(live.current, registry, config, results=results)
    warmer = await warm_voices(registry, live.current())
    await server.start()
    print(f"dialplan serve — {len(live.current())} bot(s) from {live.bots_dir}", flush=True)
    for line in endpoint_lines(server):
        print(line, flush=True)
    print(f"  call records        {results.describe()}", flush=True)
    stop = asyncio.Event()
    tasks = []
    if watch:
        from runtime.watch import watch_catalog

        def on_reload(report: Any) -> None:
            for line in describe_reload(report):
                print(line, flush=True)
            # a bot that brings a voice not loaded yet: load it now, not on its first call
            tasks.append(asyncio.create_task(rewarm(warmer, live.current())))

        tasks.append(asyncio.create_task(watch_catalog(live, on_reload, stop=stop)))
        print(f"  watching            {live.bots_dir} and {live.prompts_dir}", flush=True)
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)  # calls end with a record, not a kill
    try:
        await shutdown.wait()
        print(f"dialplan serve — shutting down ({server.active} call(s) in progress)", flush=True)
    finally:
        stop.set()
        for task in tasks:
            await task
        await server.stop()


async def warm_voices(registry: Registry, snapshot: Any) -> Any:
    """Load every local voice model the bots use before the first call can arrive."""
    from runtime.warmup import VoiceWarmer

    warmer = VoiceWarmer(registry)
    started = time.perf_counter()
    warmed = await warmer.warm(snapshot.bots.values())
    if warmed:
        lines = ", ".join(w.line() for w in warmed)
        print(f"  voices warmed       {lines} ({time.perf_counter() - started:.1f} s)", flush=True)
    return warmer


async def rewarm(warmer: Any, snapshot: Any) -> None:
    for warmed in await warmer.warm(snapshot.bots.values()):
        print(f"[warm] {warmed.line()}", flush=True)


# -- simulate --------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from runtime.registry import load_registry

    lines = list(args.say)
    if args.script:
        try:
            text = args.script.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--script {args.script}: {exc.strerror}") from None
        lines += [ln.strip() for ln in text.splitlines() if ln.strip() and ln[:1] != "#"]
    if not lines:
        raise UsageError("give the caller something to say: --script FILE or --say TEXT")
    registry = load_registry()
    live = _live_catalog(args.bots, args.prompts, registry)
    bot = live.current().get(args.bot)
    variables = parse_vars(args.var, [])
    return asyncio.run(_simulate(args, live, registry, bot, lines, variables))


async def _simulate(
    args: argparse.Namespace,
    live: Any,
    registry: Registry,
    bot: Any,
    lines: list[str],
    variables: dict[str, Any],
) -> int:
    from runtime.call import CallOverrides
    from runtime.phone_sim import SimulatedCaller, exact_listening
    from runtime.transports.server import CallServer, ServerConfig
    from runtime.voice_synth import CallerVoice

    overrides = CallOverrides(ignore_schedule=args.ignore_schedule)
    if args.exact:
        # a bot on the offline default recognizer hears through pocketsphinx instead
        if bot.bot.stt is not None and bot.bot.stt.provider != "pocketsphinx":
            stt = bot.bot.stt.provider
            raise UsageError(f"--exact needs the pocketsphinx STT; {bot.id} uses {stt!r}")
        overrides = overrides.model_copy(update={"stt": exact_listening(lines).stt})
        print("[--exact: pocketsphinx listens for the script's lines only]")
    config = ServerConfig(
        port=0, recordings_dir=args.recordings, record_all=True, overrides=overrides
    )
    server = CallServer(live.current, registry, config)
    server.observers.append(_show_activity)
    # a grammar is plumbing for exact transcripts, heard in the voice pocketsphinx knows
    voice = CallerVoice.named(
        registry, args.voice or ("joe" if args.exact else DEFAULT_CALLER_VOICE)
    )
    await warm_voices(registry, live.current())
    await server.start()
    url = server.url.replace("http://", "ws://") + "/twilio/stream"
    print(f"dialplan simulate — {bot.id} version {bot.version}, a phone call over {url}")
    try:
        ends = {"caller": args.caller, "callee": args.called}
        caller = SimulatedCaller(
            url,
            bot=bot.id,
            variables=variables,
            on_line=_show_caller,
            **{end: number for end, number in ends.items() if number},
        )
        report = await caller.call(lines, voice.synthesize)
    finally:
        await server.stop()
        await voice.aclose()
    if not server.records:
        print("no call record: the server refused the stream", file=sys.stderr)
        return 1
    record = server.records[-1]
    latencies = [t.reply_latency for t in report.turns if t.reply_latency is not None]
    print(
        f"\n[call ended: disconnected_by={record.disconnected_by} "
        f"duration={record.duration:.1f}s cause={record.cause}]"
    )
    if record.disconnected_by == "outside_hours":
        print("[the bot is closed now: --ignore-schedule talks to it anyway]", file=sys.stderr)
    if latencies:
        shown = ", ".join(f"{x:.2f}" for x in latencies)
        print(
            f"[voice-to-voice: end of caller speech → first bot audio: {shown} s "
            f"(median {statistics.median(latencies):.2f} s)]"
        )
    if record.recording_key:
        print(f"[recording: {record.recording_key} (stereo: caller left, bot right)]")
    if args.record == "-":
        print(record.model_dump_json(indent=2))
    elif args.record:
        Path(args.record).write_text(record.model_dump_json(indent=2), encoding="utf-8")
        print(f"[call record: {args.record}]")
    if args.expect_end and record.disconnected_by != args.expect_end:
        print(
            f"[expected the call to end by {args.expect_end}, it ended by "
            f"{record.disconnected_by}]",
            file=sys.stderr,
        )
        return 1
    missed = [step for step in args.expect_step if step not in record.steps]
    if missed:
        print(
            f"[expected the call to go through {', '.join(missed)}; it went "
            f"{' -> '.join(record.steps) or 'through no step'}]",
            file=sys.stderr,
        )
        return 1
    return 0 if record.disconnected_by in ("bot", "customer") else 1


def _show_caller(text: str) -> None:
    print(f"caller> {text}", flush=True)


def _show_activity(kind: str, data: dict[str, Any]) -> None:
    if kind == "transcript":
        who = "bot>   " if data["role"] == "bot" else "heard> "
        print(f"{who}{data['text']}", flush=True)
    elif kind == "event":
        event = data["event"]
        if event["type"] == "tool_call":
            d = event["data"]
            print(f"  [tool] {d['name']} -> {d['outcome']} ({d['latency_ms']:.1f} ms)", flush=True)
        elif event["type"] in FLOW_EVENTS:
            line = flow_line(event["type"], event["data"])
            if line is not None:
                print(line, flush=True)
