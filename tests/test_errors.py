"""Every exception class lives in ``microfw.errors`` and is exported from ``microfw``; a missing
optional extra is always ``MissingExtraError`` naming the pip command that installs it."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import microfw as mf
from microfw import errors
from microfw._extras import require

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(mf.__file__).parent


def _library_modules() -> list[str]:
    """Every module of the microfw package except ``__main__`` (which runs the command)."""
    found = pkgutil.walk_packages([str(PACKAGE)], prefix="microfw.")
    return ["microfw", *sorted(m.name for m in found if not m.name.endswith("__main__"))]


def _exception_classes() -> dict[str, type[BaseException]]:
    """Exception classes defined anywhere in microfw, by qualified name."""
    classes = {}
    for name in _library_modules():
        with warnings.catch_warnings():  # microfw.interfaces is a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            ours = obj.__module__ == "microfw" or obj.__module__.startswith("microfw.")
            if issubclass(obj, BaseException) and ours:
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def test_every_exception_class_is_defined_in_errors() -> None:
    classes = _exception_classes()
    assert len(classes) >= 10, sorted(classes)  # the scan found the library's exceptions
    elsewhere = [name for name in classes if not name.startswith("microfw.errors.")]
    assert not elsewhere, f"exception classes outside microfw/errors.py: {elsewhere}"


def test_every_exception_class_is_exported_from_microfw() -> None:
    for name, cls in _exception_classes().items():
        assert cls.__name__ in mf.__all__, f"{name} is not in microfw.__all__"
        assert getattr(mf, cls.__name__) is cls, name


def test_every_exception_derives_from_microfw_error() -> None:
    for name, cls in _exception_classes().items():
        assert issubclass(cls, mf.MicrofwError), f"{name} is not a MicrofwError"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("microfw.io", "ModelFileError"),
        ("microfw.train.loop", "TrainingError"),
        ("microfw.data", "DataError"),
        ("microfw.plots", "PlotError"),
    ],
)
def test_exceptions_stay_importable_where_they_were_defined(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_bad_input_errors_are_value_errors() -> None:
    for cls in (mf.SpecError, mf.ModelFileError, mf.DataError):
        assert issubclass(cls, ValueError), cls


# -- missing optional extras ---------------------------------------------------------------


def _optional_dependencies() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _requirement_names(requirements: list[str]) -> set[str]:
    """``["matplotlib>=3.8", "microfw[plot]"]`` -> ``{"matplotlib", "microfw"}``."""
    names = set()
    for requirement in requirements:
        end = min((requirement.find(c) for c in "<>=![; " if c in requirement), default=None)
        names.add(requirement[:end].strip())
    return names


def _tiny_model() -> mf.Sequential:
    return mf.build(
        {
            "spec_version": 1,
            "input_dim": 2,
            "layers": [{"type": "linear", "units": 1, "activation": "sigmoid"}],
            "loss": "bce",
            "seed": 0,
        }
    )


def _plot(tmp_path: Path) -> Any:
    from microfw.plots import plot_history

    return plot_history({"loss": [1.0, 0.5]}, tmp_path / "curve.png")


def _progress_bar(tmp_path: Path) -> Any:
    return mf.ProgressBar()


def _sklearn_bridge(tmp_path: Path) -> Any:
    # Imported anew (the test's monkeypatch puts the module already imported back after).
    sys.modules.pop("microfw.sklearn", None)
    return importlib.import_module("microfw.sklearn")


def _onnx_export(tmp_path: Path) -> Any:
    from microfw.onnx import export

    return export(_tiny_model(), tmp_path / "model.onnx")


EXTRAS: list[tuple[str, str, Callable[[Path], Any], str]] = [
    # (module hidden, extra, what needs it, words of the message)
    ("matplotlib", "plot", _plot, "plotting needs matplotlib"),
    ("tqdm", "progress", _progress_bar, "ProgressBar needs tqdm"),
    ("sklearn", "sklearn", _sklearn_bridge, "the scikit-learn estimators) needs sklearn"),
    ("onnx", "onnx", _onnx_export, "ONNX export needs onnx"),
]


@pytest.mark.parametrize(("package", "extra", "use", "words"), EXTRAS, ids=[e[0] for e in EXTRAS])
def test_a_missing_extra_raises_missing_extra_error_naming_the_pip_command(
    package: str,
    extra: str,
    use: Callable[[Path], Any],
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes an import fail as if the package were not installed; the
    # package's submodules already imported are hidden too, so no cached import slips through.
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)
    if "microfw.sklearn" in sys.modules:  # put back as it was after _sklearn_bridge
        monkeypatch.setitem(sys.modules, "microfw.sklearn", sys.modules["microfw.sklearn"])
    with pytest.raises(mf.MissingExtraError) as caught:
        use(tmp_path)
    error = caught.value
    assert isinstance(error, ImportError) and isinstance(error, mf.MicrofwError)
    message = str(error)
    assert words in message and f"pip install 'microfw[{extra}]'" in message, message
    assert error.extra == extra and error.pip_command == f"pip install 'microfw[{extra}]'"
    assert error.name is not None and error.name.partition(".")[0] == package
    assert not list(tmp_path.iterdir()), "nothing is written when an extra is missing"


@pytest.mark.parametrize(("package", "extra"), [(e[0], e[1]) for e in EXTRAS])
def test_the_extra_named_installs_the_package(package: str, extra: str) -> None:
    extras = _optional_dependencies()
    assert extra in extras, f"pyproject.toml has no extra {extra!r}"
    distribution = {"sklearn": "scikit-learn"}.get(package, package)  # import name -> PyPI's
    assert distribution in _requirement_names(extras[extra]), extras[extra]


def test_a_missing_extra_is_still_caught_as_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"pip install 'microfw\[progress\]'"):
        mf.ProgressBar()


def test_an_installed_package_that_fails_to_import_says_why(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (site / "mf_broken_extra").mkdir()
    (site / "mf_broken_extra" / "__init__.py").write_text(
        "raise ImportError('built for another NumPy')\n"
    )
    with pytest.raises(mf.MissingExtraError) as caught:
        require("mf_broken_extra", "plot", "plotting", hint="or plot elsewhere")
    assert str(caught.value) == (
        "plotting needs mf_broken_extra, which cannot be imported: built for another NumPy: "
        "pip install 'microfw[plot]' (or plot elsewhere)"
    )
    assert isinstance(caught.value.__cause__, ImportError)


def test_a_missing_dependency_of_the_extra_is_not_reported_as_the_extra_missing(
    site: Path,
) -> None:
    (site / "mf_half_installed").mkdir()
    (site / "mf_half_installed" / "__init__.py").write_text("import mf_absent_dependency\n")
    with pytest.raises(mf.MissingExtraError, match="cannot be imported: No module named"):
        require("mf_half_installed", "fast", "speed")


def test_require_returns_the_module() -> None:
    assert require("json", "plot", "anything") is sys.modules["json"]


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_optional_extras_are_imported_only_through_require() -> None:
    """An ``import matplotlib`` (or of any package of an extra) would bypass the one error."""
    optional = set()
    for extra, requirements in _optional_dependencies().items():
        if extra in ("plot", "progress", "fast"):
            optional |= _requirement_names(requirements)
    assert {"matplotlib", "tqdm", "numba"} <= optional
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imported_top_levels(path) & optional)
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders
