"""A flow as a picture: Mermaid for `dialplan graph`, JSON for the browser widget.

Both are drawn from one `Graph`: a node per step (the start step marked) and one per tool
a step's `then` runs (`end_call`, `transfer_call`: where the call leaves the flow), and an
edge per way out of a step, labelled as a person reads it — the LLM's `when`, "after
calendar_book, if result.booked", "if captured.callback_number", "transfer_call fails",
"then" — with the values it captures (`[captures: patient_name, service?]`, `?` marking
an optional one). Tools every step offers (the flow's `global_tools`) are listed once
rather than drawn from every step; an ending tool offered by one step only is drawn as an
edge to its terminal node.

Pure Python: no livekit, so `dialplan graph` stays as fast as `validate`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from runtime.flow.compile import ENDING_TOOLS, CompiledFlow, CompiledStep
from runtime.flow.schema import CaptureSpec
from runtime.schema import Bot
from runtime.templates import PromptTemplate

EdgeKind = Literal["llm", "after", "condition", "error", "then", "tool"]
TOOL_PREFIX = "tool:"  # a terminal node's JSON id ("tool:end_call"; step names have no colon)
HINT_CHARS = 48  # how much of a line or of instructions a node shows
# words Mermaid reads as syntax where a node id is expected ("end" closes a subgraph)
_MERMAID_WORDS = frozenset(
    {
        "accdescr",
        "acctitle",
        "call",
        "class",
        "classdef",
        "click",
        "default",
        "direction",
        "end",
        "flowchart",
        "graph",
        "href",
        "interpolate",
        "linkstyle",
        "style",
        "subgraph",
    }
)
_MERMAID_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# characters a Mermaid label must not carry as themselves: `"` ends it, `<`/`>`/`&` would be
# read as HTML, `#` starts an entity, `|` and a leading backtick are syntax in edge labels
_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "`": "#96;",
}


@dataclass(frozen=True)
class Node:
    id: str  # the step's name, or TOOL_PREFIX + the tool's name
    kind: Literal["step", "tool"]
    label: str
    hints: tuple[str, ...] = ()  # short lines under the name: "says: …", "tools: …"
    start: bool = False
    speaks_only: bool = False  # a fixed line and a `then`: the LLM is never asked
    step: CompiledStep | None = None


@dataclass(frozen=True)
class Edge:
    key: str  # where it is written: "steps.triage.next[1]", "steps.wrap_up.then"
    source: str  # node ids
    target: str
    kind: EdgeKind
    label: str  # without the captures
    tool: str | None = None  # the tool the LLM calls, or the tool watched or run
    captures: Mapping[str, CaptureSpec] | None = None

    def captures_text(self) -> str:
        if not self.captures:
            return ""
        names = [n if spec.required else f"{n}?" for n, spec in self.captures.items()]
        return f"[captures: {', '.join(names)}]"

    def text(self) -> str:
        """The label with the values the edge captures, as the Mermaid edge shows it."""
        return " ".join(part for part in (self.label, self.captures_text()) if part)


@dataclass(frozen=True)
class Graph:
    start: str | None
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    global_tools: tuple[str, ...] = ()  # offered in every step: listed, not drawn


def ending_tool_names(bot: Bot) -> frozenset[str]:
    """The tools ``bot`` binds that end or hand over the call, by the names its steps use
    (as the flow compiler counts them); pass them as ``ending`` for exact terminal edges."""
    return frozenset(
        str(binding.options().get("name") or binding.use)
        for binding in bot.tools
        if binding.use in ENDING_TOOLS
    )


def build(flow: CompiledFlow, *, ending: Iterable[str] = ENDING_TOOLS) -> Graph:
    """The flow's nodes and edges, in the order the bot file declares its steps."""
    ending = frozenset(ending)
    steps = list(flow.steps.values())
    common = set.intersection(*(set(s.tools) for s in steps)) if steps else set()
    global_tools = tuple(t for t in steps[0].tools if t in common) if steps else ()
    nodes: list[Node] = []
    edges: list[Edge] = []
    terminals: dict[str, None] = {}  # tool names, in the order first drawn
    for step in steps:
        own_tools = tuple(t for t in step.tools if t not in common)
        nodes.append(
            Node(
                step.name,
                "step",
                step.name,
                _hints(step, own_tools),
                start=step.name == flow.start,
                speaks_only=step.speaks_only,
                step=step,
            )
        )
        if step.then is not None:
            target = step.then if step.then_is_step else TOOL_PREFIX + step.then
            if not step.then_is_step:
                terminals.setdefault(step.then)
            edges.append(Edge(f"steps.{step.name}.then", step.name, target, "then", "then"))
        for transition in step.transitions:
            label = transition.description
            if transition.kind == "condition":
                label = f"if {transition.condition_text or transition.description}"
            edges.append(
                Edge(
                    transition.key,
                    step.name,
                    transition.to,
                    transition.kind,
                    label,
                    tool=transition.tool,
                    captures=transition.captures,
                )
            )
        for index, tool in enumerate(step.tools):
            if tool in own_tools and tool in ending and tool != step.then:
                terminals.setdefault(tool)
                edges.append(
                    Edge(
                        f"steps.{step.name}.tools[{index}]",
                        step.name,
                        TOOL_PREFIX + tool,
                        "tool",
                        f"LLM calls {tool}",
                        tool=tool,
                    )
                )
    nodes.extend(Node(TOOL_PREFIX + name, "tool", name) for name in terminals)
    return Graph(flow.start, tuple(nodes), tuple(edges), global_tools)


