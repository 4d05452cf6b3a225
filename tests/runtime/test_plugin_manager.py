from __future__ import annotations

from typing import Any

import pluggy
import pytest

from runtime import DuplicateName, NoOptions, UnknownName, hookimpl
from runtime.plugins import create_plugin_manager, disabled_plugins
from runtime.registry import Registry, load_registry


class EchoLLMPlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(
            kind="llm",
            name="echo",
            factory=lambda options, call: None,
            options=NoOptions,
            description="echo",
        )


class SecondRulesPlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(kind="llm", name="rules", factory=lambda options, call: None)


class BrokenRegistrationPlugin:
    @hookimpl
    def register_tools(self, register: Any) -> None:
        raise RuntimeError("database unreachable")


class MisspelledHookPlugin:
    @hookimpl
    def register_provider(self, register: Any) -> None:  # missing the trailing "s"
        pass


def test_builtin_plugins_register_through_entry_points(registry: Registry) -> None:
    assert registry.provider("llm", "rules").distribution == "dialplan"
    assert registry.provider("llm", "rules").plugin == "rules"
    assert registry.tool("end_call").plugin == "end_call"
    assert registry.failures == []


def test_extra_plugin_is_listed_with_its_name() -> None:
    registry = load_registry(extra_plugins=[("echo-plugin", EchoLLMPlugin())])
    assert registry.provider("llm", "echo").plugin == "echo-plugin"
    assert "echo" in registry.provider_names("llm")


def test_duplicate_provider_names_both_plugins() -> None:
    with pytest.raises(DuplicateName) as exc:
        load_registry(extra_plugins=[("copycat", SecondRulesPlugin())])
    message = str(exc.value)
    assert "'rules'" in message and "plugin 'rules'" in message and "plugin 'copycat'" in message
    assert "DIALPLAN_DISABLED_PLUGINS=copycat" in message


def test_unknown_provider_lists_registered_ones(registry: Registry) -> None:
    with pytest.raises(UnknownName) as exc:
        registry.provider("llm", "rulez")
    assert "did you mean `rules`?" in str(exc.value)
    assert "registered LLM providers: " in str(exc.value)


def test_a_raising_registration_is_reported_and_others_still_load() -> None:
    registry = load_registry(extra_plugins=[("broken", BrokenRegistrationPlugin())])
    assert [f.plugin for f in registry.failures] == ["broken"]
    assert "database unreachable" in str(registry.failures[0])
    assert registry.tool("end_call")


def test_misspelled_hook_fails_check_pending() -> None:
    with pytest.raises(pluggy.PluginValidationError, match="register_provider"):
        create_plugin_manager(extra_plugins=[("typo", MisspelledHookPlugin())])


def test_disabled_plugins_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert disabled_plugins({"DIALPLAN_DISABLED_PLUGINS": " rules, ,end_call "}) == [
        "rules",
        "end_call",
    ]
    monkeypatch.setenv("DIALPLAN_DISABLED_PLUGINS", "rules")
    registry = load_registry()
    assert "rules" not in registry.provider_names("llm")
    assert registry.plugins.blocked == ["rules"]
    assert registry.tool("end_call")


def test_each_registry_has_its_own_plugin_manager() -> None:
    one, two = load_registry(), load_registry()
    assert one.plugins.manager is not two.plugins.manager
