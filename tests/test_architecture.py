"""Architecture rules: the core knows interfaces, never plugins; every plugin enters one way."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pluggy
import pytest

import microfw
from microfw.core import hookspecs

CORE = Path(microfw.__file__).parent
PLUGIN_PACKAGES = ("microfw_plugins", "plugins")


def _imported_modules(tree: ast.AST) -> list[str]:
    """Modules named by import statements and literal importlib.import_module/__import__ calls."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


def _is_plugin_module(name: str) -> bool:
    return name.split(".")[0] in PLUGIN_PACKAGES


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_plugin(path):
    offending = [m for m in _imported_modules(ast.parse(path.read_text())) if _is_plugin_module(m)]
    assert not offending, f"microfw/{path.relative_to(CORE)} imports {offending}"


def test_the_import_scan_sees_plugin_imports():
    source = "import microfw_plugins.layers\nfrom plugins import x\nimport_module('plugins.a')"
    assert [m for m in _imported_modules(ast.parse(source)) if _is_plugin_module(m)] == [
        "microfw_plugins.layers",
        "plugins",
        "plugins.a",
    ]


def _hookimpl_names(module: object) -> set[str]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    return {n for n in dir(module) if pm.parse_hookimpl_opts(module, n) is not None}


def _builtin_plugin_modules() -> dict[str, object]:
    package = importlib.import_module("microfw_plugins")
    names = [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    return {name: importlib.import_module(name) for name in names}


def _declared_entry_points() -> set[str]:
    eps = metadata.distribution("microfw").entry_points
    return {ep.value for ep in eps if ep.group == "microfw"}


def test_every_plugin_module_is_an_entry_point():
    with_hooks = {n for n, m in _builtin_plugin_modules().items() if _hookimpl_names(m)}
    assert with_hooks, "no built-in plugin module defines a hookimpl"
    missing = with_hooks - _declared_entry_points()
    assert not missing, f"not declared in [project.entry-points.microfw]: {sorted(missing)}"


def test_every_entry_point_implements_hooks():
    for value in _declared_entry_points():
        module = importlib.import_module(value)
        assert _hookimpl_names(module), f"entry point {value} implements no hook"


def _hookspec_names() -> list[str]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    return [n for n in dir(hookspecs) if pm.parse_hookspec_opts(hookspecs, n) is not None]


def test_every_hookspec_is_documented_and_implemented_by_a_builtin():
    specs = _hookspec_names()
    assert set(specs) == {*hookspecs.HOOKS.values(), hookspecs.FUSION_HOOK}
    implemented = set().union(*map(_hookimpl_names, _builtin_plugin_modules().values()))
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
        assert name in implemented, f"no built-in implements {name}"


@pytest.mark.parametrize("module", ["microfw", "microfw.testing"])
def test_importing_the_core_loads_no_plugin(module):
    code = (
        f"import sys, {module}\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('microfw_plugins', 'plugins')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_subpackage_is_packaged() -> None:
    """A subpackage missing from [tool.setuptools] packages works in an editable install and
    is absent from a real one (what CI and users install)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    declared = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(path.parent.relative_to(root).parts)
        for path in (root / "microfw").rglob("__init__.py")
    }
    assert found <= declared, sorted(found - declared)


def _resolves(dotted: str) -> bool:
    """Whether ``microfw.a.b.name`` names a module or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_name_the_docs_and_messages_give_exists() -> None:
    """``microfw.spec.MAX_LAYERS`` in an error message or the README is where a user looks it
    up: each such dotted name (docs, docstrings, messages) must import."""
    root = Path(__file__).resolve().parents[1]  # the checkout (microfw may be installed)
    sources = [root / name for name in ("README.md", "ARCHITECTURE.md", "CHANGELOG.md")]
    sources += [root / "examples" / "README.md", *sorted((root / "microfw").rglob("*.py"))]
    named = set()
    for source in sources:
        named |= set(re.findall(r"\bmicrofw(?:\.[A-Za-z_]\w*)+", source.read_text("utf-8")))
    assert len(named) > 50, sorted(named)  # the scan found the references
    assert [name for name in sorted(named) if not _resolves(name)] == []
