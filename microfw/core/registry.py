"""The plugin registry: pluggy, entry-point discovery, and name lookup with did-you-mean.

Every plugin, built-in or third-party, arrives the same way: a module listed in the
``microfw`` entry-point group implements ``register_*`` hooks. Loading is lazy: nothing is
imported until a name is first looked up, never at ``import microfw``.

Environment variables:

* ``MICROFW_DISABLE_PLUGIN_AUTOLOAD`` (any non-empty value): load only microfw's own
  entry points, no third-party package.
* ``MICROFW_PLUGINS``: a comma-separated allow-list of distribution names whose entry points
  may load (microfw's own always load); empty, it is ignored, as if unset.
"""

from __future__ import annotations

import contextvars
import difflib
import inspect
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from microfw.core import hookspecs
from microfw.core.fusions import Fusion, LossFusion, Rule
from microfw.core.interfaces import INTERFACES, Plugin
from microfw.core.params import (
    interface_of,
    parameter_hints,
    params_model,
    set_reference_resolver,
)
from microfw.errors import (
    DuplicatePluginError,
    PluginError,
    PluginNotFoundError,
    Problem,
    SpecError,
    short_repr,
)

ENTRY_POINT_GROUP = "microfw"
DISABLE_AUTOLOAD_ENV = "MICROFW_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_ENV = "MICROFW_PLUGINS"
BUILTIN_DISTRIBUTION = "microfw"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Layers and activations share a namespace: both are written in a spec's "layers" list.
# The kinds whose names a new entry of each kind must not clash with (default: its own).
_NAMESPACE = {"layer": ("layer", "activation"), "activation": ("activation", "layer")}


@dataclass(frozen=True)
class Provenance:
    """Where a plugin came from: the distribution (package) and version, and the module."""

    package: str
    version: str | None
    source: str

    def __str__(self) -> str:
        return f"{self.package} {self.version}" if self.version else self.package


@dataclass(frozen=True)
class Entry:
    """One registered plugin class."""

    kind: str
    name: str
    cls: type[Plugin]
    provenance: Provenance


@dataclass(frozen=True)
class FusionEntry:
    """One registered fusion rule and where it came from."""

    rule: Rule
    provenance: Provenance


@dataclass(frozen=True)
class LoadProblem:
    """A plugin package or class that could not be used, and why; the others keep working."""

    source: str
    package: str
    message: str

    def __str__(self) -> str:
        return f"{self.source} (from {self.package}): {self.message}"


