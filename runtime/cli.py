"""The ``dialplan`` command. Each subcommand imports only what it needs, so ``validate``,
``render``, ``graph``, ``plugins`` and ``schema`` never import livekit or litellm."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.caller_voices import CALLER_VOICES, DEFAULT_CALLER_VOICE
from runtime.cli_args import UsageError, caller_arguments, parse_vars
from runtime.errors import DialplanError, Problem

if TYPE_CHECKING:
    from runtime.catalog import CatalogSnapshot
    from runtime.registry import Registry
    from runtime.resolve import CallPlan

DEFAULT_BOTS = "bots"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except UsageError as exc:
        print(f"dialplan: {exc}", file=sys.stderr)
        return 2
    except DialplanError as exc:
        print(f"dialplan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialplan", description="Voice bots as TOML + Jinja, on livekit-agents."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="validate bot files")
    validate.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help=f"bot files or directories (default: {DEFAULT_BOTS}/)",
    )
    validate.add_argument("--prompts", type=Path, help="prompts directory (default: ../prompts)")
    validate.set_defaults(handler=cmd_validate)

    render = commands.add_parser("render", help="print a bot's rendered prompts for a call")
    _call_arguments(render)
    render.set_defaults(handler=cmd_render)

    chat = commands.add_parser("chat", help="talk to a bot in the terminal (text mode)")
    _call_arguments(chat)
    chat.add_argument("--script", type=Path, help="read the caller's lines from FILE")
    chat.add_argument(
        "--say",
        action="append",
        default=[],
        metavar="TEXT",
        help="a caller line (repeatable) instead of typing",
    )
    chat.add_argument(
        "--record", metavar="PATH", help="write the call record as JSON to PATH ('-' prints it)"
    )
    chat.add_argument("-v", "--verbose", action="store_true", help="also print livekit's log")
    chat.set_defaults(handler=cmd_chat)

    dev = commands.add_parser(
        "dev", help="development server: hot-reloads bots and templates, terminal calls"
    )
    dev.add_argument(
        "bots_dir",
        nargs="?",
        type=Path,
        default=Path(os.environ.get("DIALPLAN_BOTS", DEFAULT_BOTS)),
        metavar="BOTS_DIR",
        help="bots directory (default: bots/)",
    )
    dev.add_argument("--prompts", type=Path, help="prompts directory (default: ../prompts)")
    dev.add_argument(
        "--watch-code",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="more Python source to restart on (dialplan's and local plugins' are watched)",
    )
    dev.add_argument(
        "--no-restart",
        action="store_true",
        help="serve in this process; Python changes need a manual restart",
    )
    dev.add_argument("--host", default="127.0.0.1", help="where the call server listens")
    dev.add_argument(
        "--port", type=int, default=8080, help="call server port (default 8080; 0: any free port)"
    )
    dev.set_defaults(handler=cmd_dev)

    test = commands.add_parser("test", help="run bots' scenario files (<id>.scenarios.toml)")
    test.add_argument("bots_to_test", nargs="*", metavar="BOT", help="bot ids (default: all)")
    _catalog_arguments(test)
    test.add_argument("--junit", type=Path, metavar="PATH", help="also write JUnit XML to PATH")
    test.add_argument(
        "--judge",
        metavar="MODEL",
        default=os.environ.get("DIALPLAN_JUDGE_MODEL"),
        help="a litellm model that judges `expect_intent` (default: $DIALPLAN_JUDGE_MODEL; "
        "without one, intents are skipped)",
    )
    caller_arguments(test)
    test.add_argument(
        "--scenarios",
        type=Path,
        metavar="PATH",
        help="a scenario file, or a directory of *.scenarios.toml, instead of the bots' own",
    )
    test.add_argument(
        "--voice",
        nargs="?",
        const=DEFAULT_CALLER_VOICE,
        choices=sorted(CALLER_VOICES),
        help="hear each caller line over a phone line: spoken by a caller voice (default "
        f"{DEFAULT_CALLER_VOICE}), μ-law with line hiss, recognized by the bot's own STT",
    )
    test.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print livekit's own log (a failing turn's cause is in the report anyway)",
    )
    test.set_defaults(handler=cmd_test)

    plugins = commands.add_parser("plugins", help="list registered providers and tools")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)

    graph = commands.add_parser(
        "graph", help="print a bot's conversation flow as a Mermaid flowchart (or JSON)"
    )
    graph.add_argument("bot", help="bot id")
    graph.add_argument(
        "--json", action="store_true", help="the graph as JSON (what the browser widget draws)"
    )
    _catalog_arguments(graph)
    graph.set_defaults(handler=cmd_graph)

    schema = commands.add_parser("schema", help="print the JSON Schema of a bot file")
    schema.set_defaults(handler=cmd_schema)

    from runtime.cli_voice import add_voice_commands

    add_voice_commands(commands, Path(os.environ.get("DIALPLAN_BOTS", DEFAULT_BOTS)))

    from runtime.cli_outbox import add_outbox_commands

    add_outbox_commands(commands)

    from runtime.cli_fleet import add_fleet_commands

    add_fleet_commands(commands)
    return parser


def _call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bot", help="bot id")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a call variable (repeatable; JSON values are decoded)",
    )
    parser.add_argument(
        "--vars-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON object of call variables",
    )
    parser.add_argument(
        "--overrides",
        metavar="JSON",
        help='per-call overrides, e.g. \'{"llm": {"temperature": 0}}\'',
    )
    parser.add_argument(
        "--ignore-schedule",
        action="store_true",
        help="answer as if the bot were open, whatever its [schedule] says",
    )
    caller_arguments(parser)
    _catalog_arguments(parser)


def _catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bots",
        type=Path,
        default=Path(os.environ.get("DIALPLAN_BOTS", DEFAULT_BOTS)),
        help="bots directory (default: bots/)",
    )
    parser.add_argument("--prompts", type=Path, help="prompts directory (default: ../prompts)")


# -- commands --------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from runtime.catalog import bot_files, load_catalog
    from runtime.scenario_check import check_scenario_file, scenario_files_in
    from runtime.scenario_file import bot_id_of

    registry = _registry()
    paths = args.paths or [Path(DEFAULT_BOTS)]
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    scenarios = scenario_files_in(paths)
    # a scenario file named on its own is checked against the bots beside it
    bot_paths = [p for p in paths if p.is_dir() or p not in scenarios]
    bot_paths += sorted({p.parent for p in scenarios} - {p for p in paths if p.is_dir()})
    if not bot_files(bot_paths):
        raise UsageError(f"no bot files (*.toml) under {', '.join(map(str, paths))}")
    snapshot = load_catalog(bot_paths, registry, prompts_dir=args.prompts, eager=True)
    problems = list(snapshot.problems)
    checked = []
    for path in scenarios:
        loaded, found = check_scenario_file(path, snapshot, registry)
        problems += found
        if loaded is not None and not found:
            checked.append((path, loaded))
    for problem in problems:
        print(problem)
    if problems:
        files = {p.file for p in problems}
        print(
            f"\n{len(problems)} problem(s) in {len(files)} file(s); {len(snapshot)} bot(s) valid",
            file=sys.stderr,
        )
        return 1
    for bot in snapshot:
        print(f"ok  {bot.id}  version {bot.version}  ({bot.path})")
    for path, loaded in checked:
        print(f"ok  {bot_id_of(path)} scenarios  {len(loaded.scenarios)} scenario(s)  ({path})")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    plan = _plan(args)
    prompt = plan.prompt
    print(f"# bot {plan.bot.id}  version {plan.bot.version}\n")
    print(
        f"## static system prompt ({len(prompt.static)} chars, identical on every call "
        "of this version)\n"
    )
    print(prompt.static)
    print("\n## per-call system prompt\n")
    print(prompt.per_call or "(empty)")
    print(f"\n## greeting (mode: {plan.greeting_mode})\n")
    print(prompt.greeting or "(none)")
    return 0


def quiet_livekit(verbose: bool) -> None:
    """livekit logs a failed turn (with its traceback) as it happens; a text command
    reports the same cause in its own output ([error] lines, a FAIL's `got`), so its log
    would only interleave with that. ``verbose`` keeps it."""
    if not verbose:
        for name in ("livekit", "livekit.agents"):
            logger = logging.getLogger(name)
            logger.addHandler(logging.NullHandler())
            logger.propagate = False


def cmd_chat(args: argparse.Namespace) -> int:
    from runtime.textchat import run_text_call, scripted_lines, typed_lines

    plan = _plan(args)
    quiet_livekit(args.verbose)
    if args.script:
        try:
            script = args.script.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"--script {args.script}: {exc.strerror}") from None
        lines = scripted_lines(script, echo=lambda text: print(f"you> {text}"))
    elif args.say:
        lines = scripted_lines(args.say, echo=lambda text: print(f"you> {text}"))
    else:
        print(
            f"Talking to {plan.bot.id} (version {plan.bot.version}). "
            "Type your lines; Ctrl-D or /quit hangs up.",
            file=sys.stderr,
        )
        lines = typed_lines()
    record = asyncio.run(run_text_call(plan, lines))
    hint = ""
    if record.disconnected_by == "outside_hours":
        hint = " (--ignore-schedule talks to the bot anyway)"
    print(
        f"\n[call ended: disconnected_by={record.disconnected_by} "
        f"duration={record.duration:.2f}s turns={len(record.transcript)}]{hint}",
        file=sys.stderr,
    )
    if args.record:  # the record as a deployment would deliver it: post-call work done
        from runtime.postcall import run_post_call

        record = asyncio.run(run_post_call(record, plan.bot, _registry(show_failures=False)))
        print(
            f"[disposition={record.disposition} skipped={record.analysis_skipped}]", file=sys.stderr
        )
    if args.record == "-":
        print(record.model_dump_json(indent=2))
    elif args.record:
        Path(args.record).write_text(record.model_dump_json(indent=2), encoding="utf-8")
        print(f"call record written to {args.record}", file=sys.stderr)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from runtime.devserver import run_dev

    if not args.bots_dir.is_dir():
        raise UsageError(f"{args.bots_dir}: not a directory")
    registry = _registry()
    if args.no_restart:
        from runtime.transports.server import ServerConfig

        # a developer's own server: the widget may answer outside the bots' opening hours
        config = ServerConfig(
            host=args.host, port=args.port, record_all=True, allow_schedule_override=True
        )
        return run_dev(args.bots_dir, args.prompts, registry, config)
    from runtime.code_watch import code_dirs, run_with_restarts

    child = ["dev", str(args.bots_dir), "--no-restart", "--host", args.host]
    child += ["--port", str(args.port)]
    if args.prompts:
        child += ["--prompts", str(args.prompts)]
    return run_with_restarts(child, code_dirs(registry, args.watch_code))


def cmd_test(args: argparse.Namespace) -> int:
    from runtime.scenario_report import summary, write_junit
    from runtime.scenario_suite import SuiteOutcome, run_suite

    if not args.bots.is_dir():
        raise UsageError(f"--bots {args.bots}: not a directory")
    if args.scenarios is not None and not args.scenarios.exists():
        raise UsageError(f"--scenarios {args.scenarios}: no such file or directory")
    quiet_livekit(args.verbose)
    registry = _registry()
    hearing = None

    async def run() -> SuiteOutcome:
        nonlocal hearing
        if args.voice:
            from runtime.scenario_hearing import Hearing
            from runtime.voice_synth import CallerVoice

            hearing = Hearing(registry, CallerVoice.named(registry, args.voice))
        try:
            return await run_suite(
                args.bots,
                registry,
                bot_ids=args.bots_to_test or None,
                prompts_dir=args.prompts,
                judge_model=args.judge,
                caller=args.caller,
                callee=args.called,
                scenarios=args.scenarios,
                hear=hearing,
            )
        finally:
            if hearing is not None:
                await hearing.aclose()

    try:
        outcome = asyncio.run(run())
    except Exception as exc:  # a crash of the runner itself: reported, and JUnit still written
        outcome = SuiteOutcome(
            problems=[Problem(args.bots, f"the scenario run crashed: {type(exc).__name__}: {exc}")]
        )
    for problem in outcome.problems:
        print(problem)
    if args.junit:
        write_junit(args.junit, outcome.results, outcome.problems)
    if not outcome.results and not outcome.problems:
        print(f"no scenario files (*.scenarios.toml) in {args.bots}", file=sys.stderr)
        return 1
    print(f"\n{summary(outcome.results, outcome.problems)}", file=sys.stderr)
    if hearing is not None and hearing.lines:
        errors, words = hearing.word_errors()
        print(
            f"heard {len(hearing.lines)} caller lines in voice {args.voice!r}: word error "
            f"rate {errors / max(words, 1):.1%} ({errors} of {words} words)",
            file=sys.stderr,
        )
    return 0 if outcome.passed else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(show_failures=not args.json)
    rows = [
        {
            "kind": entry.kind,
            "name": entry.name,
            "plugin": entry.plugin,
            "distribution": entry.distribution,
            "description": entry.description,
        }
        for entry in sorted(registry.providers.values(), key=lambda e: (e.kind, e.name))
    ] + [
        {
            "kind": "tool",
            "name": entry.name,
            "plugin": entry.plugin,
            "distribution": entry.distribution,
            "description": entry.description,
        }
        for entry in sorted(registry.tools.values(), key=lambda e: e.name)
    ]
    if args.json:
        failures = [{"plugin": f.plugin, "error": str(f.cause)} for f in registry.failures]
        print(json.dumps({"registered": rows, "failed": failures}, indent=2))
        return 0
    header = ("KIND", "NAME", "PLUGIN", "DISTRIBUTION")
    keys = ("kind", "name", "plugin", "distribution")
    widths = [
        max([len(h), *(len(row[k]) for row in rows)]) for h, k in zip(header, keys, strict=True)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  DESCRIPTION")
    for row in rows:
        cells = [row["kind"], row["name"], row["plugin"], row["distribution"]]
        print(
            "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            + "  "
            + row["description"]
        )
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from runtime.flow.graph import ending_tool_names, graph_json, mermaid

    bot = _snapshot(args, _registry()).get(args.bot)
    ending = ending_tool_names(bot.bot)
    if bot.flow is None:
        print(
            f"note: bot {bot.id!r} has no [flow]: the whole call is one step (drawn as one "
            "node); add [flow] and [steps.*] tables to script it",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(graph_json(bot.flow, name=bot.id, ending=ending), indent=2))
    else:
        print(mermaid(bot.flow, name=bot.id, ending=ending), end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from runtime.bot_schema import bot_json_schema

    print(json.dumps(bot_json_schema(_registry(show_failures=False)), indent=2))
    return 0


# -- helpers ---------------------------------------------------------------------------


def _registry(*, show_failures: bool = True) -> Registry:
    from runtime.registry import load_registry

    registry = load_registry()
    if show_failures:
        for failure in registry.failures:
            print(f"warning: {failure}", file=sys.stderr)
    return registry


def _snapshot(args: argparse.Namespace, registry: Registry) -> CatalogSnapshot:
    """The catalog of ``--bots``; a bot named on the command line whose file has problems
    is reported with them (an unknown one is left to `CatalogSnapshot.get`)."""
    from runtime.catalog import load_catalog

    if not args.bots.is_dir():
        raise UsageError(f"--bots {args.bots}: not a directory")
    snapshot = load_catalog(args.bots, registry, prompts_dir=args.prompts)
    if args.bot not in snapshot.bots:
        mine = [p for p in snapshot.problems if p.file and p.file.stem == args.bot]
        if mine:
            raise DialplanError(
                f"bot {args.bot!r} is invalid:\n" + "\n".join(f"  {p}" for p in mine)
            )
    return snapshot


def _plan(args: argparse.Namespace) -> CallPlan:
    from runtime.call import CallOverrides, CallRequest
    from runtime.resolve import plan_call

    registry = _registry()
    snapshot = _snapshot(args, registry)
    try:
        overrides = CallOverrides.model_validate_json(args.overrides or "{}")
    except ValueError as exc:
        raise UsageError(f"--overrides: {exc}") from None
    if args.ignore_schedule:
        overrides = overrides.model_copy(update={"ignore_schedule": True})
    request = CallRequest(
        bot=args.bot,
        variables=parse_vars(args.var, args.vars_file),
        overrides=overrides,
        transport="text",
        caller=args.caller,
        callee=args.called,
    )
    return plan_call(snapshot, request, registry)


if __name__ == "__main__":
    sys.exit(main())
