"""Hot reload: real files in a temporary directory, the real watchfiles watcher, real calls."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.call import CallRequest
from runtime.live_catalog import LiveCatalog, ReloadReport
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import build_call_session
from runtime.watch import watch_catalog

BOT = """
[prompt]
system = "shared/persona.j2"
greeting = "{greeting}"
[llm]
provider = "rules"
default = "{reply}"
"""
PERSONA = "You are polite. {% include 'shared/tone.j2' %}"
TONE = "Speak warmly."


def bot(greeting: str = "Hello.", reply: str = "Version one.") -> str:
    return textwrap.dedent(BOT.format(greeting=greeting, reply=reply))


@pytest.fixture
def project(bot_dir: Callable[..., Path]) -> Path:
    bots = bot_dir("desk", bot(), {"shared/persona.j2": PERSONA, "shared/tone.j2": TONE})
    bot_dir("other", '[prompt]\nsystem = "Other."\n[llm]\nprovider = "rules"\n')
    return bots


def live(project: Path, registry: Registry) -> LiveCatalog:
    catalog = LiveCatalog(project, registry)
    assert not catalog.current().problems, catalog.current().problems
    return catalog


# -- applying changes (no watcher) ------------------------------------------------------


def test_a_bot_edit_recompiles_that_bot_only(project: Path, registry: Registry) -> None:
    catalog = live(project, registry)
    before = catalog.current()
    (project / "desk.toml").write_text(bot(reply="Version two."))
    report = catalog.apply([project / "desk.toml"])
    after = catalog.current()
    assert [(c.bot_id, c.old, c.new) for c in report.changes] == [
        ("desk", before.get("desk").version, after.get("desk").version)
    ]
    assert after.get("other") is before.get("other")  # untouched, same object
    assert before.get("desk").version != after.get("desk").version  # the old snapshot is intact


def test_an_included_template_reloads_every_bot_using_it(project: Path, registry: Registry) -> None:
    catalog = live(project, registry)
    before = catalog.current()
    tone = project.parent / "prompts" / "shared" / "tone.j2"
    tone.write_text("Speak briskly.")
    report = catalog.apply([tone])
    assert [c.bot_id for c in report.changes] == ["desk"]
    assert report.recompiled == 1
    assert "Speak briskly." in catalog.current().get("desk").static_prompt
    assert catalog.current().get("other") is before.get("other")


def test_a_bad_save_keeps_the_last_good_version_until_fixed(
    project: Path, registry: Registry
) -> None:
    catalog = live(project, registry)
    good = catalog.current().get("desk")
    path = project / "desk.toml"
    path.write_text(bot().replace("[llm]", "[llm\n"))
    report = catalog.apply([path])
    assert not report.changes and report.still_serving == ("desk",)
    assert "TOML syntax error" in str(report.problems[0])
    assert catalog.current().get("desk") is good
    assert catalog.current().problems  # the error stays visible

    path.write_text(bot(reply="Fixed."))
    report = catalog.apply([path])
    assert [c.old for c in report.changes] == [good.version]
    assert not catalog.current().problems and not report.still_serving


@pytest.mark.parametrize(
    "bad",
    [
        'greeting = "{{ nope"',  # template syntax
        'greeting = "Hi {{ undeclared }}"',  # undefined variable
        "greting = 'typo'",  # schema
    ],
)
def test_every_kind_of_bad_save_keeps_serving(project: Path, registry: Registry, bad: str) -> None:
    catalog = live(project, registry)
    good = catalog.current().get("desk")
    path = project / "desk.toml"
    path.write_text(bot().replace('greeting = "Hello."', bad))
    report = catalog.apply([path])
    assert report.still_serving == ("desk",) and report.problems
    assert catalog.current().get("desk") is good


def test_deleting_a_template_in_use_is_an_error_not_an_outage(
    project: Path, registry: Registry
) -> None:
    catalog = live(project, registry)
    good = catalog.current().get("desk")
    tone = project.parent / "prompts" / "shared" / "tone.j2"
    tone.unlink()
    report = catalog.apply([tone])
    assert "'shared/tone.j2' not found" in str(report.problems[0])
    assert catalog.current().get("desk") is good

    tone.write_text(TONE)  # restoring it heals the bot
    report = catalog.apply([tone])
    assert not report.problems and catalog.current().get("desk").version == good.version


def test_deleting_and_creating_bot_files(project: Path, registry: Registry) -> None:
    catalog = live(project, registry)
    (project / "other.toml").unlink()
    report = catalog.apply([project / "other.toml"])
    assert [(c.bot_id, c.new) for c in report.changes] == [("other", None)]
    assert "other" not in catalog.current().bots

    (project / "fresh.toml").write_text('[prompt]\nsystem = "New."\n[llm]\nprovider = "rules"\n')
    report = catalog.apply([project / "fresh.toml"])
    assert [(c.bot_id, c.old) for c in report.changes] == [("fresh", None)]
    assert "fresh" in catalog.current().bots


def test_irrelevant_files_are_ignored(project: Path, registry: Registry) -> None:
    catalog = live(project, registry)
    assert not catalog.is_relevant(project / "desk.scenarios.toml")
    assert not catalog.is_relevant(project / ".desk.toml.swp")
    assert not catalog.is_relevant(project / "notes.txt")
    assert catalog.is_relevant(project.parent / "prompts" / "x" / "y.j2")


# -- the real watcher --------------------------------------------------------------------


class Watching:
    """A running watch_catalog task and the reports it produced."""

    def __init__(self, catalog: LiveCatalog) -> None:
        self.catalog = catalog
        self.reports: list[ReloadReport] = []
        self.stop = asyncio.Event()
        self.armed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watching:
        self.task = asyncio.create_task(
            watch_catalog(self.catalog, self.reports.append, stop=self.stop, ready=self.armed.set)
        )
        await asyncio.wait_for(self.armed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def until_version_changes(self, bot_id: str, old: str) -> str:
        for _ in range(200):
            current = self.catalog.current().bots.get(bot_id)
            if current is not None and current.version != old:
                return current.version
            await asyncio.sleep(0.025)
        raise AssertionError(f"{bot_id} never left version {old}; reports: {self.reports}")

    async def settle(self) -> None:
        """Let a stray second batch (if the save produced one) arrive and be applied."""
        await asyncio.sleep(0.4)


def write_in_place(path: Path, text: str) -> None:
    with path.open("r+", encoding="utf-8") as handle:
        handle.write(text)
        handle.truncate()


def truncate_then_write(path: Path, text: str) -> None:
    path.write_text("")
    path.write_text(text)


def temp_and_rename(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def several_quick_writes(path: Path, text: str) -> None:
    for partial in (text[: len(text) // 3], text[: len(text) // 2], text):
        path.write_text(partial)


@pytest.mark.parametrize(
    "save", [write_in_place, truncate_then_write, temp_and_rename, several_quick_writes]
)
async def test_each_way_of_saving_is_one_reload_of_the_final_content(
    project: Path, registry: Registry, save: Callable[[Path, str], None]
) -> None:
    catalog = live(project, registry)
    old = catalog.current().get("desk").version
    async with Watching(catalog) as watching:
        save(project / "desk.toml", bot(reply="Saved."))
        await watching.until_version_changes("desk", old)
        await watching.settle()
    changes = [change for report in watching.reports for change in report.changes]
    assert len(changes) == 1, watching.reports
    assert changes[0].old == old
    desk = catalog.current().get("desk")
    assert desk.bot.llm is not None and desk.bot.llm.options()["default"] == "Saved."
    assert not catalog.current().problems


async def test_a_running_call_keeps_its_version_the_next_call_gets_the_new_one(
    project: Path, registry: Registry
) -> None:
    catalog = live(project, registry)
    old = catalog.current().get("desk").version
    running = build_call_session(plan_call(catalog.current(), CallRequest(bot="desk"), registry))
    await running.start()
    await running.say_text("hello?")
    async with Watching(catalog) as watching:
        temp_and_rename(project / "desk.toml", bot(greeting="Hi again.", reply="Version two."))
        new = await watching.until_version_changes("desk", old)
    await running.say_text("still there?")
    first = await running.close()
    assert first.bot_version == old
    assert [e.text for e in first.transcript if e.role == "bot"] == [
        "Hello.",
        "Version one.",
        "Version one.",
    ]

    following = build_call_session(plan_call(catalog.current(), CallRequest(bot="desk"), registry))
    await following.start()
    await following.say_text("hello?")
    second = await following.close()
    assert second.bot_version == new
    assert [e.text for e in second.transcript if e.role == "bot"] == ["Hi again.", "Version two."]


async def test_a_broken_template_save_then_a_fix_through_the_watcher(
    project: Path, registry: Registry
) -> None:
    catalog = live(project, registry)
    old = catalog.current().get("desk").version
    persona = project.parent / "prompts" / "shared" / "persona.j2"
    async with Watching(catalog) as watching:
        persona.write_text("You are {% if %} broken.")
        for _ in range(200):
            if watching.reports:
                break
            await asyncio.sleep(0.025)
        assert watching.reports and watching.reports[-1].still_serving == ("desk",)
        problem = str(watching.reports[-1].problems[0])
        assert problem.startswith(f"{persona}:1: prompt.system: template syntax error")
        assert catalog.current().get("desk").version == old

        persona.write_text("You are fixed. {% include 'shared/tone.j2' %}")
        await watching.until_version_changes("desk", old)
    assert not catalog.current().problems
    assert catalog.current().get("desk").static_prompt == "You are fixed. Speak warmly."


def test_a_save_that_steals_another_bots_id_is_refused(project: Path, registry: Registry) -> None:
    catalog = live(project, registry)
    other = catalog.current().get("other")
    path = project / "desk.toml"
    path.write_text('id = "other"\n' + bot())
    report = catalog.apply([path])
    assert "bot id 'other' is already used by" in str(report.problems[0])
    assert catalog.current().get("other") is other
    assert report.still_serving == ("desk",)