class Registry:
    """Holds a pluggy plugin manager and indexes the classes its hooks return by kind and name.

    Args:
        autoload: load third-party entry points. Defaults to true unless
            ``MICROFW_DISABLE_PLUGIN_AUTOLOAD`` is set. microfw's own built-ins always load.
        allow: distribution names allowed to load (default: ``MICROFW_PLUGINS`` if set, else all).
        entry_points: load entry points at all (false gives an empty registry for tests).
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
        entry_points: bool = True,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._provenance: dict[str, Provenance] = {}
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        self._autoload = autoload
        if allow is None and os.environ.get(ALLOW_ENV):
            allow = os.environ[ALLOW_ENV].split(",")
        self._allow = None if allow is None else {_norm(a) for a in allow if a.strip()}
        self._entry_points_pending = entry_points
        self._index: dict[str, dict[str, Entry]] | None = None
        self._fusions: list[FusionEntry] | None = None
        self.problems: list[LoadProblem] = []

    # -- adding plugins ------------------------------------------------------------------

    def add_plugin(self, plugin: object, *, package: str, version: str | None = None) -> None:
        """Register a plugin object (a module or any object with ``@hookimpl`` functions)."""
        name = f"{package}:{getattr(plugin, '__name__', type(plugin).__name__)}:{id(plugin)}"
        self._pm.register(plugin, name=name)
        self._provenance[name] = Provenance(package, version, _source(plugin))
        self._index = self._fusions = None

    def register(self, cls: type[Plugin], *, package: str | None = None) -> type[Plugin]:
        """Register one class defined in-process (e.g. in a script); returns it unchanged.

        It goes through pluggy like any package: a tiny plugin object implementing the hook of
        the class's kind. Raises :class:`PluginError` if the class is not a usable plugin
        (abstract, no valid ``name``...) and :class:`DuplicatePluginError` if its name is taken.
        """
        kind = kind_of(cls)
        reason = _invalid_class(cls, INTERFACES[kind])
        if reason:
            raise PluginError(f"cannot register {_qualname(cls)}: {reason}")
        lookalike = _lookalike(self._ensure_index(), kind, cls.name)
        if lookalike:
            raise PluginError(f"cannot register {_qualname(cls)}: {lookalike}")
        hook = hookspecs.HOOKS[kind]
        plugin = _InProcessPlugin(hook, cls)
        module = getattr(cls, "__module__", "__main__")
        self.add_plugin(plugin, package=package or module, version=None)
        try:
            self._ensure_index()
        except PluginError:
            self._pm.unregister(plugin)
            self._index = None
            raise
        return cls

    # -- loading -------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        if not self._entry_points_pending:
            return
        self._entry_points_pending = False
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            package = dist.name if dist is not None else ep.module
            version = dist.version if dist is not None else None
            builtin = _norm(package) == BUILTIN_DISTRIBUTION
            if not builtin and (not self._autoload or not self._allowed(package)):
                continue
            if any(p.source == ep.value for p in self._provenance.values()):
                continue  # the same entry point seen twice (e.g. duplicate dist-info on the path)
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # a broken package must not take the others down
                self._problem(ep.value, package, f"failed to import: {type(exc).__name__}: {exc}")
                continue
            try:  # pluggy checks the hooks' signatures here
                self.add_plugin(module, package=package, version=version)
            except (Exception, SystemExit) as exc:
                self._discard(module)
                reason = f"cannot be registered: {type(exc).__name__}: {_safe_str(exc)}"
                self._problem(ep.value, package, reason)

    def _discard(self, plugin: object) -> None:
        """Forget a plugin whose registration failed (older pluggy may keep part of it)."""
        for name, prov_plugin in list(self._pm.list_name_plugin()):
            if prov_plugin is plugin:
                self._pm.unregister(name=name)
                self._provenance.pop(name, None)
        self._index = None

    def _allowed(self, package: str) -> bool:
        return self._allow is None or _norm(package) in self._allow

    def _problem(self, source: str, package: str, message: str) -> None:
        problem = LoadProblem(source, package, message)
        self.problems.append(problem)
        warnings.warn(f"microfw plugin skipped: {problem}", RuntimeWarning, stacklevel=4)

    def _ensure_index(self) -> dict[str, dict[str, Entry]]:
        self._load_entry_points()
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[str, dict[str, Entry]]:
        index: dict[str, dict[str, Entry]] = {kind: {} for kind in INTERFACES}
        for kind, hook_name in hookspecs.HOOKS.items():
            interface = INTERFACES[kind]
            impls = getattr(self._pm.hook, hook_name).get_hookimpls()
            # microfw's own first: a look-alike of a built-in name is the one refused.
            for impl in sorted(impls, key=lambda i: not self._is_builtin(i.plugin_name)):
                prov, classes = self._call_hook(impl, hook_name)
                for cls in classes or ():
                    name: object = None
                    try:  # a class whose `name` or `__class__` raises is that package's problem
                        reason = _invalid_class(cls, interface)
                        name = None if reason else cls.name  # read once, used from here on
                        if isinstance(name, str):
                            reason = _lookalike(index, kind, name)
                        else:
                            reason = reason or f"its `name` changed to {_safe_repr(name)}"
                    except Exception as exc:
                        what = f"{type(exc).__name__}: {_safe_str(exc)}"
                        reason = f"a returned object cannot be inspected ({what})"
                    if reason or not isinstance(name, str):
                        self._problem(prov.source, prov.package, f"{hook_name}(): {reason}")
                        continue
                    self._add_entry(index, Entry(kind, name, cls, prov))
        return index

    def _call_hook(self, impl: Any, hook_name: str) -> tuple[Provenance, list[Any] | None]:
        """One package's implementation of a ``register_*`` hook: its provenance and what it
        returned, or None if it raised (reported in :attr:`problems`; a hook may raise
        anything, even SystemExit: only its package is lost)."""
        prov = self._provenance.get(impl.plugin_name) or Provenance(
            impl.plugin_name, None, impl.plugin_name
        )
        try:
            return prov, list(impl.function())
        except (Exception, SystemExit) as exc:
            self._problem(prov.source, prov.package, f"{hook_name}() raised {_safe_repr(exc)}")
            return prov, None

    def _is_builtin(self, plugin_name: str) -> bool:
        prov = self._provenance.get(plugin_name)
        return prov is not None and _norm(prov.package) == BUILTIN_DISTRIBUTION

    def _add_entry(self, index: dict[str, dict[str, Entry]], entry: Entry) -> None:
        for kind in _NAMESPACE.get(entry.kind, (entry.kind,)):
            other = index[kind].get(entry.name)
            if other is None or other.cls is entry.cls:
                continue
            raise DuplicatePluginError(
                f"{entry.kind} name {entry.name!r} is registered twice: "
                f"{_qualname(other.cls)} from {other.provenance} and "
                f"{_qualname(entry.cls)} from {entry.provenance}; plugin names must be unique "
                f"per kind (uninstall one package or register the class under a new name)"
            )
        index[entry.kind][entry.name] = entry

    # -- lookup --------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind``, sorted."""
        return sorted(self._ensure_index()[_check_kind(kind)])

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every registered plugin (of ``kind``), sorted by kind and name."""
        index = self._ensure_index()
        kinds = [_check_kind(kind)] if kind else list(index)
        return [index[k][n] for k in kinds for n in sorted(index[k])]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``name``; :class:`PluginNotFoundError` with a did-you-mean if unknown."""
        table = self._ensure_index()[_check_kind(kind)]
        if isinstance(name, str) and name in table:
            return table[name]
        raise PluginNotFoundError(unknown_name_message(kind, name, sorted(table)))

    def entry_of(self, kind: str, name: str, cls: type) -> Entry | None:
        """The entry registering exactly ``cls`` as ``name`` within ``kind``, or None (the
        class is not registered, or another class holds the name)."""
        table = self._ensure_index()[_check_kind(kind)]
        entry = table.get(name) if isinstance(name, str) else None
        return entry if entry is not None and entry.cls is cls else None

    def origin(self, plugin: Plugin) -> str:
        """Where ``plugin``'s class comes from, for messages: ``package <name> <version>``,
        or ``module <module> (not registered)``."""
        entry = self.entry_of(plugin.kind, plugin.name, type(plugin))
        if entry is not None:
            return f"package {entry.provenance}"
        return f"module {type(plugin).__module__} (not registered)"

    def get(self, kind: str, name: str) -> type[Plugin]:
        """The class registered as ``name`` within ``kind``."""
        return self.entry(kind, name).cls

    def has(self, kind: str, name: str) -> bool:
        """Whether ``name`` is registered within ``kind``."""
        return name in self._ensure_index()[_check_kind(kind)]

    def fusions(self) -> list[FusionEntry]:
        """Every registered fusion rule (see :mod:`microfw.core.fusions`), with its package.

        A hook that raises or returns something other than rules is reported in
        :attr:`problems` and skipped; two rules for the same pattern raise
        :class:`DuplicatePluginError`.
        """
        self._ensure_index()
        if self._fusions is None:
            self._fusions = self._collect_fusions()
        return self._fusions

    def _collect_fusions(self) -> list[FusionEntry]:
        found: dict[tuple[object, ...], FusionEntry] = {}
        hook = getattr(self._pm.hook, hookspecs.FUSION_HOOK)
        for impl in hook.get_hookimpls():
            prov, rules = self._call_hook(impl, hookspecs.FUSION_HOOK)
            for rule in rules or ():
                if isinstance(rule, Fusion):
                    key: tuple[object, ...] = ("fusion", *rule.pattern)
                elif isinstance(rule, LossFusion):
                    key = ("loss", rule.last, rule.loss)
                else:
                    message = (
                        f"register_fusions(): {_safe_repr(rule)} is not a Fusion or LossFusion"
                    )
                    self._problem(prov.source, prov.package, message)
                    continue
                other = found.get(key)
                if other is not None:
                    raise DuplicatePluginError(
                        f"fusion rule {rule.label()!r} is registered twice: by "
                        f"{other.provenance} and by {prov} (one pattern, one rule)"
                    )
                found[key] = FusionEntry(rule, prov)
        return list(found.values())

    def create(self, kind: str, ref: Any) -> Plugin:
        """Build a plugin from a reference: a name, ``{"type": name, **params}`` or an instance.

        Raises :class:`SpecError` whose problems carry paths relative to the reference.
        """
        interface = INTERFACES[_check_kind(kind)]
        if isinstance(ref, interface):
            return ref
        if isinstance(ref, str):
            name, params, type_path = ref, {}, ""
        elif isinstance(ref, dict):
            params = dict(ref)
            name, type_path = params.pop("type", None), "type"
            if name is None:
                raise SpecError([Problem("type", f"missing: the {kind} name", ref, True)])
        else:
            raise SpecError(
                [Problem("", f"expected a {kind} name or {{'type': name, ...}}", ref, True)]
            )
        if not isinstance(name, str) or not self.has(kind, name):
            message = unknown_name_message(kind, name, self.names(kind))
            raise SpecError([Problem(type_path, message)])
        cls = self.get(kind, name)
        # Keys outside the schema never reach the constructor: a non-string key or one such
        # as "self" would fail there as a TypeError instead of a listed problem.
        declared = params_model(cls).model_fields  # built once per class
        unknown = [k for k in params if not (isinstance(k, str) and k in declared)]
        problems = [
            Problem(_key_path(k), "unknown parameter", params.pop(k), True) for k in unknown
        ]
        self._resolve_nested(cls, params)
        with using(self):
            try:
                plugin = cls(**params)
            except SpecError as exc:
                raise SpecError([*exc.problems, *problems]) from None
        if problems:
            raise SpecError(problems)
        return plugin

    def _resolve_nested(self, cls: type[Plugin], params: dict[str, Any]) -> None:
        """Turn the nested plugin references among ``params`` (given, or the class's named
        defaults such as ``ref("xavier")``) into instances made by this registry, in place, so
        that the constructor receives objects. A reference that cannot be made is left as it
        is: the constructor's validation reports it under its parameter's path."""
        for name, hint in parameter_hints(cls).items():
            interface = interface_of(hint)
            if interface is None:
                continue
            value = params[name] if name in params else getattr(cls, name, None)
            if value is None or isinstance(value, interface):
                continue
            with suppress(SpecError):
                params[name] = self.create(interface.kind, value)  # type: ignore[attr-defined]


class _InProcessPlugin:
    """A pluggy plugin object that registers one class defined in a script."""

    def __init__(self, hook_name: str, cls: type[Plugin]) -> None:
        self.__name__ = f"{cls.__module__}.{cls.__qualname__}"

        def register() -> list[type[Plugin]]:
            return [cls]

        setattr(self, hook_name, hookspecs.hookimpl(register))


def kind_of(cls: type) -> str:
    """The plugin kind of a class, from the interface it subclasses."""
    if isinstance(cls, type):
        for kind, interface in INTERFACES.items():
            if issubclass(cls, interface):
                return kind
    kinds = ", ".join(i.__name__ for i in INTERFACES.values())
    raise PluginError(f"{cls!r} is not a plugin class: it must subclass one of {kinds}")


def unknown_name_message(kind: str, name: object, available: list[str]) -> str:
    """``unknown activation 'rleu'; did you mean 'relu'? available: ...``."""
    shown = short_repr(name)
    key = name if isinstance(name, str) else shown
    # Names are short: a long string cannot be a typo of one (and difflib is quadratic).
    close = difflib.get_close_matches(key, available, n=1, cutoff=0.6) if len(key) < 100 else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {shown}{hint} (available: {', '.join(available) or 'none'})"


def _invalid_class(cls: object, interface: type) -> str | None:
    if isinstance(cls, interface):
        return f"{_safe_repr(cls)} is an instance; return the class {_qualname(type(cls))} itself"
    if not isinstance(cls, type) or not issubclass(cls, interface):
        return f"{_safe_repr(cls)} does not subclass microfw.{interface.__name__}"
    name = cls.__dict__.get("name", getattr(cls, "name", None))
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return f"{_qualname(cls)} has no valid `name` (got {name!r})"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        return f"{_qualname(cls)} is abstract: implement {missing}"
    try:
        parameter_hints(cls)
    except Exception as exc:  # e.g. an annotation naming something never imported
        return f"{_qualname(cls)} has parameter annotations that cannot be resolved: {exc!r}"
    return None