def single_step(name: str) -> Graph:
    """A bot without a flow: the whole call is one step."""
    return Graph(
        name, (Node(name, "step", name, ("one step: the bot has no [flow]",), start=True),), ()
    )


# -- Mermaid ---------------------------------------------------------------------------


def mermaid(
    flow: CompiledFlow | None, *, name: str = "call", ending: Iterable[str] = ENDING_TOOLS
) -> str:
    """The flow as a Mermaid `flowchart TD`; without a flow, one node called ``name``."""
    return render_mermaid(build(flow, ending=ending) if flow is not None else single_step(name))


def render_mermaid(graph: Graph) -> str:
    ids = _mermaid_ids(graph.nodes)
    lines = ["flowchart TD"]
    for node in graph.nodes:
        label = node.label + (" (start)" if node.start else "")
        text = "<br/>".join(_mermaid_text(line) for line in (label, *node.hints))
        if node.kind == "tool":
            lines.append(f'  {ids[node.id]}(("{text}"))')
        elif node.speaks_only:
            lines.append(f'  {ids[node.id]}("{text}")')
        else:
            lines.append(f'  {ids[node.id]}["{text}"]')
    for edge in graph.edges:
        arrow = "-.->" if edge.kind in ("error", "tool") else "-->"
        label = edge.text()
        middle = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f"  {ids[edge.source]} {arrow}{middle} {ids[edge.target]}")
    terminals = [ids[n.id] for n in graph.nodes if n.kind == "tool"]
    lines.append("  classDef start stroke-width:3px")
    start = [ids[n.id] for n in graph.nodes if n.start]
    if start:
        lines.append(f"  class {','.join(start)} start")
    if terminals:
        lines.append("  classDef terminal fill:#eeeeee,stroke:#888888")
        lines.append(f"  class {','.join(terminals)} terminal")
    if graph.global_tools:
        lines.append(f"  %% every step may also call: {', '.join(graph.global_tools)}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in " ".join(text.split()))


def _mermaid_ids(nodes: Iterable[Node]) -> dict[str, str]:
    """A Mermaid id per node: its name when Mermaid reads that as a plain id, else a
    prefixed one (a step called `end`), never two nodes with one id."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for node in nodes:
        base = re.sub(r"[^A-Za-z0-9_]", "_", node.label)
        if not _MERMAID_ID.match(base) or base.lower() in _MERMAID_WORDS:
            base = f"{node.kind}_{base}"
        candidate, n = base, 1
        while candidate in used or candidate.lower() in _MERMAID_WORDS:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[node.id] = candidate
    return ids


# -- JSON --------------------------------------------------------------------------------


def graph_json(
    flow: CompiledFlow | None, *, name: str = "call", ending: Iterable[str] = ENDING_TOOLS
) -> dict[str, Any]:
    """The same graph as plain JSON (what the widget draws): ``start``, ``nodes`` (a
    step's id is its name; a terminal tool's is ``tool:<name>``), ``edges`` (``from``,
    ``to``, ``kind``, ``label``, ``captures``, ``key`` as in `step_entered`'s
    ``transition``) and ``global_tools``."""
    graph = build(flow, ending=ending) if flow is not None else single_step(name)
    return {
        "start": graph.start,
        "nodes": [_node_json(node) for node in graph.nodes],
        "edges": [_edge_json(edge) for edge in graph.edges],
        "global_tools": list(graph.global_tools),
    }


def _node_json(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "label": node.label,
        "hints": list(node.hints),
        "start": node.start,
    }
    step = node.step
    if step is not None:
        data.update(
            speaks_only=node.speaks_only,
            say=step.say.source if step.say is not None else None,
            instructions=_instructions(step.instructions),
            then=step.then,
            tools=list(step.tools),
            captures=_captures_json(step.captures),
        )
    return data


def _edge_json(edge: Edge) -> dict[str, Any]:
    return {
        "key": edge.key,
        "from": edge.source,
        "to": edge.target,
        "kind": edge.kind,
        "label": edge.label,
        "tool": edge.tool,
        "captures": _captures_json(edge.captures or {}),
        "text": edge.text(),
    }


def _captures_json(specs: Mapping[str, CaptureSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "type": spec.type,
            "description": spec.description,
            "required": spec.required,
        }
        for name, spec in specs.items()
    ]


# -- hints -------------------------------------------------------------------------------


def _hints(step: CompiledStep, own_tools: tuple[str, ...]) -> tuple[str, ...]:
    hints: list[str] = []
    if step.say is not None:
        hints.append(f"says: {_short(_plain(step.say.source))}")
    elif step.instructions is not None:
        instructions = step.instructions
        hints.append(f"LLM: {instructions.name or _short(_plain(instructions.source))}")
    if own_tools:
        hints.append(f"tools: {', '.join(own_tools)}")
    if step.captures:
        hints.append(f"remembers: {', '.join(step.captures)}")
    return tuple(hints)


def _instructions(template: PromptTemplate | None) -> str | None:
    """A file template by its name under prompts/, inline text as written."""
    if template is None:
        return None
    return template.name or template.source


def _plain(source: str) -> str:
    """Template source as a hint reads it: `{{ captured.name | title }}` as
    `{captured.name}`, tags and comments left out."""
    source = re.sub(r"\{#.*?#\}|\{%.*?%\}", "", source, flags=re.S)
    return re.sub(
        r"\{\{-?\s*(.*?)\s*-?\}\}",
        lambda m: "{" + m.group(1).split("|")[0].strip() + "}",
        source,
        flags=re.S,
    )


def _short(text: str, limit: int = HINT_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"
