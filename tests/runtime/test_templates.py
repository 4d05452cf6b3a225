from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2 import nodes
from jinja2.parser import Parser
from jinja2.sandbox import SecurityError

from runtime.templates import PromptEnvironment, TemplateFailure, is_file_reference


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "style.j2").write_text("Be brief.{% include 'shared/tail.j2' %}")
    (tmp_path / "shared" / "tail.j2").write_text(" Say {{ word }}.")
    (tmp_path / "main.j2").write_text("Hello {{ name }}. {% include 'shared/style.j2' %}")
    return tmp_path


def test_file_references_versus_inline_text() -> None:
    assert is_file_reference("dental/system.j2")
    assert is_file_reference("notes.md")
    assert not is_file_reference("Hi {{ name }}, this is dental.j2 calling")
    assert not is_file_reference("You are a receptionist.")


def test_include_chain_is_tracked(prompts: Path) -> None:
    env = PromptEnvironment(prompts)
    template = env.load("main.j2")
    names = [p.relative_to(prompts).as_posix() for p in template.dependencies]
    assert names == ["main.j2", "shared/style.j2", "shared/tail.j2"]
    assert template.names == {"name", "word"}
    assert template.render({"name": "Ann", "word": "hi"}) == "Hello Ann. Be brief. Say hi."


def test_plain_text_needs_no_compilation() -> None:
    template = PromptEnvironment(None).load("No markup here.")
    assert template.is_plain and template.compile() is None
    assert template.render({}) == "No markup here."


def test_strict_undefined() -> None:
    template = PromptEnvironment(None).load("Hi {{ nobody }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render({})


def test_variables_are_data_not_code() -> None:
    template = PromptEnvironment(None).load("Hi {{ name }}")
    assert template.render({"name": "{{ 7*7 }}"}) == "Hi {{ 7*7 }}"
    assert template.render({"name": "{{ ''.__class__ }}"}) == "Hi {{ ''.__class__ }}"


def test_sandbox_refuses_attribute_tricks_in_templates() -> None:
    template = PromptEnvironment(None).load("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError):
        template.render({})


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.j2").write_text("line one\n{% if x %}\nno endif\n")
    with pytest.raises(TemplateFailure) as exc:
        PromptEnvironment(tmp_path).load("bad.j2")
    assert exc.value.file == tmp_path / "bad.j2"
    assert exc.value.line is not None and exc.value.line >= 2
    assert "syntax error" in exc.value.message


def test_missing_include_names_the_includer(tmp_path: Path) -> None:
    (tmp_path / "a.j2").write_text("{% include 'gone.j2' %}")
    with pytest.raises(TemplateFailure, match=r"'gone.j2'.*not found"):
        PromptEnvironment(tmp_path).load("a.j2")


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.j2").write_text("{% include 'b.j2' %}")
    (tmp_path / "b.j2").write_text("{% include 'a.j2' %}")
    with pytest.raises(TemplateFailure, match=r"cycle: a.j2 -> b.j2 -> a.j2"):
        PromptEnvironment(tmp_path).load("a.j2")


def test_plugin_filters_are_available(tmp_path: Path) -> None:
    def prepare(env: jinja2.Environment) -> None:
        env.filters["shout"] = lambda value: str(value).upper()

    template = PromptEnvironment(tmp_path, prepare=prepare).load("{{ name | shout }}")
    assert template.render({"name": "ann"}) == "ANN"


def test_plugin_globals_reach_files_and_their_includes(prompts: Path) -> None:
    def prepare(env: jinja2.Environment) -> None:
        env.globals["clinic"] = "Bright Smile"

    (prompts / "outer.j2").write_text("{{ clinic }}: {% include 'inner.j2' %}")
    (prompts / "inner.j2").write_text("{{ clinic | upper }} {{ name }}")
    template = PromptEnvironment(prompts, prepare=prepare).load("outer.j2")
    for _ in range(2):  # compiled on the first render, reused on the second
        assert template.render({"name": "Ann"}) == "Bright Smile: BRIGHT SMILE Ann"


def test_each_file_compiles_once_per_environment(prompts: Path) -> None:
    env = PromptEnvironment(prompts)
    template = env.load("main.j2")
    assert env.load("main.j2") is template
    assert template.compile() is template.compile()


def test_identical_inline_templates_are_checked_once() -> None:
    env = PromptEnvironment(None)
    assert env.load("Hi {{ name }}") is env.load("Hi {{ name }}")


def test_templates_differing_only_in_literal_text_are_parsed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = PromptEnvironment(None)
    parses: list[str | None] = []
    parse = Parser.parse

    def counting_parse(parser: Parser) -> nodes.Template:
        parses.append(parser.name)
        return parse(parser)

    monkeypatch.setattr(Parser, "parse", counting_parse)
    first = env.load("Clinic 1. {% if who %}Hi {{ who }}{% endif %}")
    second = env.load("Branch 22, Harbour St. {% if who %}Hi {{ who }}{% endif %}")
    different = env.load("Clinic 1. {% if who %}Hi {{ whom }}{% endif %}")
    assert len(parses) == 2  # `second` reused the facts of `first`
    assert first.names == second.names == {"who"}
    assert different.names == {"who", "whom"}
    assert second.render({"who": "Ann"}) == "Branch 22, Harbour St. Hi Ann"


def test_a_shared_syntax_error_keeps_each_templates_line() -> None:
    env = PromptEnvironment(None)
    with pytest.raises(TemplateFailure) as one:
        env.load("a\n{% if x %}never closed")
    with pytest.raises(TemplateFailure) as same_shape:
        env.load("b\n{% if x %}also never closed")
    with pytest.raises(TemplateFailure) as later_line:
        env.load("c\n\n\n{% if x %}never closed")
    assert one.value.message == same_shape.value.message
    assert one.value.line == same_shape.value.line
    assert later_line.value.line is not None and one.value.line is not None
    assert later_line.value.line == one.value.line + 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Hi {{ name }} from {{ clinic.name | upper }}", {"name", "clinic"}),
        ("{% for item in items %}{{ item }}{{ loop.index }}{% endfor %}", {"items"}),
        ("{% set greeting = 'hi' %}{{ greeting }} {{ who }}", {"who"}),
        ("{% macro m(x) %}{{ x }}{{ y }}{% endmacro %}{{ m(1) }}", {"y"}),
        ("{{ name | no_such_filter }}", None),
    ],
)
def test_names_read(text: str, names: set[str] | None) -> None:
    env = PromptEnvironment(None)
    if names is None:
        with pytest.raises(TemplateFailure, match="no_such_filter"):
            env.load(text)
    else:
        assert env.load(text).names == names
