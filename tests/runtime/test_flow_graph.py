"""A flow as a picture: `runtime.flow.graph` (Mermaid and JSON) and `dialplan graph`.

The shipped dentist bot and a small flow written here with every kind of way out, a step
whose name Mermaid reserves (`end`) and a `when` full of characters a Mermaid label must
not carry as themselves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.catalog import load_catalog
from runtime.compiler import CompiledBot
from runtime.flow.graph import ending_tool_names, graph_json, mermaid
from runtime.registry import Registry
from tests.cli_run import run_dialplan

REPO = Path(__file__).resolve().parents[2]

SMALL_FLOW = """
[prompt]
system = "You are a test bot."
[llm]
provider = "rules"

[flow]
start = "greet"
global_tools = ["end_call"]

[steps.greet]
instructions = "Ask what the caller needs."
tools = ["send_dtmf"]
[[steps.greet.next]]
to = "end"
when = 'the caller says "stop" | [now] <really> #1 & `done`'
[steps.greet.next.capture]
reason = { type = "string", description = "why" }
mood = { type = ["calm", "angry"], required = false }
[[steps.greet.next]]
to = "human"
after = "send_dtmf"

[steps.human]
say = "Putting you through."
then = "transfer_call"
[[steps.human.next]]
to = "voicemail"
on_error = "transfer_call"

[steps.voicemail]
say = "Nobody is free. Leave a message after the tone."
instructions = "Take a message."
capture = { message = "string" }
tools = ["transfer_call"]
[[steps.voicemail.next]]
to = "thanks"
if = "captured.message"

[steps.thanks]
say = "Thanks."
then = "end"

[steps.end]
say = "Goodbye{% if captured.reason is defined %}, {{ captured.reason | title }}{% endif %}."
then = "end_call"

[[tools]]
use = "end_call"
[[tools]]
use = "transfer_call"
to = "+15550100"
[[tools]]
use = "send_dtmf"
"""

SMALL_MERMAID = """\
flowchart TD
  greet["greet (start)<br/>LLM: Ask what the caller needs.<br/>tools: send_dtmf"]
  human("human<br/>says: Putting you through.")
  voicemail["voicemail<br/>says: Nobody is free. Leave a message after the tone.<br/>tools: transfer_call<br/>remembers: message"]
  thanks("thanks<br/>says: Thanks.")
  step_end("end<br/>says: Goodbye, {captured.reason}.")
  transfer_call(("transfer_call"))
  end_call(("end_call"))
  greet -->|"the caller says #quot;stop#quot; #124; [now] #lt;really#gt; #35;1 #amp; #96;done#96; [captures: reason, mood?]"| step_end
  greet -->|"after send_dtmf"| human
  human -->|"then"| transfer_call
  human -.->|"transfer_call fails"| voicemail
  voicemail -->|"if captured.message"| thanks
  voicemail -.->|"LLM calls transfer_call"| transfer_call
  thanks -->|"then"| step_end
  step_end -->|"then"| end_call
  classDef start stroke-width:3px
  class greet start
  classDef terminal fill:#eeeeee,stroke:#888888
  class transfer_call,end_call terminal
  %% every step may also call: end_call
