"""`dialplan dev`: the catalog, its file watcher and the local transports, in one process.

Bot and template saves reload in-process (see `live_catalog`); the process itself is only
restarted for Python changes (see `code_watch`). Calls are served from the terminal: each
call takes the snapshot of the moment it starts and keeps it to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runtime.cli_args import UsageError, parse_vars
from runtime.errors import DialplanError
from runtime.live_catalog import LiveCatalog, ReloadReport
from runtime.registry import Registry

if TYPE_CHECKING:
    from runtime.record import CallRecord
    from runtime.transports.server import ServerConfig

HELP = """\
  /call BOT [name=value ...]   start a text call with the bot's current version
  /hangup                      end the call (also /quit inside a call)
  /bots                        bots, versions and outstanding problems
  /quit                        stop the server"""


def catalog_lines(live: LiveCatalog) -> list[str]:
    snapshot = live.current()
    lines = [f"  {bot.id:24} {bot.version}" for bot in snapshot]
    return lines + [f"  ! {problem}" for problem in snapshot.problems]


def banner(live: LiveCatalog) -> list[str]:
    lines = [f"dialplan dev — {len(live.current())} bot(s) from {live.bots_dir}"]
    lines += catalog_lines(live)
    lines.append(f"watching {live.bots_dir} and {live.prompts_dir} — saves reload, no restart")
    lines.append("terminal calls:")
    lines.append(HELP)
    return lines


def describe_reload(report: ReloadReport) -> list[str]:
    took = f"({report.seconds * 1000:.0f} ms)"
    lines = [f"[reload] {change} {took}" for change in report.changes]
    changed = {change.bot_id for change in report.changes}
    lines += [
        f"[reload] {bot_id} is valid again: back to the version that kept serving {took}"
        for bot_id in report.fixed
        if bot_id not in changed
    ]
    lines += [f"[reload] error: {problem}" for problem in report.problems]
    if report.still_serving:
        lines.append(
            "[reload] still serving the last good version of: " + ", ".join(report.still_serving)
        )
    if not lines:
        lines.append(f"[reload] nothing changed {took}")
    return lines


def read_lines(stream: TextIO, queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines into ``queue`` from a daemon thread: a thread of the loop's default
    executor, blocked in readline, would keep the process alive after `/quit`."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in iter(stream.readline, ""):
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="dialplan-stdin", daemon=True).start()


async def serve_terminal(
    live: LiveCatalog,
    registry: Registry,
    *,
    stdin: TextIO = sys.stdin,
    out: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    server_config: ServerConfig | None = None,
) -> None:
    """The terminal, the file watcher and (with ``server_config``) the call server."""
    from runtime.watch import watch_catalog

    stop = stop or asyncio.Event()
    for line in banner(live):
        out(line)
    server = None
    warmer = None
    if server_config is not None:
        from runtime.cli_voice import endpoint_lines
        from runtime.transports.server import CallServer
        from runtime.warmup import VoiceWarmer

        server = CallServer(live.current, registry, server_config)
        warmer = VoiceWarmer(registry)
        for warmed in await warmer.warm(live.current().bots.values()):
            out(f"[warm] {warmed.line()}")
        try:
            await server.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {server_config.host}:{server_config.port} ({exc.strerror}); "
                "pick another port with --port"
            ) from None
        out("voice calls (each one uses the bots' version of the moment it starts):")
        for line in endpoint_lines(server):
            out(line)
        server.listeners.append(lambda record: out(_record_line(record)))

    warming: set[asyncio.Task[None]] = set()

    async def rewarm() -> None:
        assert warmer is not None
        for warmed in await warmer.warm(live.current().bots.values()):
            out(f"[warm] {warmed.line()}")

    def on_reload(report: ReloadReport) -> None:
        for line in describe_reload(report):
            out(line)
        if warmer is not None:  # a voice the new version brings is loaded now, not mid-call
            task = asyncio.create_task(rewarm(), name="dialplan.warm")
            warming.add(task)
            task.add_done_callback(warming.discard)

    def on_scenarios(paths: list[Path]) -> None:
        """A saved scenario file, checked against its bot at once (`dialplan test` runs it)."""
        from runtime.scenario_check import check_scenario_file

        for path in paths:
            loaded, problems = check_scenario_file(path, live.current(), registry)
            for problem in problems:
                out(f"[scenarios] error: {problem}")
            if loaded is not None and not problems:
                out(f"[scenarios] ok {path.name}: {len(loaded.scenarios)} scenario(s)")

    watcher = asyncio.create_task(
        watch_catalog(
            live,
            on_reload,
            stop=stop,
            ready=lambda: out("[dev] watching for changes"),
            on_scenarios=on_scenarios,
        ),
        name="dialplan.watch",
    )
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    read_lines(stdin, queue)
    try:
        await _commands(live, registry, queue, out)
    finally:
        stop.set()
        await watcher
        if server is not None:
            await server.stop()


def _record_line(record: CallRecord) -> str:
    return (
        f"[call] {record.transport} call to {record.bot_id} ({record.bot_version}) ended: "
        f"disconnected_by={record.disconnected_by} turns={len(record.transcript)}"
        + (f" cause={record.cause}" if record.cause else "")
    )


async def _commands(
    live: LiveCatalog,
    registry: Registry,
    queue: asyncio.Queue[str | None],
    out: Callable[[str], None],
) -> None:
    while (line := await queue.get()) is not None:
        words = line.split()
        if not words:
            continue
        if words[0] == "/quit":
            return
        if words[0] == "/bots":
            for text in catalog_lines(live):
                out(text)
        elif words[0] == "/call" and len(words) >= 2:
            if await _call(live, registry, words[1], words[2:], queue, out):
                return
        else:
            out(HELP)


async def _call(
    live: LiveCatalog,
    registry: Registry,
    bot_id: str,
    assignments: list[str],
    queue: asyncio.Queue[str | None],
    out: Callable[[str], None],
) -> bool:
    """One terminal call; True when stdin ended during it."""
    from runtime.call import CallRequest
    from runtime.resolve import plan_call
    from runtime.textchat import run_text_call

    try:
        request = CallRequest(bot=bot_id, variables=parse_vars(assignments, []))
        plan = plan_call(live.current(), request, registry)  # this call's snapshot, to the end
    except (DialplanError, UsageError, ValueError) as exc:
        out(f"cannot start the call: {exc}")
        return False
    out(f"[call] {bot_id} version {plan.bot.version} — type your lines; /hangup ends it")
    ended_input = False

    async def caller_lines() -> AsyncIterator[str]:
        nonlocal ended_input
        while (line := await queue.get()) is not None:
            yield line
        ended_input = True

    record = await run_text_call(plan, caller_lines(), out=out)
    out(
        f"[call] ended: disconnected_by={record.disconnected_by} "
        f"version={record.bot_version} turns={len(record.transcript)}"
    )
    return ended_input


def run_dev(
    bots_dir: Path,
    prompts_dir: Path | None,
    registry: Registry,
    server_config: ServerConfig | None = None,
) -> int:
    if not bots_dir.is_dir():
        raise UsageError(f"{bots_dir}: not a directory")
    live = LiveCatalog(bots_dir, registry, prompts_dir)
    with contextlib.suppress(KeyboardInterrupt):  # the restart runner stops us with SIGINT
        asyncio.run(serve_terminal(live, registry, server_config=server_config))
    return 0