_CONFUSABLE = str.maketrans({"i": "l", "1": "l", "|": "l", "0": "o"})


def skeleton(name: str) -> str:
    """What a name looks like: case, ``-``/``_``/``.`` and look-alike characters (I l 1,
    O 0) ignored. Two different names with one skeleton are look-alikes (``reIu``,
    ``ReLU`` and ``relu.`` of ``relu``). Names are ASCII (``[A-Za-z_][A-Za-z0-9_.-]*``), so
    no other script's letters can pass for Latin ones."""
    return re.sub(r"[-_.]", "", name.casefold()).translate(_CONFUSABLE)


def _lookalike(index: dict[str, dict[str, Entry]], kind: str, name: str) -> str | None:
    """Why ``name`` is refused as a look-alike of a name already in ``index``, or None."""
    shape = skeleton(name)
    for other_kind in _NAMESPACE.get(kind, (kind,)):
        for other in index[other_kind].values():
            if other.name != name and skeleton(other.name) == shape:
                return (
                    f"name {name!r} looks like the {other_kind} {other.name!r} from "
                    f"{other.provenance} (names differing only in case, '-', '_', '.' or "
                    "look-alike characters are refused: register a distinct name)"
                )
    return None


def _safe_repr(value: object) -> str:
    """``short_repr``, even of an object whose ``__repr__`` raises."""
    try:
        return short_repr(value)
    except Exception:
        return f"<object whose repr raises, at {id(value):#x}>"


