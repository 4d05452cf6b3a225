"""A plugin published by a third party works with no change to dialplan.

`tests/fixtures/example_plugin` is laid out like a package on PyPI. The tests "install" it
the way an installer does: the package next to a `.dist-info` directory (METADATA and
entry_points.txt written from the fixture's pyproject.toml) in a directory on the path,
so `importlib.metadata` finds its `dialplan` entry point like any installed distribution's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import CallOverrides, CallRequest, CallSetupError, DuplicateName, hookimpl
from runtime.catalog import load_catalog
from runtime.plugins import create_plugin_manager
from runtime.registry import Registry, load_registry
from runtime.resolve import plan_call
from tests.cli_run import Run, cli_env, unlocated

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE_SOURCE = Path(__file__).parent / "fixtures" / "example_plugin"
EXAMPLE_DIST = "dialplan-example-plugin"
# the built-in LLM providers (litellm may still be in progress)
# the tools left when the example plugin is disabled: the built-in ones
BUILTIN_TOOLS = ", ".join(sorted(set(load_registry().tools) - {"lookup_order"}))
UNKNOWN_ORDERS_TOOL = (
    "bots/orders.toml: tools[0].use: unknown tool 'lookup_order' "
    f"(registered tools: {BUILTIN_TOOLS})"
)
LLM_PROVIDERS = (
    "litellm, rules" if importlib.util.find_spec("plugins.llm.litellm") is not None else "rules"
)
BROKEN_MESSAGE = "the broken plugin cannot start"

SHOUTER_BOT = """\
description = "repeats the caller, louder"
[prompt]
system = "You shout."
[llm]
provider = "shout"
suffix = "?!"
[[tools]]
use = "lookup_order"
"""
ORDERS_BOT = """\
[prompt]
system = "You look up orders."
[llm]
provider = "rules"
[[llm.rules]]
match = "order (?P<number>\\\\d+)"
tool = "lookup_order"
arguments = { order_id = "{{ match.number }}" }
reply = "Order {{ result.order_id }} has {{ result.status }}."
[[tools]]
use = "lookup_order"
"""
TYPO_BOT = SHOUTER_BOT.replace('suffix = "?!"', 'sufix = "?!"')


# -- installing the fixture like a package ----------------------------------------------


def write_dist_info(site: Path, name: str, version: str, entry_points: dict[str, Any]) -> None:
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    text = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
        for group, points in entry_points.items()
    )
    (dist_info / "entry_points.txt").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the example plugin as an installer leaves it."""
    site = tmp_path_factory.mktemp("example-site")
    project = tomllib.loads((EXAMPLE_SOURCE / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    package = EXAMPLE_SOURCE / "src" / "dialplan_example_plugin"
    shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    write_dist_info(site, meta["name"], meta["version"], meta["entry-points"])
    return site


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another installed plugin, whose module raises while it is imported."""
    site = tmp_path_factory.mktemp("broken-site")
    (site / "dialplan_broken_plugin.py").write_text(
        f"raise RuntimeError({BROKEN_MESSAGE!r})\n", encoding="utf-8"
    )
    write_dist_info(
        site, "dialplan-broken-plugin", "0.1", {"dialplan": {"broken": "dialplan_broken_plugin"}}
    )
    return site


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "bots").mkdir()
    (root / "bots" / "shouter.toml").write_text(SHOUTER_BOT, encoding="utf-8")
    (root / "bots" / "orders.toml").write_text(ORDERS_BOT, encoding="utf-8")
    (root / "typo_bots").mkdir()
    (root / "typo_bots" / "typo.toml").write_text(TYPO_BOT, encoding="utf-8")
    return root


def forget_plugin_modules() -> None:
    for name in list(sys.modules):
        if name.startswith(("dialplan_example_plugin", "dialplan_broken_plugin")):
            del sys.modules[name]


@pytest.fixture
def installed(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin is installed in this process (for this test only)."""
    monkeypatch.delenv("DIALPLAN_DISABLED_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(example_site))
    try:
        yield example_site
    finally:
        forget_plugin_modules()


# -- the CLI in subprocesses, all started at once -----------------------------------------


def start(cwd: Path, *args: str, path: list[Path], disabled: str = "") -> Callable[[], Run]:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if disabled:
        env["DIALPLAN_DISABLED_PLUGINS"] = disabled
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finish() -> Run:
        stdout, stderr = process.communicate(timeout=60)
        return Run(process.returncode, stdout, stderr)

    return finish


@pytest.fixture(scope="module")
def cli(project: Path, example_site: Path, broken_site: Path) -> dict[str, Run]:
    example, both = [example_site], [example_site, broken_site]
    started = {
        "plugins": start(project, "plugins", path=example),
        "plugins_json": start(project, "plugins", "--json", path=example),
        "validate": start(project, "validate", "bots", path=example),
        "validate_typo": start(project, "validate", "typo_bots", path=example),
        "validate_disabled": start(project, "validate", "bots", path=example, disabled="example"),
        "plugins_disabled": start(project, "plugins", "--json", path=example, disabled="example"),
        "plugins_broken": start(project, "plugins", path=both),
        "plugins_broken_json": start(project, "plugins", "--json", path=both),
    }
    return {name: finish() for name, finish in started.items()}


# -- (a) discovery ------------------------------------------------------------------------


def test_registry_lists_the_plugin_by_distribution(installed: Path) -> None:
    registry = load_registry()
    assert registry.failures == []
    found = {
        (entry.kind, entry.name): (entry.plugin, entry.distribution)
        for entry in registry.providers.values()
        if entry.distribution == EXAMPLE_DIST
    }
    assert found == {
        ("llm", "shout"): ("example", EXAMPLE_DIST),
        ("stt", "null_stt"): ("example", EXAMPLE_DIST),
        ("tts", "null_tts"): ("example", EXAMPLE_DIST),
    }
    tool = registry.tool("lookup_order")
    assert (tool.plugin, tool.distribution) == ("example", EXAMPLE_DIST)
    # the built-in plugins load beside it, the same way
    assert registry.provider("llm", "rules").distribution == "dialplan"
    assert registry.tool("end_call").distribution == "dialplan"


# -- (b) `dialplan plugins` ---------------------------------------------------------------


def test_plugins_command_lists_the_plugin(cli: dict[str, Run]) -> None:
    run = cli["plugins"]
    assert run.returncode == 0
    assert run.stderr == ""
    expected = {
        "llm": ("shout", "repeats the caller's last words in capitals"),
        "stt": ("null_stt", "hears nothing"),
        "tts": ("null_tts", "says nothing"),
        "tool": ("lookup_order", "shipping status of an order (always shipped)"),
    }
    for kind, (name, description) in expected.items():
        row = rf"^{kind}\s+{name}\s+example\s+{EXAMPLE_DIST}\s+{re.escape(description)}$"
        assert any(re.match(row, line) for line in run.lines), (row, run.stdout)


def test_plugins_json_lists_the_plugin(cli: dict[str, Run]) -> None:
    run = cli["plugins_json"]
    assert run.returncode == 0
    listing = json.loads(run.stdout)
    assert listing["failed"] == []
    mine = {
        (row["kind"], row["name"])
        for row in listing["registered"]
        if (row["plugin"], row["distribution"]) == ("example", EXAMPLE_DIST)
    }
    assert mine == {
        ("llm", "shout"),
        ("stt", "null_stt"),
        ("tts", "null_tts"),
        ("tool", "lookup_order"),
    }


# -- (c) a bot uses it --------------------------------------------------------------------


def test_bots_using_the_plugin_validate(cli: dict[str, Run]) -> None:
    run = cli["validate"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert [line.split()[1] for line in run.lines] == ["orders", "shouter"]
    assert all(line.startswith("ok  ") for line in run.lines)


async def test_text_call_gets_the_shouted_reply(installed: Path, project: Path) -> None:
    from runtime.textchat import run_text_call, scripted_lines

    registry = load_registry()
    snapshot = load_catalog(project / "bots", registry)
    assert snapshot.problems == ()
    plan = plan_call(snapshot, CallRequest(bot="shouter"), registry)
    shown: list[str] = []
    lines = scripted_lines(["where is my parcel", "hello"], echo=shown.append)
    record = await run_text_call(plan, lines, out=shown.append)
    assert [(e.role, e.text) for e in record.transcript] == [
        ("customer", "where is my parcel"),
        ("bot", "WHERE IS MY PARCEL?!"),
        ("customer", "hello"),
        ("bot", "HELLO?!"),
    ]
    assert record.disconnected_by == "customer"
    assert [(u.provider, u.model) for u in record.usage] == [(EXAMPLE_DIST, "shout")]


async def test_per_call_overrides_use_the_plugins_options(installed: Path, project: Path) -> None:
    from runtime.session import build_call_session

    registry = load_registry()
    snapshot = load_catalog(project / "bots", registry)
    overrides = CallOverrides(llm={"suffix": " (overridden)"})
    plan = plan_call(snapshot, CallRequest(bot="shouter", overrides=overrides), registry)
    call_session = build_call_session(plan)
    await call_session.start()
    await call_session.say_text("hello")
    record = await call_session.close()
    assert record.transcript[-1].text == "HELLO (overridden)"

    typo = CallOverrides(llm={"sufix": "?"})
    with pytest.raises(
        CallSetupError, match=r"overrides\.llm\.sufix: unknown key \(did you mean `suffix`"
    ):
        plan_call(snapshot, CallRequest(bot="shouter", overrides=typo), registry)


async def test_the_plugins_tool_runs_in_a_call(installed: Path, project: Path) -> None:
    from runtime.textchat import run_text_call, scripted_lines

    registry = load_registry()
    snapshot = load_catalog(project / "bots", registry)
    plan = plan_call(snapshot, CallRequest(bot="orders"), registry)
    lines = scripted_lines(["where is order 42?"], echo=lambda _: None)
    record = await run_text_call(plan, lines, out=lambda _: None)
    assert record.transcript[-1].text == "Order 42 has shipped."
    [tool_call] = [event.data for event in record.events if event.type == "tool_call"]
    assert tool_call["name"] == "lookup_order"
    assert tool_call["arguments"] == {"order_id": "42"}
    assert tool_call["outcome"] == "ok"


# -- (d) its options are checked ----------------------------------------------------------


def test_a_typo_in_its_option_fails_validation(cli: dict[str, Run]) -> None:
    run = cli["validate_typo"]
    assert run.returncode == 1
    assert unlocated(run.lines) == [
        "typo_bots/typo.toml: llm.sufix: unknown key (did you mean `suffix`? allowed keys: suffix)"
    ]


# -- (e) blocking it ----------------------------------------------------------------------


def test_disabled_plugin_is_not_loaded(cli: dict[str, Run]) -> None:
    listing = json.loads(cli["plugins_disabled"].stdout)
    assert all(row["plugin"] != "example" for row in listing["registered"])
    assert {row["name"] for row in listing["registered"]} >= {"rules", "end_call"}


def test_bots_of_a_disabled_plugin_fail_validation(cli: dict[str, Run]) -> None:
    run = cli["validate_disabled"]
    assert run.returncode == 1
    lines = unlocated(run.lines)
    assert (
        "bots/shouter.toml: llm.provider: unknown LLM provider 'shout' "
        f"(registered LLM providers: {LLM_PROVIDERS})"
    ) in lines
    assert (
        "bots/shouter.toml: tools[0].use: unknown tool 'lookup_order' "
        f"(registered tools: {BUILTIN_TOOLS})"
    ) in lines
    assert UNKNOWN_ORDERS_TOOL in lines


def test_an_unknown_tool_is_reported_once(cli: dict[str, Run]) -> None:
    lines = unlocated(cli["validate_disabled"].lines)
    orders = [line for line in lines if line.startswith("bots/orders")]
    assert orders == [UNKNOWN_ORDERS_TOOL]


def test_disabling_in_process(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALPLAN_DISABLED_PLUGINS", "example")
    registry = load_registry()
    assert "shout" not in registry.provider_names("llm")
    assert "lookup_order" not in registry.tools
    assert registry.plugins.blocked == ["example"]


# -- (f) duplicate names ------------------------------------------------------------------


class RulesAgain:
    """A plugin that registers the built-in `rules` provider's name again."""

    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(kind="llm", name="rules", factory=lambda options, call: None)


class LookupOrderAgain:
    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(name="lookup_order", factory=lambda options, call: None)


def test_registering_a_name_twice_names_both_plugins(installed: Path) -> None:
    plugins = create_plugin_manager(extra_plugins=[("rules_again", RulesAgain())])
    with pytest.raises(DuplicateName) as caught:
        Registry.from_plugins(plugins)
    assert str(caught.value) == (
        "LLM provider 'rules' is registered twice: by plugin 'rules' and by plugin "
        "'rules_again' (uninstall one, or block it with DIALPLAN_DISABLED_PLUGINS=rules_again)"
    )


def test_a_third_party_name_twice_names_both_plugins(installed: Path) -> None:
    plugins = create_plugin_manager(extra_plugins=[("copycat", LookupOrderAgain())])
    with pytest.raises(DuplicateName, match=r"by plugin 'example' and by plugin 'copycat'"):
        Registry.from_plugins(plugins)


def test_blocking_the_duplicate_as_the_error_suggests(installed: Path) -> None:
    plugins = create_plugin_manager(
        extra_plugins=[("rules_again", RulesAgain())], disabled=["rules_again"]
    )
    registry = Registry.from_plugins(plugins)
    assert registry.provider("llm", "rules").plugin == "rules"


# -- (g) a plugin that fails to import ----------------------------------------------------


def test_a_broken_plugin_is_reported_and_the_others_load(
    installed: Path, broken_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    registry = load_registry()
    [failure] = registry.failures
    assert failure.plugin == "broken"
    assert isinstance(failure.cause, RuntimeError)
    assert str(failure) == (
        f"plugin 'broken' failed to load: RuntimeError: {BROKEN_MESSAGE} "
        "(fix the plugin, uninstall it, or block it with DIALPLAN_DISABLED_PLUGINS=broken)"
    )
    assert registry.provider("llm", "shout").plugin == "example"
    assert registry.provider("llm", "rules").plugin == "rules"

    monkeypatch.setenv("DIALPLAN_DISABLED_PLUGINS", "broken")
    assert load_registry().failures == []


def test_plugins_command_reports_the_broken_plugin(cli: dict[str, Run]) -> None:
    run = cli["plugins_broken"]
    assert run.returncode == 0
    assert run.stderr.splitlines() == [
        f"warning: plugin 'broken' failed to load: RuntimeError: {BROKEN_MESSAGE} "
        "(fix the plugin, uninstall it, or block it with DIALPLAN_DISABLED_PLUGINS=broken)"
    ]
    names = {line.split()[1] for line in run.lines[1:]}
    assert {"shout", "null_stt", "null_tts", "lookup_order", "rules", "end_call"} <= names

    listing = json.loads(cli["plugins_broken_json"].stdout)
    assert listing["failed"] == [{"plugin": "broken", "error": BROKEN_MESSAGE}]
    assert "shout" in {row["name"] for row in listing["registered"]}
