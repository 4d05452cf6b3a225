"""Key paths located in TOML text: tables, arrays of tables (counted within their parent
element), dotted keys, and keys after multi-line values."""

from __future__ import annotations

from runtime.errors import Problem
from runtime.toml_problems import key_positions, parse_key, with_positions

TEXT = '''\
description = """
not = "a key"
"""
limits.max_duration = "10m"
tools = [
  { use = "http" },
]
[llm]
provider = "rules"
[[llm.rules]]
match = "a"
[[llm.rules]]
match = "b"

[[scenarios]]
name = "one"
[scenarios.mocks.calendar]
result = 1
[[scenarios.turns]]
say = "x"
[[scenarios]]
name = "two"
[[scenarios.turns]]
say = "y"
[[scenarios.turns]]
  "say" = "z"
'''


def line_of(key: str) -> int | None:
    found = key_positions(TEXT).get(parse_key(key))
    return found.line if found else None


def test_keys_are_found_where_they_are_written() -> None:
    assert line_of("description") == 1
    assert line_of("not") is None  # inside a multi-line string
    assert line_of("limits.max_duration") == 4 and line_of("limits") == 4
    assert line_of("tools") == 5 and line_of("use") is None  # in a multi-line array
    assert line_of("llm.provider") == 9
    assert (line_of("llm.rules[0].match"), line_of("llm.rules[1].match")) == (11, 13)
    assert line_of("scenarios[0].mocks.calendar.result") == 18
    assert line_of("scenarios[0].turns[0].say") == 20
    # the second scenario's turns count from zero again
    assert (line_of("scenarios[1].turns[0].say"), line_of("scenarios[1].turns[1].say")) == (24, 26)


def test_a_problem_gets_the_line_of_its_key_or_of_the_nearest_key_holding_it() -> None:
    problems = [
        Problem(None, "bad", key="llm.rules[1].match"),
        Problem(None, "bad", key="scenarios[0].mocks.calendar.result.x"),  # inline contents
        Problem(None, "kept", key="llm.provider", line=99),  # located already
        Problem(None, "no key"),
    ]
    located = with_positions(problems, TEXT)
    assert [(p.line, p.column) for p in located] == [(13, 1), (18, 1), (99, None), (None, None)]
