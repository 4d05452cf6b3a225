"""Post-call work on an ended call's record: dispositions, then LLM analysis and QC.

`run_post_call` never raises: whatever fails becomes ``analysis_error`` / ``qc_error`` (or a
``disposition_error`` event), because the record must still be delivered.

Analysis and QC run concurrently, each with an LLM built by its provider's factory, as a
call's LLM is: ``[analysis.llm]`` / ``[qc.llm]`` if the bot has that table, else its
``[llm]``. The system message is the task's static instructions and is passed to the
factory as the call's static prompt, so providers that cache prompts (litellm) reuse it
across calls. A reply that is not the JSON asked for is sent back once with what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.analysis import InvalidReply, JsonTask, analysis_task, excerpt, qc_task
from runtime.call import CallContext, CallRequest, RenderedPrompt
from runtime.dispositions import apply_dispositions
from runtime.record import CallRecord, ProviderUsage

if TYPE_CHECKING:
    from livekit.agents import llm

    from runtime.compiler import CompiledBot
    from runtime.registry import Registry

log = logging.getLogger("dialplan.postcall")

RETRY_REQUEST = (
    "Your reply was not what was asked for: {problem}. Reply again with only the JSON "
    "object described in the instructions."
)


class PostCallFailure(Exception):
    """A post-call task gave up; the message goes into the record as it is."""


@dataclass
class TaskOutcome:
    result: dict[str, Any] | None = None
    error: str | None = None
    usage: ProviderUsage | None = None


@dataclass
class PostCallContext(CallContext):
    """What a post-call LLM is built with: the ended call's bot and variables, with the
    task's instructions as the static (cacheable) prompt.

    Providers key their prompt cache by bot id and `bot_version` (see
    plugins/llm/litellm.py); the task's instructions are a different prefix from the
    conversation's, so the version names the task too ("<version>:analysis")."""

    task: str = "analysis"

    @property
    def bot_version(self) -> str:
        return f"{self.bot.version}:{self.task}"


async def run_post_call(record: CallRecord, bot: CompiledBot, registry: Registry) -> CallRecord:
    """A copy of the record with dispositions applied, then (unless a rule skipped it)
    analysis and QC. Never raises, short of being cancelled."""
    try:
        record = apply_dispositions(record, bot)
    except Exception:  # a bug: keep the call, lose only the labels
        log.exception("call %s: dispositions failed", record.session_id)
    if record.analysis_skipped:
        log.info(
            "call %s: disposition %s; analysis skipped by %r",
            record.session_id,
            record.disposition,
            record.analysis_skipped,
        )
        return record
    tasks: list[JsonTask] = []
    update: dict[str, Any] = {}
    for section, build in (("analysis", analysis_task), ("qc", qc_task)):
        try:
            task = build(bot)
        except Exception as exc:  # a bug in building the task, not the bot's fault
            log.exception("call %s: cannot prepare %s", record.session_id, section)
            update[f"{section}_error"] = f"cannot prepare the {section}: {exc}"
            continue
        if task is not None:
            tasks.append(task)
    outcomes = await asyncio.gather(*(run_task(task, record, bot, registry) for task in tasks))
    usage = list(record.usage)
    for task, outcome in zip(tasks, outcomes, strict=True):
        key = "post_call_analysis" if task.name == "analysis" else "qc"
        update[key] = outcome.result
        update[f"{task.name}_error"] = outcome.error
        if outcome.usage is not None:
            usage.append(outcome.usage)
    update["usage"] = usage
    return record.model_copy(update=update)