"""  # noqa: E501


@pytest.fixture
def small_flow(bot_dir: Callable[..., Path], registry: Registry) -> CompiledBot:
    snapshot = load_catalog(bot_dir("small", SMALL_FLOW), registry)
    assert not snapshot.problems, snapshot.problems
    return snapshot.get("small")


@pytest.fixture(scope="module")
def dentist() -> CompiledBot:
    from runtime.registry import load_registry

    snapshot = load_catalog(REPO / "bots", load_registry())
    return snapshot.get("dentist")


def edges(graph: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(e["from"], e["to"], e["kind"], e["text"]) for e in graph["edges"]]


# -- Mermaid -----------------------------------------------------------------------------


def test_the_small_flow_in_mermaid(small_flow: CompiledBot) -> None:
    ending = ending_tool_names(small_flow.bot)
    assert ending == {"end_call", "transfer_call"}
    assert mermaid(small_flow.flow, ending=ending) == SMALL_MERMAID


def test_labels_carry_no_mermaid_syntax(small_flow: CompiledBot) -> None:
    """Inside a `"..."` label only entity codes stand for quotes, pipes, angle brackets,
    `#`, `&` and backticks; every node and edge line keeps one pair of quotes."""
    text = mermaid(small_flow.flow)
    for line in text.splitlines()[1:]:
        if line.strip().startswith(("classDef", "class ", "%%")):
            continue
        assert line.count('"') == 2, line
        label = line.split('"')[1].replace("<br/>", " ")
        assert not set(label) & set("|<>`&"), line


def test_the_dentist_flow_in_mermaid(dentist: CompiledBot) -> None:
    lines = mermaid(dentist.flow, ending=ending_tool_names(dentist.bot)).splitlines()
    assert lines[0] == "flowchart TD"
    assert lines[1] == '  triage["triage (start)<br/>LLM: Find out whether the caller wants an…"]'
    assert (
        '  booking["booking<br/>LLM: dentist/booking.j2<br/>tools: calendar_slots, calendar_book"]'
        in lines
    )
    assert '  wrap_up("wrap_up<br/>says: Please arrive ten minutes early…")' in lines
    assert '  end_call(("end_call"))' in lines and '  transfer_call(("transfer_call"))' in lines
    expected_edges = [
        '  triage -->|"the caller is in pain, bleeding, has a broken tooth or says it is urgent"|'
        " emergency",
        '  triage -->|"the caller wants to book an appointment [captures: service?]"| booking',
        '  booking -->|"after calendar_book, if result.booked"| confirmation',
        '  booking -->|"the caller says it is an emergency after all"| emergency',
        '  confirmation -->|"the caller wants to book another appointment"| booking',
        '  confirmation -->|"the caller has nothing else"| wrap_up',
        '  wrap_up -->|"then"| end_call',
        '  emergency -->|"then"| transfer_call',
        '  emergency -.->|"transfer_call fails"| take_message',
        '  take_message -->|"if captured.callback_number"| message_taken',
        '  message_taken -->|"then"| end_call',
    ]
    assert [line for line in lines if "-->" in line or "-.->" in line] == expected_edges
    assert "  class triage start" in lines
    assert lines[-1] == "  %% every step may also call: end_call"


def test_a_bot_without_a_flow_is_one_node() -> None:
    assert mermaid(None, name="receptionist") == (
        "flowchart TD\n"
        '  receptionist["receptionist (start)<br/>one step: the bot has no [flow]"]\n'
        "  classDef start stroke-width:3px\n"
        "  class receptionist start\n"
    )
    graph = graph_json(None, name="receptionist")
    assert [n["id"] for n in graph["nodes"]] == ["receptionist"] and graph["edges"] == []


# -- JSON --------------------------------------------------------------------------------


def test_the_small_flow_as_json(small_flow: CompiledBot) -> None:
    graph = graph_json(small_flow.flow, ending=ending_tool_names(small_flow.bot))
    assert graph["start"] == "greet"
    assert graph["global_tools"] == ["end_call"]
    assert [(n["id"], n["kind"], n["start"]) for n in graph["nodes"]] == [
        ("greet", "step", True),
        ("human", "step", False),
        ("voicemail", "step", False),
        ("thanks", "step", False),
        ("end", "step", False),
        ("tool:transfer_call", "tool", False),
        ("tool:end_call", "tool", False),
    ]
    quote = 'the caller says "stop" | [now] <really> #1 & `done`'
    assert edges(graph) == [
        ("greet", "end", "llm", f"{quote} [captures: reason, mood?]"),
        ("greet", "human", "after", "after send_dtmf"),
        ("human", "tool:transfer_call", "then", "then"),
        ("human", "voicemail", "error", "transfer_call fails"),
        ("voicemail", "thanks", "condition", "if captured.message"),
        ("voicemail", "tool:transfer_call", "tool", "LLM calls transfer_call"),
        ("thanks", "end", "then", "then"),
        ("end", "tool:end_call", "then", "then"),
    ]
    first = graph["edges"][0]
    assert first["label"] == quote and first["tool"] == "go_to_end"
    assert first["key"] == "steps.greet.next[0]"
    assert first["captures"] == [
        {"name": "reason", "type": "string", "description": "why", "required": True},
        {"name": "mood", "type": ["calm", "angry"], "description": "", "required": False},
    ]
    voicemail = graph["nodes"][2]
    assert voicemail["say"] == "Nobody is free. Leave a message after the tone."
    assert voicemail["instructions"] == "Take a message."
    assert voicemail["tools"] == ["transfer_call", "end_call"]
    assert [c["name"] for c in voicemail["captures"]] == ["message"]
    assert graph["nodes"][4]["then"] == "end_call" and graph["nodes"][4]["speaks_only"]
    json.dumps(graph)  # plain JSON all the way down


def test_the_dentist_graph_as_json(dentist: CompiledBot) -> None:
    flow = dentist.flow
    assert flow is not None
    graph = graph_json(flow, ending=ending_tool_names(dentist.bot))
    ids = [n["id"] for n in graph["nodes"]]
    assert ids == [*flow.steps, "tool:end_call", "tool:transfer_call"]
    assert [n["id"] for n in graph["nodes"] if n["start"]] == ["triage"]
    for edge in graph["edges"]:
        assert edge["from"] in ids and edge["to"] in ids
    # every transition is an edge under the key `step_entered` names it by
    transitions = {t.key for step in flow.steps.values() for t in step.transitions}
    keyed = {e["key"] for e in graph["edges"] if e["kind"] not in ("then", "tool")}
    assert keyed == transitions
    booking = next(e for e in graph["edges"] if e["to"] == "booking" and e["from"] == "triage")
    assert booking["captures"][0]["name"] == "service" and not booking["captures"][0]["required"]
    assert ("wrap_up", "tool:end_call", "then", "then") in edges(graph)


# -- dialplan graph ----------------------------------------------------------------------


def test_dialplan_graph_prints_mermaid(dentist: CompiledBot) -> None:
    run = run_dialplan("graph", "dentist", cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout == mermaid(dentist.flow, ending=ending_tool_names(dentist.bot))
    assert run.stderr == ""


def test_dialplan_graph_json(dentist: CompiledBot) -> None:
    run = run_dialplan("graph", "dentist", "--json", cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == graph_json(dentist.flow, ending=ending_tool_names(dentist.bot))


def test_dialplan_graph_of_a_bot_without_a_flow() -> None:
    run = run_dialplan("graph", "receptionist", cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout == mermaid(None, name="receptionist")
    assert "bot 'receptionist' has no [flow]" in run.stderr


def test_dialplan_graph_of_an_unknown_bot() -> None:
    run = run_dialplan("graph", "dentst", cwd=REPO)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip() == (
        "dialplan: error: no bot 'dentst' in the catalog; did you mean `dentist`? "
        "loaded bots: dentist, receptionist, reminder"
    )


def test_dialplan_graph_of_an_invalid_bot(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    broken = SMALL_FLOW.replace('to = "thanks"', 'to = "thanx"')
    (bots / "small.toml").write_text(broken, encoding="utf-8")
    run = run_dialplan("graph", "small", "--bots", str(bots), cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert "dialplan: error: bot 'small' is invalid:" in run.stderr
    assert "steps.voicemail.next[0].to: no step named 'thanx'" in run.stderr
