"""``dialplan campaign run|status``: outbound calls from a CSV, through the LiveKit dialer."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.durations import parse_duration

DEFAULT_STATE = "dialplan-campaigns.db"


def add_campaign_commands(
    commands: Any, config_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    campaign = commands.add_parser("campaign", help="outbound calls from a CSV file")
    verbs = campaign.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="call every row (resumes a campaign already started)")
    _campaign_arguments(run, config_argument)
    run.add_argument("--concurrency", type=int, default=5, help="calls at once (default 5)")
    run.add_argument("--max-attempts", type=int, default=3, help="per row (default 3)")
    run.add_argument(
        "--retry-delay",
        type=parse_duration,
        default=300.0,
        help="before calling a no-answer/busy row again (default 5m)",
    )
    run.add_argument("--trunk", help="outbound trunk name (default: the first configured)")
    run.add_argument("--from", dest="from_", help="caller id (default: the trunk's first)")
    run.add_argument("--bots", type=Path, help="bots directory (default: [worker] bots)")
    run.set_defaults(handler=cmd_campaign_run)

    status = verbs.add_parser("status", help="where a campaign stands")
    _campaign_arguments(status, config_argument)
    status.set_defaults(handler=cmd_campaign_status)


def _campaign_arguments(
    parser: argparse.ArgumentParser, config_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    parser.add_argument("csv", type=Path, help="one row per call; a phone/to/number column")
    parser.add_argument("--bot", required=True, help="bot id")
    parser.add_argument("--phone-column", help="the column with the numbers")
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("DIALPLAN_CAMPAIGN_STATE", DEFAULT_STATE)),
        help=f"campaign state (SQLite; default {DEFAULT_STATE}, $DIALPLAN_CAMPAIGN_STATE)",
    )
    config_argument(parser)


def cmd_campaign_run(args: argparse.Namespace) -> int:
    from runtime.cli_fleet import (
        check_outbound_call,
        close_results,
        livekit_client,
        load_config,
    )
    from runtime.fleet.campaign import Campaign, CampaignCall
    from runtime.fleet.campaign_progress import ProgressBar
    from runtime.fleet.dialer import Call
    from runtime.fleet.outcome import DialOutcome
    from runtime.fleet.results_config import open_results
    from runtime.registry import load_registry

    if args.concurrency < 1 or args.max_attempts < 1:
        print("dialplan: --concurrency and --max-attempts must be 1 or more", file=sys.stderr)
        return 2
    config = load_config(args)
    registry = load_registry()
    bot_spec = check_outbound_call(config, registry, args.bot, {}, args.bots, strict=False)

    async def run() -> Any:
        results = open_results(config, registry)
        await results.start(beside_a_deliverer=True)  # workers may share the outbox
        client = livekit_client()

        async def dial(call: CampaignCall) -> DialOutcome:
            placed = Call(
                bot=call.bot,
                to=call.to,
                from_=args.from_,
                trunk=args.trunk,
                variables=call.variables,
                session_id=call.session_id,
                config=config,
                livekit_api=client,
                results=results,
                bot_spec=bot_spec,
            )
            outcome = await placed.place()
            if outcome.answered:  # a slot is a call in progress, not a dial in progress
                await placed.wait_ended()
            return outcome

        campaign = Campaign(
            args.csv,
            args.bot,
            dial,
            store_path=args.state,
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            retry_delay=args.retry_delay,
            phone_column=args.phone_column,
            # a row without one is refused, as `dialplan call` refuses such a call
            required=bot_spec.bot.required_variables() if bot_spec is not None else (),
            progress=ProgressBar(),
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, campaign.stop)
        try:
            return await campaign.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await client.aclose()
            await close_results(results)

    summary = asyncio.run(run())
    unfinished = summary.pending + summary.in_progress + summary.retry_pending
    if unfinished:
        print(f"{unfinished} row(s) left: run the same command again to resume", file=sys.stderr)
    return 0


def cmd_campaign_status(args: argparse.Namespace) -> int:
    from runtime.fleet.campaign_csv import campaign_id_for
    from runtime.fleet.campaign_store import CampaignStore

    if not args.state.exists():
        print(f"dialplan: no campaign state at {args.state}", file=sys.stderr)
        return 1
    campaign_id = campaign_id_for(args.csv, args.bot)
    with CampaignStore(args.state, create=False) as store:
        counts = store.summary(campaign_id)
        if counts is None:
            print(f"{args.csv} has not been run with {args.bot} (campaign {campaign_id})")
            return 1
        print(
            f"campaign {campaign_id}: {counts.done}/{counts.total} done — answered "
            f"{counts.answered}, no answer {counts.no_answer}, failed {counts.failed}, "
            f"invalid {counts.invalid}, waiting to retry {counts.retry}, "
            f"pending {counts.pending}, in progress {counts.in_progress}"
        )
        for row in store.rows(campaign_id, ("failed", "invalid", "no_answer")):
            print(f"  row {row.row_number} {row.phone}: {row.state} — {row.reason or row.outcome}")
    return 0
