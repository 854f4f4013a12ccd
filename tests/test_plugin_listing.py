"""Every built-in plugin appears in the README's table, `microfw plugins` and `microfw schema`,
and has a one-line formula docstring."""

from __future__ import annotations

import json
from pathlib import Path

import microfw as mf
from microfw.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _builtins():
    return [e for e in mf.Registry().entries() if e.provenance.package == "microfw"]


def test_every_builtin_plugin_is_in_the_readme_table():
    table = README[README.index("## Built-in plugins") :]
    table = table[: table.index("\n## ")]
    rows = {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")
    }
    missing = [(e.kind, e.name) for e in _builtins() if f"`{e.name}`" not in rows.get(e.kind, "")]
    assert missing == []


def test_every_builtin_plugin_is_listed_and_in_the_schema(capsys):
    assert main(["plugins"]) == 0
    listed = capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.dumps(json.loads(capsys.readouterr().out))
    for entry in _builtins():
        assert any(line.split()[:1] == [entry.name] for line in listed.splitlines()), entry.name
        assert f'"{entry.name}"' in schema, entry.name
        doc = (entry.cls.__doc__ or "").strip().splitlines()
        assert doc[0], entry.name
        assert len(doc) == 1 or not doc[1].strip(), f"{entry.name}: a one-line formula first"
