"""Plugin discovery through entry points, and calls that know which plugin answered.

Built-in plugins are declared under the same entry-point group as third-party ones;
nothing here special-cases them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import entry_points
from typing import Any, TypeVar

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "realtime.plugins"
DISABLE_ENV = "REALTIME_DISABLE_PLUGINS"
#: The module attribute naming the plugins a plugin needs (as pytest's ``pytest_plugins``).
REQUIRES = "REQUIRES"
#: Hooks the host calls itself, one implementation at a time.
HOST_HOOKS = frozenset(
    name
    for name in dir(hookspecs)
    if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")
)

T = TypeVar("T")


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Let hooks be plain functions or coroutines."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    requires: tuple[str, ...] = ()


class Plugins:
    """A fresh pluggy manager per host: two hosts in one process share nothing."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        #: What each plugin declares in ``REQUIRES``, and everything it needs transitively.
        self.requires: dict[str, tuple[str, ...]] = {}
        self._needs: dict[str, frozenset[str]] = {}

    @classmethod
    def discover(
        cls,
        extra: Iterable[object] = (),
        *,
        load_entrypoints: bool = True,
        disabled: Iterable[str] | None = None,
    ) -> Plugins:
        """Load every entry point of ``realtime.plugins``, then ``extra`` plugin objects.

        Every failure is collected, so one error message names every broken plugin.
        """
        if disabled is None:
            disabled = [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
        blocked = set(disabled)
        plugins = cls()
        errors: list[str] = []
        if load_entrypoints:
            seen: dict[str, str] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in blocked:
                    continue
                dist = ep.dist.name if ep.dist is not None else None
                if ep.name in seen:
                    if seen[ep.name] != ep.value:
                        errors.append(
                            f"plugin name {ep.name!r} is declared twice: {seen[ep.name]} "
                            f"and {ep.value} ({dist})"
                        )
                    continue
                seen[ep.name] = ep.value
                try:
                    obj = ep.load()
                except Exception as exc:
                    errors.append(
                        f"plugin {ep.name!r} ({ep.value}) failed to import: "
                        f"{type(exc).__name__}: {exc}"
                    )
                    continue
                version = ep.dist.version if ep.dist is not None else None
                errors.extend(plugins._register(obj, ep.name, dist, version))
        for obj in extra:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            errors.extend(plugins._register(obj, name, None, None))
        if not errors:
            errors.extend(plugins._check_requirements(blocked))
        if not errors:
            errors.extend(plugins._add_plugin_hookspecs())
        if errors:
            raise PluginError("\n".join(errors))
        return plugins

    def _register(self, obj: object, name: str, dist: str | None, version: str | None) -> list[str]:
        if self.manager.has_plugin(name) or self.manager.is_registered(obj):
            return [f"plugin {name!r} is registered twice"]
        requires = getattr(obj, REQUIRES, ())
        if isinstance(requires, str) or not all(isinstance(r, str) for r in requires):
            return [f"plugin {name!r} is invalid: {REQUIRES} must be a tuple of plugin names"]
        try:
            self.manager.register(obj, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.manager.is_registered(obj):
                self.manager.unregister(obj)
            return [f"plugin {name!r} is invalid: {exc}"]
        for impl in self.manager.get_hookcallers(obj) or ():
            if impl.name not in HOST_HOOKS:
                continue
            for hookimpl in impl.get_hookimpls():
                if hookimpl.plugin is obj and (hookimpl.wrapper or hookimpl.hookwrapper):
                    self.manager.unregister(obj)
                    return [
                        f"plugin {name!r} is invalid: {impl.name} is a wrapper, and the "
                        "host calls its own hooks one implementation at a time (so it can "
                        "name the plugin that fails); wrappers work on plugin-defined hooks"
                    ]
        self._dists[name] = (dist, version)
        self.requires[name] = tuple(requires)
        return []

    def _check_requirements(self, disabled: set[str]) -> list[str]:
        """Refuse a plugin whose requirement is missing, naming both, or a cycle.

        Then remember what each one needs transitively, which orders the hooks.
        """
        errors = []
        for plugin, required in self.requires.items():
            for name in required:
                if name in self.requires:
                    continue
                why = f"disabled by {DISABLE_ENV}" if name in disabled else "not installed"
                errors.append(f"plugin {plugin!r} requires plugin {name!r}, which is {why}")
        if errors:
            return errors

        def needs(plugin: str, path: tuple[str, ...]) -> frozenset[str]:
            if plugin in path:
                cycle = " -> ".join((*path[path.index(plugin) :], plugin))
                raise PluginError(f"plugins require each other in a cycle: {cycle}")
            if plugin not in self._needs:
                found: set[str] = set()
                for name in self.requires[plugin]:
                    found |= {name, *needs(name, (*path, plugin))}
                self._needs[plugin] = frozenset(found)
            return self._needs[plugin]

        try:
            for plugin in self.requires:
                needs(plugin, ())
        except PluginError as exc:
            return [str(exc)]
        return []

    def _in_requirement_order(self, impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
        """``impls`` as given, except that each comes after those its plugin needs."""
        done: set[str] = set()
        ordered: list[pluggy.HookImpl] = []

        def visit(impl: pluggy.HookImpl) -> None:
            if impl.plugin_name in done:
                return
            done.add(impl.plugin_name)
            needed = self._needs.get(impl.plugin_name, frozenset())
            for other in impls:
                if other.plugin_name in needed:
                    visit(other)
            ordered.append(impl)

        for impl in impls:
            visit(impl)
        return ordered

    def _add_plugin_hookspecs(self) -> list[str]:
        """Let plugins declare hooks of their own, then check every implementation.

        Done once every plugin is registered, so a plugin may implement a hook that
        another one declares, whatever their load order.
        """
        errors: list[str] = []
        for plugin, call in self.bound("register_hookspecs"):
            try:
                specs = call()
                if specs is not None:
                    self.manager.add_hookspecs(specs)
            except Exception as exc:
                errors.append(f"plugin {plugin!r} failed in register_hookspecs: {exc}")
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.manager.get_name(exc.plugin) or repr(exc.plugin)
            errors.append(f"plugin {name!r} is invalid: {exc}")
        return errors

    @property
    def hook(self) -> pluggy.HookRelay:
        """Hooks called through pluggy itself: ``firstresult`` and wrappers work here.

        For hooks plugins declare (``register_hookspecs``), e.g. an authorisation hook
        where the first plugin to answer decides.
        """
        return self.manager.hook

    def bound(self, hook: str, **kwargs: Any) -> list[tuple[str, Callable[[], Any]]]:
        """``hook``'s implementations in requirement order, each bound to the arguments it
        asks for.

        A plugin comes after every plugin it requires (``REQUIRES``), transitively;
        otherwise load order, ``tryfirst`` ones first and ``trylast`` ones last.
        """
        impls = sorted(
            getattr(self.manager.hook, hook).get_hookimpls(),
            key=lambda impl: 0 if impl.tryfirst else 2 if impl.trylast else 1,
        )
        return [
            (impl.plugin_name, partial(impl.function, **{n: kwargs[n] for n in impl.argnames}))
            for impl in self._in_requirement_order(impls)
        ]

    def call_each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook`` on every plugin, returning ``(plugin, result)`` for non-``None`` results.

        Unlike ``pm.hook.X()``, this keeps the answering plugin's name so conflicts
        and failures can name it.
        """
        results = []
        for plugin, call in self.bound(hook, **kwargs):
            try:
                result = call()
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}"
                ) from exc
            if result is not None:
                results.append((plugin, result))
        return results

    def info(self) -> list[PluginInfo]:
        infos = []
        for name, obj in self.manager.list_name_plugin():
            dist, version = self._dists.get(name, (None, None))
            hooks = tuple(sorted(impl.name for impl in self.manager.get_hookcallers(obj) or ()))
            module = getattr(obj, "__name__", type(obj).__name__)
            requires = self.requires.get(name, ())
            infos.append(PluginInfo(name, module, dist, version, hooks, requires))
        return infos
