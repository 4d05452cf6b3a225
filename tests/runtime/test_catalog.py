from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.catalog import load_catalog
from runtime.errors import CallSetupError
from runtime.registry import Registry

from ..conftest import MINIMAL_BOT, REPO

WITH_INCLUDE = """
[prompt]
system = "main.j2"
[llm]
provider = "rules"
"""


def test_shipped_bots_all_validate(registry: Registry) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    assert snapshot.problems == ()
    assert {"receptionist", "reminder"} <= set(snapshot.bots)


def test_bot_id_defaults_to_file_name(bot_dir: Callable[..., Path], registry: Registry) -> None:
    snapshot = load_catalog(bot_dir("front-desk", MINIMAL_BOT), registry)
    assert snapshot.get("front-desk").static_prompt == "You are front-desk."


def test_version_covers_toml_and_every_included_template(
    bot_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    bots = bot_dir("a", WITH_INCLUDE, {"main.j2": "x {% include 'part.j2' %}", "part.j2": "one"})
    first = load_catalog(bots, registry).get("a").version
    assert load_catalog(bots, registry).get("a").version == first  # stable
    (tmp_path / "prompts" / "part.j2").write_text("two")
    second = load_catalog(bots, registry).get("a").version
    assert second != first
    (bots / "a.toml").write_text("description = 'changed'\n" + WITH_INCLUDE)
    assert load_catalog(bots, registry).get("a").version not in (first, second)


def test_dependencies_list_template_files(
    bot_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    bots = bot_dir("a", WITH_INCLUDE, {"main.j2": "{% include 'part.j2' %}", "part.j2": "p"})
    bot = load_catalog(bots, registry).get("a")
    assert bot.dependencies == {tmp_path / "prompts" / "main.j2", tmp_path / "prompts" / "part.j2"}


def test_snapshot_is_immutable(bot_dir: Callable[..., Path], registry: Registry) -> None:
    snapshot = load_catalog(bot_dir("a", MINIMAL_BOT), registry)
    with pytest.raises(TypeError):
        snapshot.bots["b"] = snapshot.bots["a"]  # type: ignore[index]


def test_broken_bot_does_not_hide_good_ones(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    bot_dir("good", MINIMAL_BOT)
    bots = bot_dir("broken", "[prompt\nsystem=")
    snapshot = load_catalog(bots, registry)
    assert list(snapshot.bots) == ["good"]
    assert len(snapshot.problems) == 1
    problem = snapshot.problems[0]
    assert problem.file == bots / "broken.toml"
    assert problem.line == 1 and "TOML syntax error" in problem.message


def test_scenario_files_are_not_bots(bot_dir: Callable[..., Path], registry: Registry) -> None:
    bots = bot_dir("a", MINIMAL_BOT)
    (bots / "a.scenarios.toml").write_text("not = 'a bot'")
    assert list(load_catalog(bots, registry).bots) == ["a"]


def test_unknown_bot_lists_the_loaded_ones(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    snapshot = load_catalog(bot_dir("receptionist", MINIMAL_BOT), registry)
    with pytest.raises(CallSetupError, match="did you mean `receptionist`"):
        snapshot.get("receptionst")


def test_duplicate_ids(bot_dir: Callable[..., Path], registry: Registry) -> None:
    bot_dir("a", MINIMAL_BOT)
    bots = bot_dir("b", 'id = "a"\n' + MINIMAL_BOT)
    snapshot = load_catalog(bots, registry)
    assert [str(p) for p in snapshot.problems] == [
        f"{bots / 'b.toml'}:1:1: id: bot id 'a' is already used by {bots / 'a.toml'} "
        "(give one of them a different `id` or file name)"
    ]
