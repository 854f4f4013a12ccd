"""Shared fixtures: fan-out over every plugin the real registry holds.

A test that takes ``plugin_entry`` runs once per registered class (built-in or installed
third-party), found through the real entry-point path at collection time: there is no
hand-kept list. ``<kind>_entry`` (e.g. ``loss_entry``) fans out over one kind only.
``site`` is a directory on ``sys.path`` to install fake plugin packages into
(``fake_packages.install``).

Hypothesis runs derandomized by default, so a CI run is reproducible and cannot fail on a
draw the previous run never made; ``MICROFW_HYPOTHESIS_PROFILE=explore`` draws fresh examples
(what to run when hunting bugs, as ``MICROFW_FUZZ_EXAMPLES`` does for the spec fuzz).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import microfw as mf
from microfw.core.interfaces import INTERFACES
from microfw.core.registry import ALLOW_ENV, DISABLE_AUTOLOAD_ENV

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("MICROFW_HYPOTHESIS_PROFILE", "ci"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    kinds = {f"{kind}_entry": kind for kind in INTERFACES}
    for fixture in metafunc.fixturenames:
        if fixture == "plugin_entry":
            entries = mf.Registry().entries()
        elif fixture in kinds:
            entries = mf.Registry().entries(kinds[fixture])
        elif fixture == "fusion_entry":
            rules = mf.Registry().fusions()
            metafunc.parametrize(fixture, rules, ids=[f.rule.label() for f in rules])
            continue
        else:
            continue
        metafunc.parametrize(fixture, entries, ids=[f"{e.kind}:{e.name}" for e in entries])


@pytest.fixture
def registry() -> mf.Registry:
    """A fresh registry loaded through the real entry-point group."""
    return mf.Registry()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for installing packages; their modules are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]
