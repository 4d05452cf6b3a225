"""Conversation flows: a bot's conversation scripted as steps with transitions.

    schema.py    the `[flow]` and `[steps.*]` tables of a bot file (pydantic)
    compile.py   a flow checked as a graph and prepared once per bot version
    captures.py  typed captured values and the `captured.*` a template reads
    graph.py     the flow as Mermaid (`dialplan graph`) and as JSON (the widget)
    narration.py one line per flow event (`dialplan chat`, `simulate`)
    summary.py   what a step entered with `context = "summary"` starts from (imports livekit)
    agents.py    one livekit `Agent` per step, transitions as livekit handoffs (imports livekit)

Everything but `agents.py` and `summary.py` is pure Python, so loading and validating
bots stays fast.
"""