async def run_task(
    task: JsonTask, record: CallRecord, bot: CompiledBot, registry: Registry
) -> TaskOutcome:
    """One analysis or QC job, start to end; failures become `TaskOutcome.error`."""
    outcome = TaskOutcome()
    try:
        user_message = task.user_message(record, bot)
    except Exception as exc:  # the template failed on this call's data
        outcome.error = f"cannot render {task.name}.prompt: {exc}"
        log.warning("call %s: %s", record.session_id, outcome.error)
        return outcome
    try:
        model = build_llm(task, record, bot, registry)
    except Exception as exc:
        outcome.error = f"cannot build the {task.llm.provider!r} LLM: {exc}"
        log.warning("call %s: %s", record.session_id, outcome.error)
        return outcome
    tally = Tally()
    try:
        outcome.result = await asyncio.wait_for(
            converse(task, model, user_message, tally), task.timeout
        )
    except asyncio.TimeoutError:
        outcome.error = f"no answer within {task.timeout:g} s"
    except PostCallFailure as exc:
        outcome.error = str(exc)
    except Exception as exc:  # provider errors, after the provider's own retries
        outcome.error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    finally:
        outcome.usage = tally.provider_usage(model)
        try:
            await model.aclose()
        except Exception:  # the answer is in; a failing close must not lose it
            log.warning("call %s: closing the %s LLM failed", record.session_id, task.name)
    if outcome.error:
        log.warning("call %s: %s failed: %s", record.session_id, task.name, outcome.error)
    else:
        log.info("call %s: %s done", record.session_id, task.name)
    return outcome


def build_llm(task: JsonTask, record: CallRecord, bot: CompiledBot, registry: Registry) -> Any:
    """The task's LLM, from its provider's factory, as a call builds its own."""
    # not validated again: the call checked its request, and the record's variables also
    # hold the bot's defaults, which may be TOML values a request would refuse (dates)
    request = CallRequest.model_construct(
        bot=record.bot_id,
        variables=record.variables,
        session_id=record.session_id,
        transport=record.transport,
        caller=record.caller,
        callee=record.callee,
    )
    context = PostCallContext(
        request=request,
        bot=bot,
        variables=dict(record.variables),
        prompt=RenderedPrompt(static=task.instructions, per_call="", greeting=""),
        started_at=record.started_at,
        provider_kinds=frozenset({"llm"}),
        task=task.name,
    )
    return registry.provider("llm", task.llm.provider).factory(task.llm_options, context)


async def converse(
    task: JsonTask, model: llm.LLM, user_message: str, tally: Tally
) -> dict[str, Any]:
    """Ask, check, and ask once more with the problem if the reply is not valid."""
    from livekit.agents import llm  # here: loading bots never imports livekit

    chat = llm.ChatContext.empty()
    chat.add_message(role="system", content=task.instructions)
    chat.add_message(role="user", content=user_message)
    reply = await ask(model, chat, tally)
    try:
        return task.parse(reply)
    except InvalidReply as problem:
        chat.add_message(role="assistant", content=reply)
        chat.add_message(role="user", content=RETRY_REQUEST.format(problem=problem))
    reply = await ask(model, chat, tally)
    try:
        return task.parse(reply)
    except InvalidReply as problem:
        raise PostCallFailure(
            f"invalid reply twice, the last: {problem} (reply: {excerpt(reply)})"
        ) from None


async def ask(model: llm.LLM, chat: llm.ChatContext, tally: Tally) -> str:
    response = await model.chat(chat_ctx=chat).collect()
    if response.usage is not None:
        tally.add(response.usage)
    return response.text


@dataclass
class Tally:
    """Tokens of one task's requests (a retry is a second request)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    def add(self, usage: llm.CompletionUsage) -> None:
        self.requests += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cached_tokens += usage.prompt_cached_tokens

    def provider_usage(self, model: llm.LLM) -> ProviderUsage | None:
        if not self.requests:
            return None
        return ProviderUsage(
            provider=model.provider,
            model=model.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            cost_usd=_cost(model),
        )


def _cost(model: llm.LLM) -> float | None:
    """What the model's requests cost, from providers that track it: like
    `runtime.session.provider_costs`, ``usages`` entries with a ``cost_usd``. The model
    was built for this task alone, so its totals are the task's."""
    costs = [getattr(tracked, "cost_usd", None) for tracked in getattr(model, "usages", ())]
    known = [cost for cost in costs if cost is not None]
    return sum(known) if known else None