def _safe_str(exc: BaseException) -> str:
    """``str(exc)`` on one line, even if it raises."""
    try:
        return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    except Exception:
        return "<str() raised>"


def _key_path(key: object) -> str:
    return key if isinstance(key, str) else f"[{short_repr(key)}]"


def _check_kind(kind: str) -> str:
    if kind not in INTERFACES:
        raise ValueError(f"unknown plugin kind {kind!r} (kinds: {', '.join(INTERFACES)})")
    return kind


def _qualname(cls: type) -> str:
    try:
        return f"{cls.__module__}.{cls.__qualname__}"
    except Exception:  # a hostile metaclass
        return _safe_repr(cls)


def _source(plugin: object) -> str:
    return str(getattr(plugin, "__name__", type(plugin).__qualname__))


def _norm(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package.strip()).lower()


# -- the registry in use -----------------------------------------------------------------
# Created on first use (never at import) so that ``@microfw.register`` in a script and
# ``microfw.build(spec)`` meet in one place; tests and embedders pass their own Registry.

_default: Registry | None = None
_current: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "microfw_registry", default=None
)


def default_registry() -> Registry:
    """The process-wide registry, created (not loaded) on first call."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def current_registry() -> Registry:
    """The registry of the enclosing :func:`using` block, else the default one."""
    return _current.get() or default_registry()


@contextmanager
def using(registry: Registry) -> Iterator[Registry]:
    """Resolve nested plugin references through ``registry`` inside the block."""
    token = _current.set(registry)
    try:
        yield registry
    finally:
        _current.reset(token)


def _resolve_reference(kind: str, ref: Any) -> Plugin:
    """A nested plugin reference resolved through the registry in use."""
    return current_registry().create(kind, ref)


set_reference_resolver(_resolve_reference)


def register(cls: type[Plugin]) -> type[Plugin]:
    """Class decorator: register a plugin defined in a script, usable by name right after."""
    return current_registry().register(cls)
