"""The no-Jinja path for text-and-names templates must write exactly what Jinja writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

from runtime.snippets import render_snippet
from runtime.substitution import parse_substitution
from runtime.templates import PromptEnvironment

CONTEXT: dict[str, Any] = {
    "name": "Ann",
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "items": ["a", 1],
    "mapping": {"k": "v"},
    "code": "{{ 7*7 }}",
}


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ name }}",
        "{{name}}{{ count }}{{  ratio  }}",
        "{{ flag }} / {{ nothing }} / {{ items }} / {{ mapping }}",
        "line one {{ name }}\r\nline two\rline three\n",
        "ends with a newline {{ name }}\n",
        "a variable holding code stays text: {{ code }}",
        "}} stray closers are text {{ name }}",
        "",
    ],
)
def test_the_fast_path_writes_what_jinja_writes(source: str) -> None:
    environment = PromptEnvironment(None)
    substitution = parse_substitution(source)
    assert substitution is not None
    reference = environment.env.from_string(source).render(CONTEXT)
    assert substitution.render(CONTEXT) == reference
    assert environment.load(source).render(CONTEXT) == reference


@pytest.mark.parametrize(
    "source",
    [
        "{{ name | upper }}",
        "{{ mapping.k }}",
        "{% if flag %}yes{% endif %}",
        "{# a comment #}{{ name }}",
        "{{ true }} {{ None }}",  # constants, not variables
        "{{ name ~ count }}",
    ],
)
def test_anything_beyond_names_is_left_to_jinja(source: str) -> None:
    assert parse_substitution(source) is None
    environment = PromptEnvironment(None)
    expected = environment.env.from_string(source).render(CONTEXT)
    assert environment.load(source).render(CONTEXT) == expected


def test_a_missing_name_still_raises_jinjas_error() -> None:
    template = PromptEnvironment(None).load("Hi {{ nobody }}")
    assert parse_substitution(template.source) is not None
    with pytest.raises(jinja2.UndefinedError, match="'nobody' is undefined"):
        template.render({"name": "Ann"})


def test_a_jinja_global_is_still_found_through_jinja() -> None:
    environment = PromptEnvironment(None)
    template = environment.load("{{ range }}")
    assert template.render({}) == str(environment.env.globals["range"])


def test_file_templates_take_the_same_path(tmp_path: Path) -> None:
    (tmp_path / "greeting.j2").write_text("Hello {{ name }}.\n")
    template = PromptEnvironment(tmp_path).load("greeting.j2")
    assert template.render(CONTEXT) == "Hello Ann.\n"


def test_snippets_use_it_and_still_strip() -> None:
    assert render_snippet("  Bye {{ name }}!  ", CONTEXT) == "Bye Ann!"
    assert render_snippet("Bye {{ name | upper }}!", CONTEXT) == "Bye ANN!"
    with pytest.raises(jinja2.UndefinedError):
        render_snippet("Bye {{ nobody }}", CONTEXT)
