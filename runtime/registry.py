"""The typed facade over the plugin manager: providers and tools by name.

Registration hooks are called one plugin at a time with a ``register`` callback bound to
that plugin, so every entry knows who registered it and a duplicate names both plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from runtime.errors import DuplicateName, PluginLoadError, UnknownName
from runtime.plugins import LoadedPlugins, create_plugin_manager

ProviderKind = Literal["stt", "llm", "tts", "vad"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("stt", "llm", "tts", "vad")


class NoOptions(BaseModel):
    """Options model for providers and tools that take none."""

    model_config = ConfigDict(extra="forbid")


class RegisterProvider(Protocol):
    def __call__(
        self,
        *,
        kind: ProviderKind,
        name: str,
        factory: Callable[..., Any],
        options: type[BaseModel] = NoOptions,
        description: str = "",
    ) -> None: ...


class RegisterTool(Protocol):
    def __call__(
        self,
        *,
        name: str,
        factory: Callable[..., Any],
        options: type[BaseModel] = NoOptions,
        description: str = "",
        per_call: bool = True,
    ) -> None: ...


@dataclass(frozen=True)
class ProviderEntry:
    kind: ProviderKind
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel]
    plugin: str
    distribution: str
    description: str = ""


@dataclass(frozen=True)
class ToolEntry:
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel]
    plugin: str
    distribution: str
    description: str = ""
    # False: the factory's ToolDefinition follows from the options alone (its handler
    # gets the call when invoked), so it is built once per bot version, with call=None
    per_call: bool = True


@dataclass
class Registry:
    plugins: LoadedPlugins
    providers: dict[tuple[str, str], ProviderEntry] = field(default_factory=dict)
    tools: dict[str, ToolEntry] = field(default_factory=dict)
    failures: list[PluginLoadError] = field(default_factory=list)

    @property
    def hook(self) -> Any:
        return self.plugins.manager.hook

    def provider(self, kind: str, name: str) -> ProviderEntry:
        try:
            return self.providers[(kind, name)]
        except KeyError:
            raise UnknownName(f"{kind.upper()} provider", name, self.provider_names(kind)) from None

    def provider_names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.providers if k == kind)

    def tool(self, name: str) -> ToolEntry:
        try:
            return self.tools[name]
        except KeyError:
            raise UnknownName("tool", name, self.tools) from None

    @classmethod
    def from_plugins(cls, plugins: LoadedPlugins) -> Registry:
        registry = cls(plugins=plugins, failures=list(plugins.failures))
        manager = plugins.manager
        for impl in manager.hook.register_providers.get_hookimpls():
            registry._call_registration(impl, registry._provider_registrar(impl.plugin_name))
        for impl in manager.hook.register_tools.get_hookimpls():
            registry._call_registration(impl, registry._tool_registrar(impl.plugin_name))
        return registry

    def _distribution(self, plugin: str) -> str:
        return self.plugins.distributions.get(plugin, plugin)

    def _call_registration(self, impl: Any, register: Callable[..., None]) -> None:
        try:
            impl.function(register=register)
        except DuplicateName:
            raise
        except Exception as exc:
            self.failures.append(PluginLoadError(impl.plugin_name, exc))

    def _provider_registrar(self, plugin: str) -> RegisterProvider:
        def register(
            *,
            kind: ProviderKind,
            name: str,
            factory: Callable[..., Any],
            options: type[BaseModel] = NoOptions,
            description: str = "",
        ) -> None:
            if kind not in PROVIDER_KINDS:
                raise ValueError(
                    f"plugin {plugin!r}: provider kind must be one of {PROVIDER_KINDS}"
                )
            existing = self.providers.get((kind, name))
            if existing is not None:
                raise DuplicateName(f"{kind.upper()} provider", name, existing.plugin, plugin)
            self.providers[(kind, name)] = ProviderEntry(
                kind, name, factory, options, plugin, self._distribution(plugin), description
            )

        return register

    def _tool_registrar(self, plugin: str) -> RegisterTool:
        def register(
            *,
            name: str,
            factory: Callable[..., Any],
            options: type[BaseModel] = NoOptions,
            description: str = "",
            per_call: bool = True,
        ) -> None:
            existing = self.tools.get(name)
            if existing is not None:
                raise DuplicateName("tool", name, existing.plugin, plugin)
            self.tools[name] = ToolEntry(
                name, factory, options, plugin, self._distribution(plugin), description, per_call
            )

        return register


def load_registry(
    *, extra_plugins: Iterable[tuple[str, object]] = (), entry_points: bool = True
) -> Registry:
    """Load every installed plugin and collect what they register."""
    return Registry.from_plugins(
        create_plugin_manager(entry_points=entry_points, extra_plugins=extra_plugins)
    )
