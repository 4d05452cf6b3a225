"""Auto-dispositions: cheap rules, no LLM, that label a call once it has ended and decide
whether post-call analysis is worth an LLM call.

A bot runs its own ``[[dispositions]]`` first, in file order, then the built-in rules below
that it does not replace. Every rule whose ``when`` is true fires, in that order:

- ``record.dispositions`` lists every rule that fired; ``record.disposition`` is the first;
- ``record.analysis_skipped`` names the first fired rule with ``skip_analysis``;
- each fired rule's ``set`` values go into ``record.fields``; when two rules set the same
  key the earlier rule wins. A string value is a template over the same names as ``when``
  (``reason = "{{ disconnected_by }}"``); other values are copied as they are.

``when`` sees every call record field as a JSON value (``duration``, ``disconnected_by``,
``has_customer_message``, ``transcript``, ``variables`` ...), the whole record as
``record``, and the call's variables by name (a record field of the same name wins).

The built-in rules, all skipping analysis, in order: ``no_answer``, ``rejected``,
``outside_hours``, ``voicemail``, ``error`` (each: ``disconnected_by`` is that value),
``no_customer_message`` (the customer never spoke), ``rnr``, ``timeout``, and
``short_call`` (a voice call under 5 s).

A bot rule with a built-in rule's name replaces it; ``enabled = false`` without ``when``
disables it::

    [[dispositions]]
    name = "short_call"         # my calls are short by design: analyse them anyway
    enabled = false

A rule that fails while evaluated (a type error, an undefined name) counts as not fired and
leaves a ``disposition_error`` event on the record: a bad rule never loses a call.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.record import CallEvent, CallRecord
from runtime.schema import DispositionRule
from runtime.templates import PromptTemplate

if TYPE_CHECKING:
    from runtime.compiler import CompiledBot

log = logging.getLogger("dialplan.dispositions")

SHORT_CALL_SECONDS = 5


def _line_outcome(disconnected_by: str) -> DispositionRule:
    return DispositionRule(
        name=disconnected_by,
        when=f"disconnected_by == {disconnected_by!r}",
        skip_analysis=True,
    )


# The built-ins skip analysis when there is no conversation worth an LLM's time. Their
# order decides `disposition`, so the most telling reason comes first:
# - how the line ended, when that alone explains the empty call (nobody answered, the call
#   was refused or out of hours, a voicemail, a failure). These come before
#   no_customer_message because speech recognition often hears a voicemail greeting as
#   the customer: "voicemail" must not depend on that. Their names are the
#   `disconnected_by` values, so one vocabulary serves both fields.
# - no_customer_message: the customer never spoke, whoever hung up.
# - rnr (dead air or ring-no-answer) and timeout (max duration) next: after a conversation
#   they still say why it ended oddly.
# - short_call last: under 5 s of voice call. Never merely "the customer did not speak";
#   text calls are exempt, as typing a line takes no time and the transcript says enough.
BUILTIN_RULES: tuple[DispositionRule, ...] = (
    _line_outcome("no_answer"),
    _line_outcome("rejected"),
    _line_outcome("outside_hours"),
    _line_outcome("voicemail"),
    _line_outcome("error"),
    DispositionRule(
        name="no_customer_message", when="not has_customer_message", skip_analysis=True
    ),
    _line_outcome("rnr"),
    _line_outcome("timeout"),
    DispositionRule(
        name="short_call",
        when=f"duration < {SHORT_CALL_SECONDS} and transport != 'text'",
        skip_analysis=True,
    ),
)
BUILTIN_NAMES = tuple(rule.name for rule in BUILTIN_RULES)


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: ``when`` is a compiled Jinja expression; string values of
    ``set`` are templates (`PromptTemplate`), the others plain values."""

    name: str
    when: Callable[..., Any]
    skip_analysis: bool = False
    set: Mapping[str, Any] = field(default_factory=dict)
    builtin: bool = False


def rule_order(bot_rules: Sequence[DispositionRule]) -> list[DispositionRule]:
    """The rules a bot runs, in order: its own enabled rules as written, then the built-ins
    it neither replaces nor disables."""
    own = {rule.name for rule in bot_rules}
    return [rule for rule in bot_rules if rule.enabled] + [
        rule for rule in BUILTIN_RULES if rule.name not in own
    ]


def expression_context(record: CallRecord, bot: CompiledBot) -> dict[str, Any]:
    """The names `when` expressions and `set` templates see. The bot's defaults stand in
    for variables a record lacks (one made by hand), as they did during the call."""
    fields = record.expression_context()
    return {**bot.bot.defaults(), **record.variables, **fields, "record": fields}


def apply_dispositions(record: CallRecord, bot: CompiledBot) -> CallRecord:
    """A copy of ``record`` with the bot's disposition rules applied (see the module
    docstring). Never raises for a rule that fails: that becomes a `disposition_error`
    event."""
    context = expression_context(record, bot)
    fired: list[str] = []
    fields: dict[str, Any] = {}
    errors: list[CallEvent] = []
    skipped: str | None = None
    for rule in bot.dispositions:
        try:
            matched = bool(rule.when(**context))
        except Exception as exc:
            errors.append(_rule_failed(record, rule.name, exc))
            continue
        if not matched:
            continue
        fired.append(rule.name)
        if rule.skip_analysis and skipped is None:
            skipped = rule.name
        for key, value in rule.set.items():
            if key in fields:
                continue  # an earlier rule set it
            try:
                fields[key] = (
                    value.render(context)
                    if isinstance(value, PromptTemplate)
                    else copy.deepcopy(value)  # rule values are shared by every call
                )
            except Exception as exc:
                errors.append(_rule_failed(record, rule.name, exc, key=key))
    return record.model_copy(
        update={
            "dispositions": fired,
            "disposition": fired[0] if fired else None,
            "analysis_skipped": skipped,
            "fields": {**record.fields, **fields},
            "events": [*record.events, *errors],
        }
    )


def _rule_failed(
    record: CallRecord, rule: str, exc: Exception, *, key: str | None = None
) -> CallEvent:
    error = f"{type(exc).__name__}: {exc}"
    where = f"set.{key}" if key else "when"
    log.warning("call %s: disposition %r %s failed: %s", record.session_id, rule, where, error)
    data: dict[str, Any] = {"rule": rule, "error": error}
    if key:
        data["key"] = key
    return CallEvent(type="disposition_error", at=record.duration, data=data)
